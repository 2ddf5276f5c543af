"""The `--name value` options the worker passes to a pair's two processes, read without argparse: argparse (and
what it imports) is a fifth of the start-up of a process that every pair starts twice. Only our own worker writes
these command lines, so anything unexpected is an error, never a guess."""

from __future__ import annotations

from typing import Callable


class FlagError(ValueError):
    """A command line the worker did not write: an unknown, missing, repeated or ill-typed option."""


def read_flags(argv: list[str], wanted: dict[str, Callable[[str], object]],
               defaults: dict[str, object] | None = None) -> dict[str, object]:
    """`--name value` pairs of `argv` typed by `wanted` (name -> type), with `defaults` for those that may be
    left out; keys come back as Python names (`--report-fd` -> `report_fd`)."""
    if len(argv) % 2:
        raise FlagError(f"options come in pairs: {' '.join(argv)[:200]}")
    found: dict[str, object] = {}
    for name, text in zip(argv[::2], argv[1::2]):
        if name not in wanted:
            raise FlagError(f"unknown option {name[:80]}")
        key = name[2:].replace("-", "_")
        if key in found:
            raise FlagError(f"option {name} given twice")
        try:
            found[key] = wanted[name](text)
        except ValueError:
            raise FlagError(f"option {name} has a bad value {text[:80]!r}") from None
    for key, value in (defaults or {}).items():
        found.setdefault(key, value)
    missing = [n for n in wanted if n[2:].replace("-", "_") not in found]
    if missing:
        raise FlagError(f"missing option(s): {', '.join(missing)}")
    return found
