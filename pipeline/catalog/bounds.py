"""How much of a submitted file the coordinator reads: the caps that keep every static read linear (issue 35).

The whole repository is read on every change, so one file that made reading slow or large would stall every later
build. Each file is read once per blob (the facts cache), within these caps; a file over one is refused by name
with its reason (an error on its plugin, a warning when the change is elsewhere) and the rest is read as usual.
The caps sit far above what Brain-Score's repositories hold (vision: largest Python file 207 kB, largest
metadata.yml 49 kB, largest loader argument a few dozen characters)."""

from __future__ import annotations

MAX_PYTHON_BYTES = 2_000_000  # a plugin's .py file (ast of 2 MB is about 100 MB for the moment it is read)
MAX_TEXT_BYTES = 1_000_000  # requirements.txt, setup.py, environment.yml, metadata.yml, pyproject.toml
MAX_PATTERN_CHARS = 10_000  # one id pattern of a loader argument or parent= (an id is 200 characters at most)
MAX_FACT_CHARS = 2_000_000  # all patterns and texts one file's facts hold
MAX_RESOLUTION_STEPS = 200_000  # steps spent bounding the arguments of one file's loader calls


class Refused(Exception):
    """A file over one of these bounds: the reason, said once on its plugin."""


def over_size(kind: str, size: int) -> str | None:
    """Why a blob of `size` bytes is not read as `kind` ('py', 'construction' or a text kind), or None."""
    limit = MAX_PYTHON_BYTES if kind in ("py", "construction") else MAX_TEXT_BYTES
    if size > limit:
        return f"larger than {limit:,} bytes ({size:,}); not read"
    return None
