#!/usr/bin/env python3
"""One sandbox for every place submitter code runs: scoring, locking, environment builds, setup.py, plugin tests.

Standard library only: it is copied into every job bundle with the job package (and run by the job scripts as
`python job/sandbox.py exec ...`), so a node needs neither our package nor any credential. Everything here fails
closed: when bubblewrap, user namespaces, setpriv (as root) or libseccomp is missing, `SandboxUnavailable` says
what, in one line, and nothing runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file (`python job/sandbox.py exec ...` by job scripts):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run the job package's copy
    from importlib import import_module

    sys.exit(import_module(os.path.basename(os.path.dirname(os.path.abspath(__file__))) + ".sandbox").main())

from .cachelayer import CacheLayer  # noqa: E402
from .defaults import UID_BASE, UID_COUNT  # noqa: E402
from .netns import (NETWORK_HINT, NETWORK_MODES, NetworkUnavailable, launcher, network_mode,  # noqa: E402
                    network_tools)
from .seccomp import SandboxUnavailable, seccomp_filter_fd  # noqa: E402

INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install bubblewrap; RHEL/Fedora: dnf install bubblewrap)"
NOBODY = 65534

# Read-only system paths a sandboxed process sees (when present); everything else of the node is absent.
SYSTEM_PATHS = (
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/sys",
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts", "/etc/host.conf",
    "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/timezone",
    "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/mime.types",
    "/etc/fonts", "/etc/os-release", "/etc/machine-id",
)


# --- identity: who the sandboxed process is ---------------------------------------------------------------------


def running_as_root() -> bool:
    return os.getuid() == 0


class UidSlot:
    """A node-wide unique user for one sandboxed pair (root only), held by a lock file for as long as the pair
    runs: the process limit (RLIMIT_NPROC counts a user's processes) and the process count then belong to this
    pair alone. Lock files live in a root-only folder (checked with lstat: a folder someone else made is refused)."""

    def __init__(self, base: int = UID_BASE, count: int = UID_COUNT, folder: str | None = None):
        self.base, self.count = base, count
        self.folder = folder or ("/run/score-plugins-uids" if os.access("/run", os.W_OK) else
                                 "/tmp/.score-plugins-uids")
        self.fd: int | None = None
        self.uid = NOBODY

    def __enter__(self) -> "UidSlot":
        try:
            os.mkdir(self.folder, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(self.folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
            raise SandboxUnavailable(f"{self.folder} is not a folder only root can write: remove it")
        start = os.getpid() % self.count
        for i in range(self.count):
            n = (start + i) % self.count
            fd = os.open(f"{self.folder}/{n}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, self.base + n
            return self
        raise SandboxUnavailable(f"all {self.count} sandbox users are in use on this node")

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def count_processes(uid: int) -> int:
    """Processes of `uid` on this node (a per-pair user's: its pair's processes)."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def count_tasks(uid: int) -> int:
    """Processes and threads of `uid` (what RLIMIT_NPROC counts)."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return n


def count_processes_in_range(base: int, count: int) -> int:
    """Processes of any per-pair user (none should outlive its pair)."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                n += base <= entry.stat(follow_symlinks=False).st_uid < base + count
            except OSError:
                pass
    return n


def tree_size(path: str, stop_at: int | None = None, strict: bool = False) -> int:
    """Bytes allocated under `path`, never following a symlink (a plugin's folder may hold any). What vanished
    while it walked is skipped; any other error (a path too long to open, a loop) is skipped too, or with
    `strict` raised, so that a limit fails closed on what it cannot measure."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            if strict:
                raise
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError:
                    if strict:
                        raise
                    continue
                total += info.st_blocks * 512
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                if stop_at is not None and total > stop_at:
                    return total
    return total


# --- limits -----------------------------------------------------------------------------------------------------


@dataclass
class Limits:
    """Per-process limits set before bwrap starts (inherited by everything inside): None leaves one unset."""

    processes: int | None = None  # RLIMIT_NPROC (per user: isolated per pair only with per-pair users)
    file_bytes: int | None = None  # RLIMIT_FSIZE: no single file written grows past this (SIGXFSZ)
    data_bytes: int | None = None  # RLIMIT_DATA: allocations past this raise MemoryError
    umask: int = 0o002  # files in shared caches stay writable by the other pairs' users (same group)

    def preexec(self):  # noqa: ANN201 - a function for subprocess' preexec_fn
        def apply() -> None:
            import resource

            os.umask(self.umask)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            for kind, value in ((resource.RLIMIT_NPROC, self.processes), (resource.RLIMIT_FSIZE, self.file_bytes),
                                (resource.RLIMIT_DATA, self.data_bytes)):
                if value:
                    resource.setrlimit(kind, (value, value))

        return apply


# --- the bwrap command line -------------------------------------------------------------------------------------


@dataclass
class View:
    """What one sandboxed process sees and may do. Paths absent on the node are skipped."""

    ro: list[str] = field(default_factory=list)  # read-only binds (source == destination)
    rw: list[str] = field(default_factory=list)  # read-write binds
    rw_at: list[tuple[str, str]] = field(default_factory=list)  # (source, destination) read-write binds: a layer
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (target, link) recreated inside
    tmpfs: list[str] = field(default_factory=list)  # empty folders (e.g. hiding other plugins)
    ro_over: list[str] = field(default_factory=list)  # read-only binds applied after `tmpfs` (what stays visible)
    cwd: str = "/"
    network: str = "on"  # on: the outside, not the node (netns.py); off: loopback only; host: the node's own
    shm_bytes: int = 256 << 20  # a private, writable /dev/shm (multiprocessing, joblib, DataLoader workers)
    uid: int = NOBODY  # as root: become this user (gid nobody, no groups, no capability) before the command
    devices: list[tuple[str, str]] = field(default_factory=list)  # (node, /dev/name) kept usable: a pair's GPUs
    proc_ro: list[str] = field(default_factory=list)  # read-only over the fresh /proc (/proc/driver/nvidia)


def _under(path: str, folders: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in folders)


def bwrap_path() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed on this machine: {INSTALL_HINT}")
    return found


def setpriv_path() -> str:
    found = shutil.which("setpriv") or ("/usr/bin/setpriv" if os.path.exists("/usr/bin/setpriv") else None)
    if found is None:
        raise SandboxUnavailable("setpriv is missing (needed to drop root inside the sandbox): install it "
                                 "(Debian/Ubuntu: apt-get install util-linux)")
    return found


def command(view: View, cmd: list[str], extra_ro: tuple[str, ...] = ()) -> tuple[list[str], tuple[int, ...], str]:
    """(argv, file descriptors the child must inherit, a short description) for `cmd` inside `view`.
    Raises SandboxUnavailable when bwrap, setpriv (as root), libseccomp or (network on) slirp4netns is missing."""
    try:
        network = network_mode(view.network)
        tools = network_tools() if network == "on" else {}
    except NetworkUnavailable as exc:
        raise SandboxUnavailable(str(exc)) from None
    args = [bwrap_path()]
    made: set[str] = set()

    def parents(path: str) -> None:
        # bubblewrap would copy each parent's mode (a 0700 state folder would lock the sandbox user out)
        for parent in (str(p) for p in reversed(Path(path).parents) if str(p) != "/"):
            if parent not in made:
                made.add(parent)
                args.extend(["--perms", "0755", "--dir", parent])

    for path in (*SYSTEM_PATHS, *extra_ro, *view.ro):
        if os.path.lexists(path) and not (network == "on" and path == "/etc/resolv.conf"):
            parents(path)
            args.extend(["--ro-bind", path, path])
    for target, link in view.symlinks:
        if not _under(link, SYSTEM_PATHS):
            parents(link)
            args.extend(["--symlink", target, link])
    for path in view.tmpfs:
        args.extend(["--tmpfs", path])
    for path in view.ro_over:
        if os.path.lexists(path):
            args.extend(["--ro-bind", path, path])
    for path in view.rw:
        parents(path)
        args.extend(["--bind", path, path])
    for source, dest in view.rw_at:
        parents(dest)
        args.extend(["--bind", source, dest])
    args += ["--dev", "/dev", "--perms", "1777", "--size", str(view.shm_bytes), "--tmpfs", "/dev/shm",
             "--proc", "/proc", "--dir", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
             "--hostname", "sandbox", "--die-with-parent", "--new-session"]
    for node, dest in view.devices:  # exactly these device nodes, on top of bubblewrap's minimal /dev
        args.extend(["--dev-bind", node, dest])
    for path in view.proc_ro:
        if os.path.isdir(path):
            args.extend(["--ro-bind", path, path])
    how = "sandbox: bubblewrap"
    fds: list[int] = []
    if network == "off":
        args.append("--unshare-net")
        how += ", no network"
    elif network == "on":  # a namespace of its own, joined to the outside by netns.py; DNS by slirp4netns
        args.append("--unshare-net")
        dns_r, dns_w = os.pipe()
        os.write(dns_w, b"nameserver 10.0.2.3\n")
        os.close(dns_w)
        fds.append(dns_r)
        args += ["--perms", "0644", "--ro-bind-data", str(dns_r), "/etc/resolv.conf"]
        how += ", network: the outside only (slirp4netns; not this node)"
    else:
        how += ", network: the node's own (sandbox_network=host)"
    args += ["--chdir", view.cwd, "--remount-ro", "/"]
    try:
        fd = seccomp_filter_fd()
    except SandboxUnavailable:
        for opened in fds:
            os.close(opened)
        raise
    fds.append(fd)
    args += ["--seccomp", str(fd)]
    how += ", seccomp"
    if running_as_root():  # become an unprivileged user, with every capability gone, before the command starts
        args += ["--", setpriv_path(), f"--reuid={view.uid}", f"--regid={NOBODY}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        how += f", uid {view.uid}"
    else:
        args += ["--unshare-user", "--cap-drop", "ALL", "--"]
        how += ", user namespace"
    if network == "on":  # the launcher starts bubblewrap blocked, connects its namespace, then lets it run
        args = launcher(tools) + args
    return args + cmd, tuple(fds), how


@functools.lru_cache(maxsize=4)
def probe(network: str | bool = "on") -> str:
    """Set the sandbox up for real (same flags, `true` inside) once per process; return its description, or raise
    SandboxUnavailable with the one line that says what is missing."""
    true = shutil.which("true") or "/bin/true"
    argv, fds, how = command(View(network=network_mode(network)), [true])
    try:
        proc = subprocess.run(argv, pass_fds=fds, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap cannot be started: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        hint = why[-1] if why else f"exit {proc.returncode}"
        if hint.startswith("score-plugins: "):  # netns.py's own line: the network could not be set up
            raise SandboxUnavailable(hint[len("score-plugins: "):] + f" ({NETWORK_HINT})")
        raise SandboxUnavailable(f"bubblewrap cannot set up the sandbox here ({hint[:300]}); it needs user "
                                 "namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces) "
                                 "or root, and seccomp")
    return how


def python_view(python: str, view: View) -> None:
    """Make `python` (an environment's interpreter, a chain of symlinks to a base installation) runnable inside:
    each link outside the bound folders is recreated, and the base installation's prefix is bound (never a home)."""
    hops, real = symlink_chain(python)
    prefix = str(Path(real).parent.parent)
    for target, link in hops:
        if not _under(link, (*view.ro, *view.rw, prefix)):
            view.symlinks.append((target, link))
    if not _under(prefix, SYSTEM_PATHS):
        view.ro.append(prefix)


def symlink_chain(path: str) -> tuple[list[tuple[str, str]], str]:
    """The (target, link) hops from `path` to the file it finally names, and that file's real path."""
    hops = []
    current = path
    for _ in range(40):
        if not os.path.islink(current):
            break
        target = os.readlink(current)
        hops.append((target, current))
        current = target if os.path.isabs(target) else os.path.normpath(os.path.join(os.path.dirname(current), target))
    return hops, os.path.realpath(path)


# Variables a sandboxed process may inherit (site TLS and proxy settings, package indexes), never one holding a
# password (a URL with '@' stays out), never anything of ours.
PASS_ENV = ("LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SSL_CERT_FILE", "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
            "https_proxy", "no_proxy", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX",
            "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_PYTHON_DOWNLOADS", "UV_LINK_MODE", "CONDA_PKGS_DIRS",
            "UV_CACHE_DIR")


def clean_env(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """An allow-listed environment: none of the caller's credentials, database or SMTP URLs, or home."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ and "@" not in os.environ[k]}
    env.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "USER": "sandbox",
                "LOGNAME": "sandbox", "LANG": os.environ.get("LANG", "C.UTF-8")})
    env.update(extra or {})
    return env


def write_gitconfig(home: str) -> None:
    """`$HOME/.gitconfig` of a fresh home root made: the sandbox user may read repositories other users own (a
    git+file requirement, bound read-only); git's dubious-ownership check would refuse them, even for upload-pack."""
    fd = os.open(os.path.join(home, ".gitconfig"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("[safe]\n\tdirectory = *\n")


def give(path: str, uid: int) -> None:
    """Hand a folder root made (never one a sandboxed user could have planted: lstat, no symlink) to `uid`."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise SandboxUnavailable(f"{path} is not a folder")
    if running_as_root():
        os.lchown(path, uid, NOBODY)


def reclaim(path: str) -> None:
    """After a build as an unprivileged user: every file of `path` owned by root again, never through a symlink,
    and nothing group- or world-writable (later sandboxed users only read what was built)."""
    if not running_as_root():
        return
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, name) if name else dirpath
            try:
                info = os.lstat(p)
                os.lchown(p, 0, 0)
                if not stat.S_ISLNK(info.st_mode):
                    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (
                        os.O_DIRECTORY if stat.S_ISDIR(info.st_mode) else 0) | os.O_NONBLOCK) \
                        if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode) else None
                    if fd is not None:
                        try:
                            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o7022)
                        finally:
                            os.close(fd)
            except OSError:
                continue


# --- command line, for job scripts ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`sandbox.py exec --rw DIR ... --ro PATH ... [--cache[-merge] DIR] [--python PY] [--network on|off|host] --
    CMD...`: run CMD sandboxed as an unprivileged user with only the --rw folders writable (handed to that user for
    the run, and back to root after), shared caches through a layer of the run's own (pipeline/job/cachelayer.py),
    a clean environment, and the same filter as scoring. Exit 3 when the sandbox cannot be set up."""
    import argparse  # here, not at the top: every pair's two processes import this module and never call main

    parser = argparse.ArgumentParser(prog="sandbox.py")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exec")
    ex.add_argument("--rw", action="append", default=[])
    ex.add_argument("--ro", action="append", default=[])
    ex.add_argument("--cache", action="append", default=[],
                    help="a shared cache, seen through a writable layer of this run's own, which is thrown away")
    ex.add_argument("--cache-merge", action="append", default=[],
                    help="the same, and what the command added is merged into the shared cache afterwards: only for "
                         "a command that runs no submitter code (uv with --no-build)")
    ex.add_argument("--python", action="append", default=[], help="an interpreter to make runnable inside")
    ex.add_argument("--setenv", action="append", default=[], help="NAME=value given to the command")
    ex.add_argument("--no-network", action="store_true", help="the same as --network off")
    ex.add_argument("--network", choices=NETWORK_MODES, default="on",
                    help="on: the outside, not this node (default); off: loopback only; host: the node's own")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    pr = sub.add_parser("probe")
    pr.add_argument("--network", choices=NETWORK_MODES, default="on")
    args = parser.parse_args(argv)
    try:
        if args.command == "probe":
            print(probe(args.network))
            return 0
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        rw = [os.path.abspath(p) for p in args.rw]
        for path in rw:
            os.makedirs(path, exist_ok=True)
            give(path, NOBODY)
        if rw and not os.path.lexists(os.path.join(rw[0], ".gitconfig")):
            write_gitconfig(rw[0])
        view = View(ro=[os.path.abspath(p) for p in args.ro], rw=rw, cwd=rw[0] if rw else "/",
                    network="off" if args.no_network else args.network)
        for python in args.python:
            python_view(python, view)
    except SandboxUnavailable as exc:
        print(f"score-plugins: {exc}", file=sys.stderr)
        return 3
    with contextlib.ExitStack() as layers:
        try:
            merged = []
            for path, trusted in [*((p, False) for p in args.cache), *((p, True) for p in args.cache_merge)]:
                layer = layers.enter_context(CacheLayer(path, uid=NOBODY, trusted=trusted))
                view.rw_at.append((layer.path, layer.shared))
                merged += [layer] if trusted else []
            argv_, fds, how = command(view, cmd)
        except SandboxUnavailable as exc:
            print(f"score-plugins: {exc}", file=sys.stderr)
            return 3
        except OSError as exc:  # e.g. a cache on NFS with root_squash: root cannot own (so protect) its files
            print(f"score-plugins: a shared cache cannot be made read-only to the build: {exc}; nothing was run",
                  file=sys.stderr)
            return 3
        print(f"score-plugins: {how}" + (", shared caches read-only (a layer of this step's own)"
                                         if view.rw_at else ""), file=sys.stderr)
        env = clean_env(rw[0] if rw else "/tmp", dict(item.split("=", 1) for item in args.setenv))
        try:
            code = subprocess.run(argv_, pass_fds=fds, env=env, preexec_fn=Limits().preexec()).returncode
        finally:
            for fd in fds:
                os.close(fd)
            for path in rw:
                reclaim(path)
        for layer in merged:  # only uv ran (no build): what it fetched joins the shared cache, root's
            layer.merge()
        return code


if __name__ == "__main__":
    sys.exit(main())
