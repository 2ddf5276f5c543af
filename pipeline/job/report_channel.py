"""The report channel: the plugin side's JSON lines on a pipe, capped and checked, and how a child's end is
read (exit code, signal, resource usage) into a result."""

from __future__ import annotations

import json
import re
import math
import os
import select
import signal
import subprocess
import time
from typing import Optional

from .gpus import GPU_OUT_OF_MEMORY
from .score_reader import MAX_RAW_VALUES


STAGES = ("env_build", "import", "score", "persist")


REPORT_CAP_BYTES = 1_000_000  # everything the plugin side may send; the rest is drained and dropped
REPORT_LINE_CAP = 200_000
REASON_CAP = 2000
REPORT_DRAIN_SECONDS = 5.0


class ReportReader:
    """Reads the child's report pipe in a thread: JSON lines, capped in size, never blocking the child."""

    def __init__(self, fd: int):
        import threading

        self.fd = fd
        self.data = bytearray()
        self.overflow = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            room = REPORT_CAP_BYTES - len(self.data)
            if room > 0:
                self.data.extend(chunk[:room])
            if len(chunk) > room:
                self.overflow = True

    def join(self, seconds: float) -> None:
        self.thread.join(seconds)  # a grandchild holding the pipe open cannot keep us waiting

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass

    def outcome(self) -> tuple[str, dict | None, str | None]:
        """(last stage reached, the checked final report or None, why the report was refused)."""
        stage, final, problem = "import", None, None
        for raw in bytes(self.data).split(b"\n"):
            if not raw.strip():
                continue
            if len(raw) > REPORT_LINE_CAP:
                problem = f"a report line of {len(raw)} bytes was refused"
                continue
            try:
                message = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
            except (ValueError, UnicodeDecodeError):
                problem = "the plugin side sent a report that is not JSON"
                continue
            if not isinstance(message, dict):
                problem = "the plugin side sent a report that is not an object"
                continue
            if set(message) == {"stage"}:
                if message["stage"] in STAGES:
                    stage = message["stage"]
                continue
            checked, why = check_report(message)
            if checked is None:
                problem = why
            else:
                final, problem = checked, None
        if self.overflow and final is None:
            problem = f"the plugin side sent more than {REPORT_CAP_BYTES} bytes of report"
        return stage, final, problem


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _finite(value: object, low: float | None = None, high: float | None = None) -> float | None:
    """`value` as a float when it is a real, finite JSON number within bounds, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        return None
    return number


def check_report(message: dict) -> tuple[dict | None, str | None]:
    """The final report's schema: every field typed, bounded and capped; anything else is refused."""
    status = message.get("status")
    if status == "error":
        stage = message.get("stage") if message.get("stage") in STAGES else "score"
        reason = message.get("reason")
        reason = reason[:REASON_CAP] if isinstance(reason, str) else "the plugin failed without a readable reason"
        return {"status": "error", "stage": stage, "reason": reason, "max_rss_bytes": _peak(message)}, None
    if status != "ok":
        return None, "the plugin side sent a report with no valid status"
    score = _finite(message.get("score_ceiled"), 0.0, 1.0)
    raw = _finite(message.get("score_raw"))
    if score is None or raw is None:
        return None, "the plugin side reported a score that is not a finite number in [0, 1]"
    ceiling = message.get("ceiling")
    if ceiling is not None:
        ceiling = _finite(ceiling, 0.0)
        if ceiling is None or ceiling == 0.0:
            return None, "the plugin side reported a ceiling that is not a positive finite number"
    error = _finite(message.get("error")) if message.get("error") is not None else None
    values = message.get("raw_values")
    if values is not None:
        if not isinstance(values, list) or len(values) > MAX_RAW_VALUES:
            return None, "the plugin side reported raw values that are not a list of at most 1000 numbers"
        values = [_finite(v) for v in values]
    return {"status": "ok", "score_ceiled": score, "score_raw": raw, "ceiling": ceiling, "error": error,
            "raw_values": values, "max_rss_bytes": _peak(message)}, None


