"""Stop signals without a run (fast): which inherited dispositions the coordinator keeps, a signal held by a step
that must not be cut in half, and a signal that lands in a finalizer (where Python drops the exception it raises).
Each case is a real process sent a real signal."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROGRAM = r"""
import os, signal, sys, time
from pipeline.admin.signals import Stopped, stop_on_signals
from pipeline.stopping import unbroken
step = []
with stop_on_signals():
    try:
        if sys.argv[2] == "held":
            with unbroken():
                os.kill(os.getpid(), int(sys.argv[1]))
                time.sleep(0.3)  # the step goes on to its end: the stop waits for it
                step.append("step finished")
        else:
            os.kill(os.getpid(), int(sys.argv[1]))
        time.sleep(3)
        print("not stopped")
    except Stopped as stop:
        print(f"stopped by {stop.name} after: {', '.join(step) or 'nothing'}")
"""


def _run(signum: int, how: str, ignored: tuple[int, ...] = ()) -> str:
    def preexec() -> None:
        for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN if s in ignored else signal.SIG_DFL)

    proc = subprocess.run([sys.executable, "-c", PROGRAM, str(int(signum)), how], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, preexec_fn=preexec)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"),
                                          (signal.SIGINT, "Ctrl-C")])
def test_a_signal_inside_an_unbroken_step_stops_the_coordinator_when_the_step_ends(signum, name):
    assert _run(signum, "held") == f"stopped by {name} after: step finished"


def test_sigterm_stops_even_when_ignored_at_start_while_nohup_sighup_stays_ignored():
    everything_ignored = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
    assert _run(signal.SIGTERM, "now", everything_ignored) == "stopped by SIGTERM after: nothing"
    assert _run(signal.SIGHUP, "now", everything_ignored) == "not stopped"  # nohup's promise kept
    assert _run(signal.SIGINT, "now", everything_ignored) == "not stopped"  # a shell's background job
    assert _run(signal.SIGHUP, "now") == "stopped by SIGHUP after: nothing"


SWALLOWED = r"""
import gc, os, signal, sys, threading, time
from pipeline.admin.signals import Stopped, stop_on_signals
from pipeline.stopping import check

class Finalized:
    # what SQLAlchemy's weakref callbacks, a generator closed by the collector or any __del__ do: Python code
    # run as a finalizer, where an exception is printed ("Exception ignored in") and dropped
    def __del__(self):
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            pass

with stop_on_signals():
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGHUP)).start()
        Finalized()  # dropped at once: its finalizer runs, and the signal lands inside it
        for _ in range(30):  # a watch loop's turns
            check()
            time.sleep(0.1)
        print("not stopped")
    except Stopped as stop:
        print(f"stopped by {stop.name}")
"""


def test_a_stop_a_finalizer_swallowed_is_raised_at_the_next_turn_of_the_loop():
    """The race behind the SIGHUP that once left a coordinator scoring: the handler's exception raised inside a
    finalizer is dropped by Python; the loop's check() raises the stop again."""
    proc = subprocess.run([sys.executable, "-c", SWALLOWED], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    assert "Exception ignored in" in proc.stderr and "Stopped" in proc.stderr, proc.stderr  # Python dropped it
    assert proc.stdout.strip() == "stopped by SIGHUP", (proc.stdout, proc.stderr)
