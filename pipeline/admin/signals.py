"""Stop signals handled alike: Ctrl-C (SIGINT), SIGTERM (Jenkins' Abort, a build timeout, `timeout`, `kill`)
and SIGHUP (a closed terminal or SSH session) all raise `Stopped`, so a run cancels what it started, records
it with the signal named, writes its emails and exits 128 + the signal's number (130, 143, 129).

A second signal while the first is being handled stops the coordinator at once; by then the run is marked
as cancelled (`mark_cancel`), so `score-plugins reconcile` stops its tasks and closes it as cancelled.

A signal that lands inside a step that must not be cut (`pipeline.stopping.unbroken`: a submission and the
record of its job id, a run's rows) is held until that step ends, then raised: so the cancel always knows every
job it must stop. A stop raised while the main thread runs a finalizer is dropped by Python ("Exception ignored
in ..."): the watch loop and the steps between stages raise it again (`pipeline.stopping.check`), so no signal is
lost (the SIGHUP that once left a coordinator scoring for minutes). SIGTERM is always handled, even when the process started with it ignored; an inherited
SIG_IGN of SIGHUP (`nohup`) or SIGINT (a shell's background job) is kept, as those conventions ask.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline import stopping

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
KEEP_IGNORED = (signal.SIGINT, signal.SIGHUP)  # nohup and background jobs ignore these on purpose; SIGTERM never
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
    """Any KeyboardInterrupt as a `Stopped` (a plain one is Ctrl-C); the pending stop is taken (being handled)."""
    stopping.take()
    return exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)


def _raise(stop: Stopped) -> None:
    raise stop


def _installable(signum: int) -> bool:
    return not (signum in KEEP_IGNORED and signal.getsignal(signum) is signal.SIG_IGN)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise `Stopped` (the second one with `second=True`); one
    landing in an `unbroken` step is raised when that step ends. An inherited SIG_IGN of SIGHUP or SIGINT stays."""
    seen: list[int] = []
    _MARKED.clear()
    stopping.forget()

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        seen.append(signum)
        if len(seen) > 1 and _MARKED:  # the cancel is recorded: a second signal may stop the coordinator now
            raise Stopped(signum, second=True)
        if len(seen) == 1:
            stop = Stopped(signum)
            stopping.pend(stop)  # raised again at the next check() if a finalizer swallows it here
            if stopping.holding():  # a submission and its record, a run's rows: finished first, then stopped
                stopping.hold(lambda: _raise(stop))
                return
            raise stop
        # else: the first signal is held or its cancel not recorded yet; it will be in a moment

    previous = {}
    for signum in STOP_SIGNALS:
        if not _installable(signum):
            continue
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        stopping.forget()


_READY: list[bool] = []  # the command line is parsed and its command runs: a stop raises `Stopped` from here on


def stop_from_start() -> None:
    """From the command's first line, before any import: a stop signal ends it with 128 + its number, never with a
    traceback, click's "Aborted!" (exit 1) or a kill that skips the command's own handling. While the modules load,
    nothing has started: it exits at once; from `command_ready()` on it raises `Stopped`, which each command turns
    into one line and its exit code (and `run` into a cancelled run)."""

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        if not _READY:
            sys.exit(128 + signum)
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        if _installable(signum):
            signal.signal(signum, handler)


def command_ready() -> None:
    _READY.append(True)


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
