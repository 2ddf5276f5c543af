"""A linear pre-check of a submitted TOML file before `tomllib` reads it (issue 35 round 2).

`tomllib` spends time quadratic in the number of parts of one dotted key (`a.a.a...a = 1`, a `[a.a...a]` table or
`[[a.a...a]]` array header, a key in an inline table): 50,000 parts (100 kB) take 77 s. A key of at most
MAX_KEY_PARTS parts costs it a bounded amount per character, so the whole file reads in linear time. Real
`pyproject.toml` keys have a few parts (`tool.setuptools.packages.find`: 4).

The scan skips strings (basic, literal, and their multi-line forms) and comments as TOML defines them, and counts
the dots outside them in each stretch between `=`, `,`, brackets, braces and line ends: every dotted key lies in
one such stretch. It never sees fewer dots than a key has (a float or a time has one)."""

from __future__ import annotations

import re

MAX_KEY_PARTS = 64

_DELIMITERS = frozenset("=,[]{}\n")
# Strings from their opening quote, each character taken by one alternative only (no backtracking). A string that
# does not end is where tomllib stops with an error: the scan stops there too.
_ML_BASIC = re.compile(r'"""(?:[^\\"]|\\.|"(?!""))*"""(?:"{1,2}(?!"))?', re.S)
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
_ML_LITERAL = "'''"


def _string_end(text: str, i: int) -> int:
    """Where the string that opens at `i` ends (len(text) when it does not)."""
    if text.startswith(_ML_LITERAL, i):
        end = text.find(_ML_LITERAL, i + 3)
        if end < 0:
            return len(text)
        end += 3
        extra = 0
        while extra < 2 and text.startswith("'", end + extra):
            extra += 1
        return end + extra
    pattern = _ML_BASIC if text.startswith('"""', i) else _BASIC if text[i] == '"' else _LITERAL
    match = pattern.match(text, i)
    return match.end() if match else len(text)


def too_many_key_parts(text: str) -> str | None:
    """Why `text` is not handed to tomllib (a key of more than MAX_KEY_PARTS dotted parts), or None."""
    dots, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            i = _string_end(text, i)
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == ".":
            dots += 1
            if dots >= MAX_KEY_PARTS:
                return f"a key of more than {MAX_KEY_PARTS} dotted parts; not read"
        elif c in _DELIMITERS:
            dots = 0
        i += 1
    return None
