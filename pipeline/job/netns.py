"""The outside, not the node: user-mode networking for one sandboxed process (`sandbox_network = "on"`).

bubblewrap gives the process a network namespace of its own (`--unshare-net`); this launcher starts it blocked
(`--block-fd`), connects that namespace to the outside through slirp4netns (a user-mode TCP/IP stack: the
process's packets become ordinary sockets of slirp4netns on the node), closes the node to it, then lets it run:

- `--disable-host-loopback`: the gateway address does not lead to the node's 127.0.0.1 (its database, SMTP...);
- an `unreachable` route in the namespace for every address of the node (read from /proc/net/fib_trie) and for
  link-local 169.254.0.0/16 (a cloud's metadata service): a socket to one of them fails at once, before any
  packet reaches slirp4netns. The sandboxed process has no capability, so it cannot change those routes;
- no IPv6 inside; DNS through slirp4netns' own forwarder (the sandbox's resolv.conf names 10.0.2.3).

It waits for bubblewrap, ends slirp4netns with it (its exit pipe closes when this process ends, however it
ends) and exits as bubblewrap did. Every descriptor it was started with goes on to bubblewrap (and is closed here).
Standard library only, run as a file: `python -I -S netns.py ... -- bwrap ...`.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

NETWORK_MODES = ("on", "off", "host")
NETWORK_HINT = ("sandbox_network = \"on\" gives plugins the outside but not this node: install it (Debian/Ubuntu: "
                "apt-get install slirp4netns iproute2 util-linux), or set sandbox_network = \"host\" (plugins "
                "share the node's own network, its local services included; named in every record) or \"off\"")


class NetworkUnavailable(Exception):
    """What `sandbox_network = "on"` needs is missing (job/sandbox.py raises it as SandboxUnavailable)."""


def network_tools() -> dict[str, str]:
    """The programs `sandbox_network = "on"` needs: slirp4netns (the user-mode network), nsenter and ip (to
    close the node's addresses inside the sandbox's namespace). NetworkUnavailable names what is missing."""
    found = {}
    for name, package in (("slirp4netns", "slirp4netns"), ("nsenter", "util-linux"), ("ip", "iproute2")):
        path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}", f"/sbin/{name}")
                                           if os.access(p, os.X_OK)), None)
        if path is None:
            raise NetworkUnavailable(f"{name} ({package}) is not installed on this machine: {NETWORK_HINT}")
        found[name] = path
    return found


def network_mode(value: object) -> str:
    """on / off / host; True and False (the former boolean) read as on and off."""
    mode = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if mode not in NETWORK_MODES:
        raise NetworkUnavailable(f"sandbox network {value!r} is not one of on, off, host")
    return str(mode)


def launcher(tools: dict[str, str]) -> list[str]:
    """The command that runs bubblewrap's command line (appended) through this module."""
    return [sys.executable or "python3", "-I", "-S", os.path.abspath(__file__), "--slirp4netns",
            tools["slirp4netns"], "--nsenter", tools["nsenter"], "--ip", tools["ip"], "--parent", str(os.getpid()),
            "--"]


PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(parent: int | None) -> None:
    """What bubblewrap's `--die-with-parent` does, for this launcher: the worker that starts it runs each side in a
    session of its own, so a cancelled task's SIGKILL to its process group ends the worker but not this launcher,
    which would go on waiting for its sandbox, and its sandbox (whose parent it is) would go on running. The kernel
    kills it when its parent dies; a parent gone before the call (`parent`: the pid the command line names) ends it
    at once."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


LINK_LOCAL = "169.254.0.0/16"
NS_GET_USERNS = 0xB701  # ioctl on a namespace: its owning user namespace
TAP = "tap0"
READY_SECONDS = 30


def node_addresses(fib_trie: str = "/proc/net/fib_trie") -> list[str]:
    """Every IPv4 address of this node (its own network namespace), loopback ones left out (the sandbox's
    127.0.0.1 is its own)."""
    found: list[str] = []
    last = ""
    with open(fib_trie, encoding="ascii", errors="replace") as f:
        for line in f:
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif text.startswith("/32 host LOCAL") and last and not last.startswith("127."):
                if last not in found:
                    found.append(last)
    return found


def inherited_fds() -> tuple[int, ...]:
    """The descriptors this process was started with, past stdin, stdout and stderr."""
    found = []
    for fd in sorted(map(int, os.listdir("/proc/self/fd"))):  # the listing's own descriptor is closed by now
        try:
            if fd > 2 and os.fstat(fd) is not None:
                found.append(fd)
        except OSError:
            pass
    return tuple(found)


def _child_pid(info_fd: int) -> int | None:
    """The sandboxed process's pid, from bubblewrap's --info-fd (None: bubblewrap failed before it started)."""
    data = b""
    while True:
        chunk = os.read(info_fd, 4096)
        if not chunk:
            return None
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError):
            continue


def _mapped(pid: int, seconds: float = READY_SECONDS) -> bool:
    """Whether bubblewrap's child has mapped its user namespace (it writes the maps itself once it runs; the gid
    map last): only then can slirp4netns join it. False when that never comes, or the child is gone."""
    deadline = time.monotonic() + seconds
    delay = 0.0005
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/gid_map", encoding="ascii") as f:
                if f.read().strip():
                    return True
        except OSError:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return False


def _connect(pid: int, opts: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """Join the sandbox's network namespace to the outside and close the node to it; (slirp4netns, the descriptor
    whose closing ends it). Raises NetworkUnavailable. The order keeps any partial set-up closed: the node's
    addresses are made unreachable first, the default route (the way out) comes last."""
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fds = [net]
    userns: list[str] = []
    try:
        if os.getuid() != 0:  # the namespace belongs to bubblewrap's first user namespace, which the child leaves
            if not _mapped(pid):  # for a nested one: found from the network namespace itself (NS_GET_USERNS)
                raise NetworkUnavailable("bubblewrap's user namespace was not set up in time")
            owner = fcntl.ioctl(net, NS_GET_USERNS)
            fds.append(owner)
            userns = [f"/proc/self/fd/{owner}"]
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        try:
            slirp = subprocess.Popen(
                [opts["--slirp4netns"], "--mtu=65520", "--disable-host-loopback", "--enable-seccomp",
                 # its own mount namespace, caps dropped: as root; as another user it is unprivileged already (and
                 # its sandbox cannot be made from inside bubblewrap's user namespace)
                 *([] if userns else ["--enable-sandbox"]), f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
                 *[f"--userns-path={path}" for path in userns], "--netns-type=path", f"/proc/self/fd/{net}", TAP],
                pass_fds=(ready_w, exit_r, *fds), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        except OSError as exc:
            os.close(exit_w)
            raise NetworkUnavailable(f"slirp4netns cannot be started: {exc}") from None
        finally:
            os.close(ready_w)
            os.close(exit_r)
        try:
            ready, _, _ = select.select([ready_r], [], [], READY_SECONDS)
            if not ready or os.read(ready_r, 1) != b"1":
                raise NetworkUnavailable("slirp4netns could not connect the sandbox's network namespace to the "
                                         "outside")
            # slirp4netns' own --configure would also bring `lo` up, racing bubblewrap's set-up of it: the tap
            # device is configured here instead (slirp4netns' default addresses), and `lo` is left to bubblewrap
            batch = ("".join(f"route add unreachable {a}/32\n" for a in node_addresses())
                     + f"route add unreachable {LINK_LOCAL}\n"
                     + f"link set {TAP} mtu 65520\nlink set {TAP} up\naddr add 10.0.2.100/24 dev {TAP}\n"
                     + f"route add default via 10.0.2.2 dev {TAP}\n")
            enter = [opts["--nsenter"], f"--net=/proc/self/fd/{net}",
                     *[f"--user={path}" for path in userns], *(["--preserve-credentials"] if userns else []),
                     opts["--ip"], "-batch", "-"]
            closed = subprocess.run(enter, input=batch.encode(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    pass_fds=tuple(fds))
            if closed.returncode != 0:
                why = closed.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [
                    f"exit {closed.returncode}"]
                raise NetworkUnavailable(f"the node's addresses cannot be closed to the sandbox ({why[0][:200]})")
        except BaseException:
            slirp.kill()
            os.close(exit_w)
            raise
        finally:
            os.close(ready_r)
        return slirp, exit_w
    finally:
        for fd in fds:
            os.close(fd)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    options, bwrap = argv[:split], argv[split + 1:]
    opts = dict(zip(options[::2], options[1::2]))
    die_with_parent(int(opts["--parent"]) if "--parent" in opts else None)
    keep = inherited_fds()  # what the caller passed (the seccomp filter, the report pipe...) goes on to bubblewrap
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    proc = subprocess.Popen([bwrap[0], "--info-fd", str(info_w), "--block-fd", str(block_r), *bwrap[1:]],
                            pass_fds=(*keep, info_w, block_r))
    for fd in (*keep, info_w, block_r):
        os.close(fd)
    pid = _child_pid(info_r)
    os.close(info_r)
    if pid is None:  # bubblewrap said why on stderr
        return proc.wait()
    try:
        slirp, exit_w = _connect(pid, opts)
    except BaseException as exc:
        # the sandbox must never start half-connected: bubblewrap's child reads the end of the block pipe as "go",
        # so it is killed (with its PID namespace) before this process ends
        for victim in (pid, proc.pid):
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        reason = str(exc) if isinstance(exc, NetworkUnavailable) else f"the network could not be set up ({exc!r})"
        print(f"score-plugins: {reason}; nothing was run", file=sys.stderr, flush=True)
        return 3
    os.write(block_w, b"1")
    os.close(block_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # passed on: bubblewrap ends its sandbox
        signal.signal(sig, lambda n, _frame: proc.send_signal(n))
    code = proc.wait()
    slirp.kill()  # its namespace is gone with the sandbox: nothing to wait for (its exit pipe closes with us)
    os.close(exit_w)
    if code < 0:  # killed by a signal: end the same way, so the caller reads the same status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
