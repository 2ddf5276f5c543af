"""A parse worker (`parsepool`): reads `<sha> <size> <kinds>\\n<contents>` records on stdin (kinds: `py`,
`construction` or both, comma-separated), writes `[sha, {kind: facts}]` JSON lines on stdout, each blob parsed once.
It imports only `pyfacts` (`sourcefacts`, `construction`), which need the standard library alone (workers run with
`-S`, no site-packages: keep it so), and starts in a fraction of the coordinator's time."""

from __future__ import annotations

import json
import sys

from pipeline.catalog.pyfacts import python_facts, unreadable


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        header = stdin.readline()
        if not header:
            break
        sha, size, *kinds = header.split()
        data = stdin.read(int(size))
        wanted = kinds[0].decode().split(",") if kinds else ["py"]
        facts = python_facts(data, wanted)
        try:
            line = json.dumps([sha.decode(), facts])
        except (ValueError, TypeError, RecursionError) as exc:  # a value the bounds missed: refused, not a crash
            line = json.dumps([sha.decode(), {kind: unreadable(kind, exc) for kind in facts}])
        stdout.write(line + "\n")
    stdout.flush()
