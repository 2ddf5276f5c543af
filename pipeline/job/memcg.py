"""A memory cgroup per pair on the local executor: memory bounded as Slurm bounds it.

RLIMIT_DATA bounds only a process's heap and private anonymous mappings; a memfd, a file in /dev/shm or the
page cache a pair fills are outside it. A memory cgroup counts them all (anonymous memory, shmem, page cache),
for every process of the pair together, and the kernel's OOM killer ends the pair at its tier's limit, as
Slurm's task/cgroup plugin does on a cluster.

Each pair's cgroup is made below the cgroup this process (the worker, started by the coordinator) already runs
in: nothing is ever moved out of it; the pair's processes join their own cgroup in the child before they
exec (`joining`). cgroup v2 (`memory.max`, `memory.swap.max`, `memory.oom.group`, OOM kills in
`memory.events`) where the memory controller is on the unified hierarchy, else v1 (`memory.limit_in_bytes`,
`memory.memsw.limit_in_bytes`, OOM kills in `memory.oom_control`). cgroup v2 turns no controller on below a cgroup
that holds processes: a coordinator alone in its cgroup (`systemd-run --scope -p Delegate=yes ...`) moves itself
into a leaf below it (`score-plugins-coordinator`, still inside), and its pairs' cgroups are that leaf's siblings.

Standard library only: copied into every job bundle with the job package. `CgroupUnavailable` says, in one
line, why no cgroup can be made here.
"""

from __future__ import annotations

import errno
import os
import signal
import time

PREFIX = "score-plugins-pair-"  # every cgroup made here: <own cgroup>/score-plugins-pair-<worker pid>-<n>
LEAF = "score-plugins-coordinator"  # cgroup v2: the leaf a coordinator alone in its cgroup moves itself into
_made = 0


class CgroupUnavailable(OSError):
    """No memory cgroup can be made for a pair on this node (the reason in one line)."""


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _mounts(mountinfo: str | None = None) -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fstype, super options) of each cgroup mount this process sees."""
    found = []
    try:
        lines = (_read("/proc/self/mountinfo") if mountinfo is None else mountinfo).splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            point = fields[4].replace("\\040", " ")
            found.append((point, fields[3], rest[0], set(rest[2].split(","))))
    return found


def _own(hierarchy: str, cgroup: str | None = None) -> str | None:
    """This process's cgroup path in a hierarchy of /proc/self/cgroup ('' = the unified one, else a controller)."""
    try:
        lines = (_read("/proc/self/cgroup") if cgroup is None else cgroup).splitlines()
    except OSError:
        return None
    for line in lines:
        num, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "" and num == "0" and controllers == "":
            return path
        if hierarchy and hierarchy in controllers.split(","):
            return path
    return None


def _under(point: str, root: str, path: str) -> str | None:
    """The folder of cgroup `path` in a hierarchy mounted at `point` whose root is `root`, if visible there."""
    root = root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    folder = os.path.join(point, path[len(root):].lstrip("/"))
    return folder if os.path.isdir(folder) else None


def locate(mountinfo: str | None = None, cgroup: str | None = None) -> tuple[str, str]:
    """(version 'v1' or 'v2', the folder pair cgroups go below: this process's own memory cgroup, or on v2 the
    parent of the leaf a coordinator moved itself into); CgroupUnavailable otherwise. `mountinfo` and `cgroup`
    stand for /proc/self/mountinfo and /proc/self/cgroup (tests)."""
    mounts = _mounts(mountinfo)
    own_v2 = _own("", cgroup)
    for point, root, kind, _ in mounts:
        if kind == "cgroup2" and own_v2 is not None:
            folder = _under(point, root, own_v2)
            if folder is not None:
                if os.path.basename(folder) == LEAF:  # the coordinator's leaf: its pairs are its siblings
                    folder = os.path.dirname(folder)
                try:
                    controllers = _read(os.path.join(folder, "cgroup.controllers")).split()
                except OSError:
                    controllers = []
                if "memory" in controllers:
                    return "v2", folder
    own_v1 = _own("memory", cgroup)
    for point, root, kind, options in mounts:
        if kind == "cgroup" and "memory" in options and own_v1 is not None:
            folder = _under(point, root, own_v1)
            if folder is not None:
                return "v1", folder
    if not mounts:
        raise CgroupUnavailable("no cgroup file system is mounted on this node (/proc/self/mountinfo names none)")
    raise CgroupUnavailable("no memory cgroup controller is mounted where this process's own cgroup can be "
                            "reached (neither cgroup v2 with the memory controller nor a v1 memory hierarchy)")


