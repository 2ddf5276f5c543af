"""The outbox: every message is written here first, and moved to `sent/` once delivered.

A message's file name comes from its Message-ID, so writing the same message
twice keeps one file, and a message already in `sent/` is not queued again.
While a message is on the wire it sits in `sending/`: only a message there can
have reached the server without being recorded as sent (a crash between the
server's reply and the move to `sent/`). The next flush sends it again first,
with the same Message-ID; everything in `sent/` is never sent again.

Two more folders hold messages that are never sent: `held/` (a profile that does not email submitters wrote
them: notify.policy) and `expired/` (too old, or superseded by a newer message to the same person about the
same pairs: notify.backlog). Each keeps its reason beside it (`<name>.error`).
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
        self.sending_dir = self.root / "sending"
        self.failed_dir = self.root / "failed"
        self.held_dir = self.root / "held"
        self.expired_dir = self.root / "expired"

    def _name(self, msg: EmailMessage) -> str:
        return hashlib.sha256(str(msg["Message-ID"]).encode()).hexdigest()[:24] + ".eml"

    def put(self, msg: EmailMessage, hold: str = "") -> Path:
        """Queue `msg` (atomically); returns its path, in `sent/` if it was already delivered. `hold`: why it
        must not be sent; it is written to `held/` instead, with that reason."""
        name = self._name(msg)
        for done in (self.sent_dir, self.sending_dir, self.failed_dir, self.held_dir, self.expired_dir):
            if (done / name).exists():
                return done / name
        folder = self.held_dir if hold else self.root
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if hold:
            target.with_suffix(".error").write_text(f"attempts 0\n{hold}\n")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
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

    def uncertain(self) -> list[Path]:
        return sorted(self.sending_dir.glob("*.eml")) if self.sending_dir.exists() else []

    def failed(self) -> list[Path]:
        return sorted(self.failed_dir.glob("*.eml")) if self.failed_dir.exists() else []

    def claim(self, path: Path) -> Path:
        """Move a message to `sending/` just before it goes on the wire."""
        self.sending_dir.mkdir(parents=True, exist_ok=True)
        target = self.sending_dir / path.name
        os.replace(path, target)
        return target

    def release(self, claimed: Path, reason: str, final: bool = False) -> Path:
        """A send that certainly did not deliver: back to the queue (or to `failed/` when final)."""
        folder = self.failed_dir if final else self.root
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / claimed.name
        os.replace(claimed, target)
        self.mark_failed(target, reason)
        return target

    def set_aside(self, path: Path, folder: Path, reason: str) -> Path:
        """Move a waiting message to `held/` or `expired/` with its reason: it is never sent."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        os.replace(path, target)
        error = path.with_suffix(".error")
        if error.exists():
            error.unlink()
        target.with_suffix(".error").write_text(f"attempts 0\n{reason}\n")
        return target

    def mark_sent(self, path: Path) -> Path:
        self.sent_dir.mkdir(parents=True, exist_ok=True)
        target = self.sent_dir / path.name
        os.replace(path, target)
        error = self.root / (path.stem + ".error")
        if error.exists():
            error.unlink()
        return target

    def mark_failed(self, path: Path, reason: str) -> None:
        """Keep the reason beside the message (`<name>.error`), with the number of attempts so far."""
        error = path.with_suffix(".error")
        attempts = 0
        if error.exists():
            first = error.read_text().split("\n", 1)[0]
            attempts = int(first.split()[1]) if first.startswith("attempts ") else 0
        error.write_text(f"attempts {attempts + 1}\n{reason}\n")

    def reason(self, path: Path) -> str:
        error = path.with_suffix(".error")
        return error.read_text().split("\n", 1)[1].strip() if error.exists() else ""
