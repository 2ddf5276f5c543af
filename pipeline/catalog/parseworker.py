"""A parse worker (`parsepool`): reads `<sha> <size>\\n<contents>` records on stdin, writes `[sha, facts]` JSON
lines on stdout. It imports only `sourcefacts`, which needs the standard library alone (workers run with `-S`, no
site-packages: keep it so), and starts in a fraction of the coordinator's time."""

from __future__ import annotations

import json
import sys

from pipeline.catalog.sourcefacts import read_facts


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        header = stdin.readline()
        if not header:
            break
        sha, size = header.split()
        data = stdin.read(int(size))
        stdout.write(json.dumps([sha.decode(), read_facts(data).to_json()]) + "\n")
    stdout.flush()
