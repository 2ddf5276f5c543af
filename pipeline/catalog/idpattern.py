"""The id patterns of loader arguments and `parent=` values, matched without backtracking.

`sourcefacts` writes a pattern as regular-expression text of one small shape: escaped literal characters
(`re.escape`), wildcards (`.*`, or `.*?` in a `parent=` slot pattern) and at most one slot group
`(?P<parent>[A-Za-z0-9_]+)`. A backtracking engine takes exponential time on such a pattern when it has many
wildcards and the id nearly matches (issue 35: twelve `{x}` of an f-string against an id of 120 `x` never end).
Here the literal parts are matched in order instead: a full match is found (or refused) in time linear in the id
and the pattern (the literal parts are found left to right with `str.find`; a placed part never has to move).

The answers are those of `re.fullmatch(pattern, text, re.DOTALL)`, including which text the slot group takes
(the leftmost start, then the longest run, as the lazy wildcards and the greedy group of the regular expression
choose)."""

from __future__ import annotations

from functools import lru_cache

class _Token:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


WILD = _Token("WILD")  # a wildcard
SLOT = _Token("SLOT")  # the slot group
SLOT_TEXT = "(?P<parent>[A-Za-z0-9_]+)"
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

@lru_cache(maxsize=4096)
def tokens(pattern: str) -> tuple:
    """The pattern as literal strings, WILD and SLOT, adjacent literals joined and wildcards merged."""
    out: list = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            out.append("".join(literal))
            literal.clear()

    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            literal.append(pattern[i + 1])
            i += 2
        elif c == "." and pattern.startswith(".*", i):
            flush()
            if not out or out[-1] is not WILD:
                out.append(WILD)
            i += 3 if pattern.startswith(".*?", i) else 2
        elif c == "(" and pattern.startswith(SLOT_TEXT, i):
            flush()
            out.append(SLOT)
            i += len(SLOT_TEXT)
        else:
            literal.append(c)
            i += 1
    flush()
    return tuple(out)


def literal(pattern: str) -> str | None:
    """The one text a pattern stands for, or None when it has a wildcard or a slot."""
    parts = tokens(pattern)
    if any(not isinstance(p, str) for p in parts):
        return None
    return "".join(parts)


def has_wildcard(pattern: str) -> bool:
    return literal(pattern) is None


def fullmatch(pattern: str, text: str) -> bool:
    """Whether `text` as a whole matches a pattern without a slot: the first literal part is a prefix, the last a
    suffix, and the others are found left to right in between (a part placed leftmost never has to move)."""
    segments = _segments(pattern)
    if segments is None:
        return slot(pattern, text) is not None
    first, last = segments[0], segments[-1]
    if len(segments) == 1:
        return text == first
    if not text.startswith(first):
        return False
    pos, limit = len(first), len(text) - len(last)
    for middle in segments[1:-1]:
        found = text.find(middle, pos, limit)
        if found < 0:
            return False
        pos = found + len(middle)
    return pos <= limit and text.endswith(last)


@lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[str, ...] | None:
    """The literal parts between wildcards (one part: no wildcard), or None for a slot pattern."""
    parts = tokens(pattern)
    if any(p is SLOT for p in parts):
        return None
    segments, current = [], ""
    for part in parts:
        if part is WILD:
            segments.append(current)
            current = ""
        else:
            current += part
    segments.append(current)
    return tuple(segments)


def slot(pattern: str, text: str) -> str | None:
    """The text the slot group takes when `text` as a whole matches a slot pattern, else None.

    Before the slot: every end of a match of the prefix (one pass per token over the text). After it: every start
    of a match of the suffix (the same, from the right). The slot is the first prefix end from which a run of word
    characters reaches a suffix start, taking the longest such run."""
    parts = tokens(pattern)
    if sum(p is SLOT for p in parts) != 1:
        return None
    k = next(i for i, p in enumerate(parts) if p is SLOT)
    ends = _prefix_ends(parts[:k], text)
    starts = _prefix_ends(tuple(p[::-1] if isinstance(p, str) else p for p in reversed(parts[k + 1:])),
                          text[::-1])
    suffix_starts = {len(text) - e for e in starts}
    for p in sorted(ends):
        run = p
        while run < len(text) and text[run] in _WORD:
            run += 1
        for q in range(run, p, -1):
            if q in suffix_starts:
                return text[p:q]
    return None


def _prefix_ends(parts: tuple, text: str) -> set[int]:
    """Every position at which a match of `parts` starting at 0 can end."""
    positions = {0}
    for part in parts:
        if not positions:
            break
        if part is WILD:
            positions = set(range(min(positions), len(text) + 1))
        else:
            positions = {p + len(part) for p in positions if text.startswith(part, p)}
    return positions
