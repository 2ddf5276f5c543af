"""Source facts cached by git blob id, in one JSON file: a blob never changes, so a warm `detect` parses only
what the change added."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pipeline.catalog.sourcefacts import FileFacts, PARSER_VERSION


class FactsCache:
    """Facts by git blob id, in one JSON file: loaded once, written back (atomically) only when it grew."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.added = 0
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == PARSER_VERSION:
                    self.entries = data.get("facts", {})
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache is only a slower run

    def get(self, sha: str) -> FileFacts | None:
        data = self.entries.get(sha)
        return FileFacts.from_json(data) if data is not None else None

    def put(self, sha: str, facts: FileFacts) -> None:
        self.entries[sha] = facts.to_json()
        self.added += 1

    def save(self) -> None:
        if self.path is None or not self.added:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".facts-", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": PARSER_VERSION, "facts": self.entries}, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only state folder: the next run parses again, nothing is lost
