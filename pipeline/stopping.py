"""Steps a stop signal must not cut in half: a submission and the record of its job id, a run's rows and their
transitions. Inside `unbroken()`, the first stop signal is held (by the handler of `pipeline.admin.signals`) and
raised the moment the step ends, so whoever handles the stop knows every job that was started.

A module of its own, below `stages/` and `admin/`, because both the watcher (stages) and the signal handler
(admin) use it and the import direction runs one way. Main thread only: that is where Python runs signal
handlers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

_depth = 0
_held: Callable[[], None] | None = None


@contextmanager
def unbroken() -> Iterator[None]:
    """A step that ends before a stop signal takes effect (a held stop is raised when it ends, even when the step
    itself raised: the stop outranks the error). Steps nest; the outermost one releases the stop."""
    global _depth, _held
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _held is not None:
            held, _held = _held, None
            held()


def holding() -> bool:
    """Whether a step that must not be cut is running now."""
    return _depth > 0


def hold(raise_stop: Callable[[], None]) -> None:
    """Keep a stop for the end of the running step (the first one held wins)."""
    global _held
    if _held is None:
        _held = raise_stop


def forget() -> None:
    """No stop is held (a new set of handlers starts)."""
    global _held
    _held = None
