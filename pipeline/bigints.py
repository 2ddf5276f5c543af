"""Integers read from submitted text are bounded: one of more than MAX_INT_DIGITS decimal digits refuses its file.

Python refuses to print an integer of more than 4300 decimal digits (`str`, `repr`, `json.dumps` raise ValueError;
`sys.set_int_max_str_digits` guards against the quadratic conversion and must stay on). A hexadecimal literal
(Python, YAML or TOML) is read without that limit, so a plugin file could hold an integer that breaks whatever prints
it later: the facts cache, a message, a walk of `parent=`. No real value comes near 100 digits (a memory size in
bytes has 12 or so, a GPU count or a version 1 or 2), and an integer under 10**100 also converts to a float
(at most about 1.8e308) when sizes are compared. So every integer a reader takes from a plugin's file (ast constants,
YAML scalars, TOML values) is checked here, and a file holding a larger one is refused by name with REASON.

Standard library only: the parse workers (`pipeline.catalog.parseworker`, run with `-S`) import it."""

from __future__ import annotations

import ast
from typing import Any

MAX_INT_DIGITS = 100
LIMIT = 10 ** MAX_INT_DIGITS  # the smallest magnitude refused
MAX_INT_TEXT = 1000  # characters of one YAML integer's text converted at all (longer is refused unread)
REASON = f"an integer of more than {MAX_INT_DIGITS} digits; not read"
# A literal of magnitude >= 10**100 has at least 84 hexadecimal digits (16**83 < 10**100), 101 decimal, 111 octal or
# 333 binary ones, with any underscores between them: a run of at least 84 of these characters. A source without
# such a run holds no such literal and needs no walk of its tree.
_RUN = 84
_TABLE = bytes(ord("1") if chr(i) in "0123456789abcdefABCDEF_" else ord("0") for i in range(256))


class TooLarge(ValueError):
    """An integer over the bound: the file holding it is refused with REASON."""

    def __init__(self) -> None:
        super().__init__(REASON)


def too_large(value: Any) -> bool:
    """Whether `value` is an integer (not a bool) of more than MAX_INT_DIGITS digits. Cheap on any size."""
    return isinstance(value, int) and not isinstance(value, bool) and (value >= LIMIT or value <= -LIMIT)


def shown(value: Any) -> str:
    """`repr(value)` for a message, or `<integer of more than 100 digits>` where repr would fail or swell."""
    return f"<integer of more than {MAX_INT_DIGITS} digits>" if too_large(value) else repr(value)


def python_reason(source: bytes | str, tree: ast.AST) -> str | None:
    """REASON when the parsed `source` holds an integer literal over the bound (a constant of any nesting), else
    None; the tree is walked only when the source has a run of digits long enough to hold one."""
    data = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
    if b"1" * _RUN not in data.translate(_TABLE):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and too_large(node.value):
            return REASON
    return None


def data_reason(value: Any) -> str | None:
    """REASON when parsed data (dicts, lists, scalars: a TOML or JSON document) holds an integer over the bound."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif too_large(item):
            return REASON
    return None
