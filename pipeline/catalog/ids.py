"""What a plugin folder name and a registered identifier may look like.

Brain-Score accepts any folder `importlib.import_module` can load and any string as a
registry key: real plugins are called `antialiased-r50` or `20260408_2033_stl10`, and
register `convnext_base:clip_laiona_augreg_ft_in1k_384` or `alexnet_z_axis_iteration=1`.
So we refuse only what cannot be made safe: empty names, path separators, `.`/`..`,
a leading `-` (read as an option), NUL, control characters and line breaks. Everything
else is accepted, and every place a name reaches (shell, Slurm, SQL, file names, HTML,
email) quotes, escapes or hashes it: nothing downstream relies on a narrow alphabet.
"""

from __future__ import annotations

import unicodedata

MAX_IDENTIFIER = 200  # the database column (Brain-Score's longest real id is 65)
MAX_FOLDER = 100  # the database column


def _control_characters(text: str) -> list[str]:
    """Characters that would break a line, a terminal or a log: C0/C1 controls, DEL, line/paragraph separators."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in "\u2028\u2029\x7f"]


def _name_problem(text: object, what: str, limit: int) -> str | None:
    if not isinstance(text, str):
        return f"{what} is not a string"
    if not text or not text.strip():
        return f"{what} is empty"
    if len(text) > limit:
        return f"{what} is {len(text)} characters long ({limit} at most)"
    bad = _control_characters(text)
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in sorted(set(bad))[:5])
        return f"{what} contains control characters or line breaks ({shown})"
    if text.startswith("-"):
        return f"{what} starts with '-' (it would read as an option)"
    return None


def identifier_problem(identifier: object) -> str | None:
    """Why `identifier` cannot be used as a model or benchmark id, or None when it can."""
    problem = _name_problem(identifier, "identifier", MAX_IDENTIFIER)
    if problem:
        return problem
    assert isinstance(identifier, str)
    if identifier in (".", ".."):
        return f"identifier {identifier!r} is a path component"
    if "/" in identifier or "\\" in identifier:
        return "identifier contains a path separator ('/' or '\\')"
    return None


def folder_problem(name: str) -> str | None:
    """Why a plugin folder name cannot be used, or None when it can (hyphens, leading digits, '=' are fine)."""
    problem = _name_problem(name, "plugin folder name", MAX_FOLDER)
    if problem:
        return problem
    if name in (".", ".."):
        return f"plugin folder name {name!r} is a path component"
    if "/" in name or "\\" in name:
        return "plugin folder name contains a path separator"
    if "." in name:
        # `importlib.import_module('root.models.a.b')` would look for folder `a`, then `b`:
        # Brain-Score cannot import such a plugin either.
        return "plugin folder name contains '.', which Python's import system reads as a sub-package"
    return None