def _peak(message: dict) -> Optional[int]:
    """The plugin process's own peak memory, as it reported it: a whole number of bytes, else None. (Behind
    bubblewrap's PID namespace the worker's wait4 sees only bubblewrap's own peak; a plugin that under-reports
    only starts its next run on too small a tier, and the coordinator caps it at what the tier allowed.)"""
    value = message.get("max_rss_bytes")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**50 else None


def _child_outcome(code: int | None, stage: str, reported: dict | None, problem: str | None, result: dict
                   ) -> dict | None:
    """None when the child reported a valid score (copied into `result`), else the failure."""
    if code is not None and code > 128 and reported is None and (code - 128) in set(signal.Signals):
        code = -(code - 128)  # bubblewrap reports a child killed by a signal as 128 + the signal
    if code is not None and code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
        # SIGKILL may be the kernel's OOM killer, or anyone else: say so, but claim OUT_OF_MEMORY only
        # where the scheduler knows (Slurm's accounting, see executors.slurm).
        reason = f"plugin process killed by {name}" + (" (out of memory, or killed by another process)"
                                                         if sig == signal.SIGKILL else "")
        return {"state": "FAILED", "stage": stage, "reason": reason}
    if reported is None:
        why = f" ({problem})" if problem else ""
        return {"state": "FAILED", "stage": stage,
                "reason": f"plugin process exited with code {code} without a valid result{why}"}
    if reported["status"] != "ok":
        reason = reported["reason"]
        # Python's MemoryError, numpy's _ArrayMemoryError (a subclass) and the like: the plugin ran out of memory;
        # CUDA's out-of-memory (torch, TensorFlow, JAX), wherever in the reason: it ran out of GPU memory
        state = "OUT_OF_MEMORY" if re.match(r"_?\w*MemoryError\b", reason) or GPU_OUT_OF_MEMORY.search(reason) \
            else "FAILED"
        return {"state": state, "stage": reported["stage"], "reason": reason}
    if code != 0:
        return {"state": "FAILED", "stage": "persist",
                "reason": f"plugin process reported a score but exited with code {code}"}
    for k in ("score_raw", "score_ceiled", "ceiling", "error", "raw_values"):
        result[k] = reported.get(k)
    return None


def wait_with_usage(proc: subprocess.Popen, timeout: float, check=None) -> tuple[int, object, str | None]:  # noqa: ANN001
    """Wait for the child, killing its process group at `timeout` ("timeout") or when `check()` returns a reason
    (that reason); return its exit code, its own rusage (peak memory) and why it was stopped (None: it ended)."""
    deadline = time.monotonic() + timeout
    try:  # readable the moment the child ends: no sleeping past the end of a short pair
        ended: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        ended = None
    waiter = None
    if ended is not None:  # poll, not select: a descriptor numbered past 1023 is fine
        waiter = select.poll()
        waiter.register(ended, select.POLLIN)
    try:
        return _wait_with_usage(proc, deadline, check, waiter)
    finally:
        if ended is not None:
            os.close(ended)


def _wait_with_usage(proc: subprocess.Popen, deadline: float, check, waiter  # noqa: ANN001
                     ) -> tuple[int, object, str | None]:
    delay = 0.01
    while True:
        usage = reap(proc)
        if usage is not None:
            return proc.returncode, usage, None
        stopped = "timeout" if time.monotonic() > deadline else (check() if check else None)
        if stopped:
            return proc.returncode, kill_and_reap(proc), stopped
        if waiter is not None:  # the limits are checked at least every 0.2 s, the deadline when it comes
            waiter.poll(max(1, min(200, int(1000 * (deadline - time.monotonic())) + 1)))
        else:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def reap(proc: subprocess.Popen, block: bool = False) -> object | None:
    """The child's resource usage once it has ended (its returncode set then), else None; `block` waits.
    wait4, not Popen.wait: the usage carries the child's peak memory."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if not pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def kill_and_reap(proc: subprocess.Popen) -> object:
    """Kill the child's whole process group (it was started in its own session: bubblewrap and everything it
    started) and reap the child: its resource usage."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return reap(proc, block=True)
