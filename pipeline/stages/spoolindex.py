"""Tail the spool's index: the names of results the worker finished, in the order it finished them.

The worker appends `<pair key>.json` to `spool/.index` after each result file is in place. Reading only the bytes
added since the last cycle keeps a watch cycle's cost proportional to the results that are new, not to the
results already done (listing a folder of 10,000 files every half second made the coordinator super-linear).
The index is a hint, never trusted on its own: each name is checked like any spool file, and the final ingest
of a run still lists the folder, so a line that never arrived only delays its result.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

INDEX = ".index"  # the worker's SPOOL_INDEX
NAME = re.compile(rb"[0-9A-Za-z_-]{1,100}\.json")


class SpoolIndex:
    """New result names since the last call: one stat per cycle when nothing is new."""

    def __init__(self, spool_dir: Path):
        self.path = Path(spool_dir) / INDEX
        self.offset = 0
        self.partial = b""  # a line whose newline has not been written yet

    def new_names(self) -> list[str]:
        try:
            size = os.stat(self.path).st_size
            if size <= self.offset:
                return []
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except OSError:  # not there yet (no result finished), or unreadable: the final listing still runs
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("ascii") for line in lines if NAME.fullmatch(line)]
