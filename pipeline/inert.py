"""Text that came from a plugin, a submitter or git, made inert for display: every character that could drive a
terminal, reorder a line or hide itself is shown as its escape (`\\x1b`, `\\u202e`), never sent as it is.

One function for every place text is shown: the consoles (pipeline/console.py: tables, status lines, errors),
the coordinator's log lines, emails (notify/compose.py: subject, text and HTML parts) and the HTML leaderboard
(pipeline/leaderboard/views.py). What is stored (database, spool, logs on disk, JSON output) stays as it was:
escaping happens on display only. Standard library only, importing nothing of ours, so any room may use it.
"""

from __future__ import annotations

import re

# Unicode categories Cc (C0 and C1 controls, DEL), Cf (format: soft hyphen, bidirectional marks, embeddings,
# overrides and isolates U+202A-202E and U+2066-2069, zero-width characters, word joiners, BOM, interlinear
# annotations, tag characters U+E0000-E007F), Cs (lone surrogates, from undecodable bytes) and Zl/Zp (line
# and paragraph separators), as of Unicode 15. tests/test_units_inert.py checks the set against `unicodedata`.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]")
# The same without newline and tab: multi-line text (a log tail, an email body) keeps its lines.
_UNSAFE_IN_LINES = re.compile(_UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f", 1))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def inert(text: str, *, lines: bool = True) -> str:
    """`text` with every control, format and separator character escaped; `lines` keeps newlines and tabs
    (False: one line, a header or a table cell that must not break)."""
    pattern = _UNSAFE_IN_LINES if lines else _UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def inert_value(value: object) -> object:
    """For template engines' `finalize`: strings made inert (a Markup string stays Markup, so an already escaped
    value is not escaped twice), anything else as it is."""
    if not isinstance(value, str):
        return value
    shown = inert(value)
    return value if shown is value else type(value)(shown) if type(value) is not str else shown
