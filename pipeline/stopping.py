"""Steps a stop signal must not cut in half: a submission and the record of its job id, a run's rows and their
transitions. Inside `unbroken()`, the first stop signal is held (by the handler of `pipeline.admin.signals`) and
raised the moment the step ends, so whoever handles the stop knows every job that was started. And stops that
were raised but lost (in a finalizer) are raised again at the next `check()`.

A module of its own, below `stages/` and `admin/`, because both the watcher (stages) and the signal handler
(admin) use it and the import direction runs one way. Main thread only: that is where Python runs signal
handlers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

_depth = 0
_held: Callable[[], None] | None = None
_pending: BaseException | None = None  # the stop raised by the handler and not yet taken by whoever handles it


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
        check()


def holding() -> bool:
    """Whether a step that must not be cut is running now."""
    return _depth > 0


def hold(raise_stop: Callable[[], None]) -> None:
    """Keep a stop for the end of the running step (the first one held wins)."""
    global _held
    if _held is None:
        _held = raise_stop


def forget() -> None:
    """No stop is held or pending (a new set of handlers starts, or the old one ends)."""
    global _held, _pending
    _held = _pending = None


def pend(stop: BaseException) -> None:
    """A stop the handler raises (or holds): pending until `take()`. Python drops an exception raised inside a
    finalizer (`__del__`, a weakref callback, a generator closed by the garbage collector: "Exception ignored
    in ...") and a signal handler runs wherever the main thread is, finalizers included: a stop that lands there
    is lost. `check()` raises it again."""
    global _pending
    if _pending is None:
        _pending = stop


def take() -> None:
    """The pending stop reached its handler (pipeline.admin.signals.stopped_from)."""
    global _pending
    _pending = None


def check() -> None:
    """At a loop's turn or between steps: raise a stop that was raised but never reached its handler (swallowed by a
    finalizer). Nothing when none is pending, or while a step that must not be cut runs (it raises it at its end)."""
    if _pending is not None and not _depth:
        raise _pending
