"""The CPU time and peak memory of all of a pair's processes, as the kernel counted them.

bubblewrap runs each side as the child of its own PID namespace's init, and the bubblewrap the worker started
exits without waiting for that init: the worker's wait4 saw only bubblewrap's own few milliseconds (a pair that
ran 20 s of CPU recorded 0.003 s). So the worker is made a child subreaper: when bubblewrap exits, its init (which
has waited for the plugin process and for everything in its namespace) is handed to the worker, which waits for
it and reads its resource usage: the plugin processes' CPU and peak, their children's included, with nothing the
plugin itself reports. Standard library only.
"""

from __future__ import annotations

import os
import signal
import time

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans of the worker's children (each side's namespace init) are handed to the worker, not to init."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children() -> list[int]:
    """The worker's own child processes, from /proc (orphans handed to it included)."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def reap_adopted(keep: tuple[int, ...] = (), wait: float = 2.0) -> tuple[float, int]:
    """Wait for every child of the worker except `keep` (a pair's ended sides' inits, handed over): their CPU
    seconds and the largest peak resident memory among them, in bytes. One still running after `wait` seconds is
    a process of the pair that outlived it: killed, then counted."""
    cpu, peak = 0.0, 0
    deadline = time.monotonic() + wait
    for pid in children():
        if pid in keep:
            continue
        killed = False
        while True:
            try:
                done, _status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                cpu += usage.ru_utime + usage.ru_stime
                peak = max(peak, usage.ru_maxrss * 1024)
                break
            if time.monotonic() > deadline:
                if killed:
                    break  # unkillable (stuck in the kernel): left for the next pair's reaping
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed, deadline = True, time.monotonic() + wait
            time.sleep(0.005)
    return cpu, peak
