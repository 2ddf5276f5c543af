"""The local executor's GPUs: a workstation's GPUs shared by its tasks as Slurm would share a node's, each task of
a GPU tier with GPUs of its own, never two tasks on one GPU.

The GPUs are the NVIDIA device nodes present (`<gpu_dev_dir>/nvidia[0-9]*`, character devices) or the
`local_gpus` setting. A task holds each of its GPUs by an exclusive lock on a file named after the device
(`flock`, released by the kernel when the holder ends), so two coordinators on the same machine never hand out
the same GPU either; a task that finds too few free waits for them rather than share. The task is then told its
GPUs the way Slurm tells a job (`SLURM_JOB_GPUS`, `CUDA_VISIBLE_DEVICES`), and the worker shows the pair exactly
those (pipeline/job/gpus.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Callable

from pipeline.job.gpus import is_nvidia_node

log = logging.getLogger(__name__)


def lock_folder() -> Path:
    """Where GPU locks live: machine-wide for root (a folder only root can write), per user otherwise."""
    if os.getuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/score-plugins-gpus")
    return Path(f"/tmp/score-plugins-gpus-{os.getuid()}")


def discover(dev_dir: str = "/dev", setting: str = "") -> list[int]:
    """The machine's GPU numbers: the setting's, else every `nvidiaN` character device in `dev_dir`."""
    if setting:
        return sorted({int(v) for v in setting.split(",") if v.strip()})
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    return sorted(int(n[6:]) for n in names
                  if re.fullmatch(r"nvidia\d+", n) and is_nvidia_node(os.path.join(dev_dir, n)))


class GpuLease:
    """GPUs held by one task until `release` (or until this process ends)."""

    def __init__(self, pool: "GpuPool", ids: list[int], fds: list[int]):
        self.pool, self.ids, self._fds = pool, ids, fds

    def environment(self) -> dict[str, str]:
        """What the task is told, as Slurm tells a job of its GPUs (global ids: nothing renumbers them here)."""
        ids = ",".join(str(i) for i in self.ids)
        return {"SLURM_JOB_GPUS": ids, "CUDA_VISIBLE_DEVICES": ids, "SLURM_GPUS_ON_NODE": str(len(self.ids))}

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the descriptor releases its flock
        self._fds = []
        self.pool._released()


class GpuPool:
    """The GPUs of this machine, handed to tasks disjointly."""

    def __init__(self, ids: list[int], dev_dir: str = "/dev", folder: Path | None = None):
        self.ids, self.dev_dir = list(ids), dev_dir
        self.folder = folder or lock_folder()
        self._changed = threading.Condition()

    @classmethod
    def for_settings(cls, settings) -> "GpuPool":  # noqa: ANN001 - pipeline.config.Settings
        return cls(discover(settings.gpu_dev_dir, settings.local_gpus), settings.gpu_dev_dir)

    def _lock_path(self, gpu: int) -> Path:
        """One lock per device: named by its device number when the node is there (two folders showing the same
        GPU share its lock), else by its number."""
        try:
            info = os.stat(os.path.join(self.dev_dir, f"nvidia{gpu}"))
            if stat.S_ISCHR(info.st_mode):
                return self.folder / f"dev-{os.major(info.st_rdev)}-{os.minor(info.st_rdev)}.lock"
        except OSError:
            pass
        return self.folder / f"gpu-{gpu}.lock"

    def _prepare(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(self.folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(f"{self.folder} is not a folder of this user's: remove it")

    def try_acquire(self, n: int) -> GpuLease | None:
        """`n` free GPUs now, or None (nothing held)."""
        self._prepare()
        got: list[tuple[int, int]] = []
        for gpu in self.ids:
            if len(got) == n:
                break
            fd = os.open(self._lock_path(gpu), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            got.append((gpu, fd))
        if len(got) < n:
            for _, fd in got:
                os.close(fd)
            return None
        return GpuLease(self, [g for g, _ in got], [fd for _, fd in got])

    def acquire(self, n: int, stop: Callable[[], bool] = lambda: False, poll: float = 0.5) -> GpuLease | None:
        """Wait until `n` GPUs are free and hold them; None when `stop()` says the task is no longer wanted.
        Raises ValueError when this machine has fewer than `n` GPUs (waiting would never end)."""
        if n > len(self.ids):
            raise ValueError(f"the task asks for {n} GPU(s); this machine has {len(self.ids)} "
                             f"({self.dev_dir}/nvidia[0-9]*, or the local_gpus setting)")
        while not stop():
            lease = self.try_acquire(n)
            if lease is not None:
                return lease
            with self._changed:  # woken at once by a task of this process that ends; another's within `poll`
                self._changed.wait(poll)
        return None

    def _released(self) -> None:
        with self._changed:
            self._changed.notify_all()
