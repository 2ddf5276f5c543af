"""The outbox: every message is written here first, and moved to `sent/` once delivered.

A message's file name comes from its Message-ID, so writing the same message
twice keeps one file, and a message already in `sent/` is not queued again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path


class Outbox:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.sent_dir = self.root / "sent"

    def _name(self, msg: EmailMessage) -> str:
        return hashlib.sha256(str(msg["Message-ID"]).encode()).hexdigest()[:24] + ".eml"

    def put(self, msg: EmailMessage) -> Path:
        """Queue `msg` (atomically); returns its path, in `sent/` if it was already delivered."""
        name = self._name(msg)
        if (self.sent_dir / name).exists():
            return self.sent_dir / name
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        with os.fdopen(fd, "wb") as f:
            f.write(msg.as_bytes(policy=policy.SMTP))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target

    def pending(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(self.root.glob("*.eml"))

    def read(self, path: Path) -> EmailMessage:
        with open(path, "rb") as f:
            return BytesParser(policy=policy.default).parse(f)  # type: ignore[return-value]

    def mark_sent(self, path: Path) -> Path:
        self.sent_dir.mkdir(parents=True, exist_ok=True)
        target = self.sent_dir / path.name
        os.replace(path, target)
        error = path.with_suffix(".error")
        if error.exists():
            error.unlink()
        return target

    def mark_failed(self, path: Path, reason: str) -> None:
        path.with_suffix(".error").write_text(reason + "\n")
