"""What a flush sends of what waits: a backlog is not dumped on the first flush that finds a server.

Before anything goes on the wire, each waiting message is judged:

1. **Its profile may send it** (notify.policy): a message a dev or test run wrote to a submitter (or one an older
   version queued, judged by the flushing profile) is moved to `held/`, never sent.
2. **It is not stale**: one that waited longer than `mail_max_age_hours` is moved to `expired/`.
3. **It is not superseded**: when newer waiting messages to the same person report every pair it reports (the
   same model on the same benchmark, scored or failed again since), only the newer ones are sent; it is moved to
   `expired/`. Messages about pairs nobody reported since are sent, however many runs they span.

Each moved message keeps its reason beside it (`<name>.error`); `notify flush` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Callable

from notify.outbox import Outbox


@dataclass
class Triage:
    held: dict[str, str] = field(default_factory=dict)  # file name -> why it is never sent
    expired: dict[str, str] = field(default_factory=dict)


@dataclass
class _Waiting:
    path: Path
    to: list[str]
    profile: str | None
    date: datetime
    pairs: frozenset[str]


def _read(outbox: Outbox, path: Path, now: datetime) -> _Waiting:
    msg = outbox.read(path)
    to = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("To", [])]) if addr]
    try:
        date = parsedate_to_datetime(str(msg["Date"])) if msg["Date"] else now
        date = date if date.tzinfo else date.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        date = now
    pairs = frozenset(str(msg.get("X-Score-Plugins-Pairs", "")).split())
    return _Waiting(path, to, str(msg["X-Score-Plugins-Profile"]) if msg["X-Score-Plugins-Profile"] else None,
                    date, pairs)


def triage(outbox: Outbox, allows: Callable[[str | None, str], bool], max_age_hours: int = 0,
           now: datetime | None = None) -> Triage:
    """Set aside what must not be sent (see the module's docstring); what is left waits for the flush."""
    now = now or datetime.now(timezone.utc)
    report = Triage()
    waiting = []
    for path in outbox.uncertain() + outbox.pending():
        item = _read(outbox, path, now)
        refused = [a for a in item.to if not allows(item.profile, a)]
        if refused or not item.to:
            why = (f"the {item.profile or 'flushing'} profile does not email {', '.join(refused)} "
                   "(settings mail_submitters, mail_allow)") if refused else "no recipient"
            outbox.set_aside(path, outbox.held_dir, why)
            report.held[path.name] = why
        elif path.parent == outbox.root:  # one already on the wire is sent again as it was (exactly once)
            waiting.append(item)
    fresh = []
    for item in waiting:
        age = now - item.date
        if max_age_hours and age > timedelta(hours=max_age_hours):
            why = f"waited {age.total_seconds() / 3600:.0f} h, longer than mail_max_age_hours ({max_age_hours})"
            outbox.set_aside(item.path, outbox.expired_dir, why)
            report.expired[item.path.name] = why
        else:
            fresh.append(item)
    covered: dict[str, set[str]] = {}
    for item in sorted(fresh, key=lambda w: (w.date, w.path.stat().st_mtime_ns), reverse=True):  # newest first
        seen = [covered.setdefault(a.lower(), set()) for a in item.to]
        if item.pairs and all(item.pairs <= s for s in seen):
            why = "superseded: newer messages to the same person report all its pairs"
            outbox.set_aside(item.path, outbox.expired_dir, why)
            report.expired[item.path.name] = why
        for s in seen:
            s.update(item.pairs)
    return report
