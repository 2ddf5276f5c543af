"""Write a file whole or not at all, under a temporary name of this writer's own.

Two coordinators (or two jobs) may write the same cached file at once (a lock both solved, a bundle's copy of a
lockfile, the facts cache), and a reader must never see half an exported file. A fixed temporary name (`X.tmp`)
is shared between writers, so one moves the other's file away and fails with "No such file or directory" (seen
in CI as an INFRA_FAIL of every pair of a run). Standard library only, importing nothing of ours: any room may
use it (not `pipeline/job/`, which imports nothing of ours: its spool has its own).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """`path` holds `text` (and `mode`, if given) or is left as it was: written beside it under a unique name,
    then moved into place (the last writer wins; every reader sees one writer's whole file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644 if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