class PairCgroup:
    """One pair's memory cgroup: made with its limit, joined by the pair's processes in the child before exec,
    read for OOM kills when the pair ends, emptied and removed."""

    def __init__(self, limit: int, version: str, folder: str):
        self.limit, self.version, self.folder = limit, version, folder

    @classmethod
    def create(cls, limit: int, leaf_ok: bool = False) -> "PairCgroup":
        """A new cgroup below this process's own, with memory (and swap) limited to `limit` bytes."""
        global _made
        version, own = locate()
        _made += 1
        folder = os.path.join(own, f"{PREFIX}{os.getpid()}-{_made}")
        try:
            if version == "v2":
                _enable_memory(own, leaf_ok)
            os.mkdir(folder, 0o755)
        except OSError as exc:
            raise CgroupUnavailable(f"cannot make a memory cgroup below {own} ({exc.strerror or exc})") from None
        group = cls(limit, version, folder)
        try:
            if version == "v1":
                _write(os.path.join(folder, "memory.limit_in_bytes"), str(limit))
                memsw = os.path.join(folder, "memory.memsw.limit_in_bytes")
                if os.path.exists(memsw):  # swap accounting on: no swapping past the limit either
                    _write(memsw, str(limit))
                set_to = int(_read(os.path.join(folder, "memory.limit_in_bytes")))
            else:
                _write(os.path.join(folder, "memory.max"), str(limit))
                for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if os.path.exists(os.path.join(folder, name)):
                        _write(os.path.join(folder, name), value)
                set_to = int(_read(os.path.join(folder, "memory.max")).strip())
        except (OSError, ValueError) as exc:
            group.remove()
            raise CgroupUnavailable(f"cannot set a memory limit in {folder} "
                                    f"({getattr(exc, 'strerror', None) or exc})") from None
        if set_to > limit:  # the kernel rounds down to a page; never up
            group.remove()
            raise CgroupUnavailable(f"{folder} took a memory limit of {set_to} bytes, not {limit}")
        return group

    def joining(self, then=None):  # noqa: ANN001, ANN201 - preexec functions
        """A preexec function: this child joins the cgroup (before it execs anything, so all it starts is
        counted), then runs `then` (the other limits). A failure stops the child: nothing runs unbounded."""
        procs = os.path.join(self.folder, "cgroup.procs")

        def apply() -> None:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")  # "0": the writing process itself
            finally:
                os.close(fd)
            if then is not None:
                then()

        return apply

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this cgroup (0 when it cannot tell)."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        try:
            for line in _read(os.path.join(self.folder, name)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self, wait: float = 5.0) -> None:
        """Kill whatever is left in it (nothing of the pair outlives the pair), then remove it."""
        deadline = time.monotonic() + wait
        while True:
            try:
                os.rmdir(self.folder)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return  # left for `sweep` (an empty cgroup of a worker that is gone)
            for pid in _pids(self.folder):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)


def _pids(folder: str) -> list[int]:
    try:
        return [int(p) for p in _read(os.path.join(folder, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return []


def _enable_memory(own: str, leaf_ok: bool = False) -> None:
    """cgroup v2: the memory controller must be on in the parent's subtree_control for a child to have it, and a
    cgroup with processes of its own cannot turn it on ("no internal processes"). With `leaf_ok` (the
    coordinator, before anything runs) a process alone in its cgroup moves itself into a leaf below it,
    `score-plugins-coordinator`: still inside its cgroup, never out of it; what it starts later is there too."""
    control = os.path.join(own, "cgroup.subtree_control")
    if "memory" in _read(control).split():
        return
    try:
        _write(control, "+memory")
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise OSError(exc.errno, f"{exc.strerror or exc} enabling the memory controller in {control}") from None
    if leaf_ok and _pids(own) == [os.getpid()]:
        leaf = os.path.join(own, LEAF)
        try:
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), "0")
            _write(control, "+memory")
            return
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror or exc} moving into {leaf} to turn the memory controller on "
                                     f"in {control}") from None
    raise OSError(errno.EBUSY, f"cannot turn the memory controller on in {control}: other processes share this "
                               "cgroup (cgroup v2 allows no controller below a cgroup with processes); start the "
                               "coordinator alone in a cgroup of its own with memory delegated, e.g. "
                               "systemd-run --scope -p Delegate=yes score-plugins run ...")


def sweep() -> int:
    """Remove the empty pair cgroups of workers that are gone (a task killed at its time limit leaves its pair's
    cgroup behind); returns how many."""
    try:
        _, own = locate()
        entries = os.listdir(own)
    except OSError:
        return 0
    removed = 0
    for name in entries:
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
            continue  # its worker still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        try:
            os.rmdir(os.path.join(own, name))
            removed += 1
        except OSError:
            pass
    return removed


def probe(limit: int = 64 << 20) -> str:
    """Make a pair cgroup for real, run `true` in it and remove it: 'cgroup v1' or 'cgroup v2', else
    CgroupUnavailable with the one line that says why. Never moves this process."""
    import subprocess

    sweep()
    group = PairCgroup.create(limit, leaf_ok=True)
    try:
        true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
        try:
            code = subprocess.run([true], preexec_fn=group.joining(), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=30).returncode
        except (OSError, subprocess.SubprocessError) as exc:
            raise CgroupUnavailable(f"a process cannot join a memory cgroup below {os.path.dirname(group.folder)}"
                                    f" ({exc})") from None
        if code != 0:
            raise CgroupUnavailable(f"a process in a memory cgroup below {os.path.dirname(group.folder)} "
                                    f"exited with {code}")
    finally:
        group.remove()
    return f"cgroup {group.version}"
