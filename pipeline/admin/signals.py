"""Stop signals handled alike: Ctrl-C (SIGINT), SIGTERM (Jenkins' Abort, a build timeout, `timeout`, `kill`)
and SIGHUP (a closed terminal or SSH session) all raise `Stopped`, so a run cancels what it started, records
it with the signal named, writes its emails and exits 128 + the signal's number (130, 143, 129).

A second signal while the first is being handled stops the coordinator at once; by then the run is marked
as cancelled (`mark_cancel`), so `score-plugins reconcile` stops its tasks and closes it as cancelled.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WHO = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
CANCEL_MARK = "cancel-requested"  # a file in the run folder: why the run was cancelled (a signal, `cancel`)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; `second` when one had already come (the coordinator stops at once)."""

    def __init__(self, signum: int = signal.SIGINT, second: bool = False):
        super().__init__(WHO.get(signum, f"signal {signum}"))
        self.signum, self.second = signum, second

    @property
    def name(self) -> str:
        return WHO.get(self.signum, f"signal {self.signum}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    @property
    def reason(self) -> str:
        """The reason recorded on each cancelled pair and told to its submitter."""
        if self.signum == signal.SIGINT:
            return "interrupted by Ctrl-C"
        how = {signal.SIGTERM: " (a Jenkins abort, a build timeout or kill)",
               signal.SIGHUP: " (the terminal or SSH session closed)"}.get(self.signum, "")
        return f"stopped by {self.name}{how}"


def stopped_from(exc: BaseException) -> Stopped:
    """Any KeyboardInterrupt as a `Stopped` (a plain one is Ctrl-C)."""
    return exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise `Stopped` (the second one with `second=True`).
    A signal ignored when the process started (`nohup`, a background job's SIGINT) stays ignored."""
    seen: list[int] = []
    _MARKED.clear()

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        seen.append(signum)
        if len(seen) == 1:
            raise Stopped(signum)
        if _MARKED:  # the cancel is recorded: a second signal may stop the coordinator now
            raise Stopped(signum, second=True)
        # else: the first signal's cancel has not been recorded yet; it will be in a moment

    previous = {}
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


_MARKED: list[Path] = []  # run folders whose cancel is recorded (from here on a second signal stops at once)


def mark_cancel(run_dir: Path, reason: str) -> None:
    """Leave the reason in the run folder before anything else is done, so that even a coordinator killed
    while cancelling leaves a run that `reconcile` closes as cancelled (not lost)."""
    write_cancel_reason(run_dir, reason)
    _MARKED.append(Path(run_dir))


def write_cancel_reason(run_dir: str | Path, reason: str) -> None:
    """The reason a run is being cancelled, in its folder: read by `reconcile` and by the run's own
    coordinator when another process (`score-plugins cancel`) stops its tasks."""
    try:
        (Path(run_dir) / CANCEL_MARK).write_text(reason + "\n")
    except OSError:
        pass


def cancel_reason(run_dir: str | Path) -> str | None:
    """Why a run was cancelled (by a signal or `score-plugins cancel`), if it was."""
    try:
        return (Path(run_dir) / CANCEL_MARK).read_text().strip() or None
    except OSError:
        return None
