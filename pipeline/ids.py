"""What a plugin folder name and a registered identifier may look like.

Identifiers come from strangers and end up in file names, job scripts, SQL and
email, so we accept a conservative alphabet and refuse the rest with a reason.
"""

from __future__ import annotations

import re

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
PLUGIN_FOLDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def identifier_problem(identifier: str) -> str | None:
    """Why `identifier` is not acceptable as a model or benchmark id, or None when it is."""
    if not isinstance(identifier, str):
        return "identifier is not a string"
    if not identifier:
        return "identifier is empty"
    if len(identifier) > 200:
        return f"identifier is {len(identifier)} characters long (200 at most)"
    if ".." in identifier:
        return "identifier contains '..'"
    if not IDENTIFIER.match(identifier):
        bad = sorted({c for c in identifier if not re.match(r"[A-Za-z0-9._+-]", c)})
        shown = ", ".join(repr(c) for c in bad[:5]) or "its first character"
        return f"identifier has characters outside letters, digits and . _ + - ({shown})"
    return None


def folder_problem(name: str) -> str | None:
    """Why a plugin folder name is not importable Python, or None when it is fine."""
    if not PLUGIN_FOLDER.match(name):
        return "plugin folder name must be a Python identifier (letters, digits, _)"
    return None
