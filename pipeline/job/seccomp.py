"""The sandbox's system-call filter, built with libseccomp through ctypes, and the one error every part of the
sandbox raises when it cannot be set up (`SandboxUnavailable`, here because this is the sandbox's lowest module).
Standard library only."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os


class SandboxUnavailable(Exception):
    """The sandbox cannot be set up on this machine; the message is one line saying what is missing and how to fix it."""


# --- seccomp, built with libseccomp (through ctypes) --------------------------------------------------------------

# Calls a sandboxed process never needs: mounts, namespaces, tracing, kernel modules and kexec, keyrings, bpf,
# userfaultfd, other processes' memory, io_uring (its own syscall-free interface would bypass this filter).
DENIED_CALLS = (
    "mount", "umount2", "pivot_root", "chroot", "swapon", "swapoff", "reboot", "sethostname", "setdomainname",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "add_key", "request_key",
    "keyctl", "unshare", "setns", "ptrace", "perf_event_open", "open_by_handle_at", "name_to_handle_at",
    "process_vm_readv", "process_vm_writev", "bpf", "userfaultfd", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "acct", "quotactl", "lookup_dcookie", "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)
# What CUDA's driver and runtime (PyTorch, TensorFlow, JAX; NCCL within a node) call on a GPU pair's device nodes
# and memory, which the filter must never refuse (a denied call would look like a broken GPU): device ioctls,
# mapping device, managed and pinned memory, NUMA placement, threads, event and memory file descriptors, and
# the file-descriptor passing of CUDA IPC. tests/test_gpus.py checks none of them is denied.
CUDA_CALLS = ("ioctl", "mmap", "munmap", "mprotect", "mremap", "madvise", "mlock", "munlock", "mlockall", "mbind",
              "get_mempolicy", "set_mempolicy", "migrate_pages", "move_pages", "sched_setaffinity",
              "sched_getaffinity", "eventfd2", "memfd_create", "futex", "clone", "openat", "ppoll", "poll",
              "epoll_wait", "prctl", "sendmsg", "recvmsg", "pidfd_open", "pidfd_getfd", "getrandom")
ENOSYS_CALLS = ("clone3",)  # its flags sit in memory a filter cannot read: glibc falls back to clone, checked below
NEW_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*: the architectures cluster nodes have
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7


def SCMP_ACT_ERRNO(code: int) -> int:  # noqa: N802 - libseccomp's macro
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _libseccomp() -> ctypes.CDLL:
    try:  # its soname through the dynamic loader first: find_library runs `ldconfig -p` (a process per task)
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        lib = None
    try:
        lib = lib or ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    except OSError:
        raise SandboxUnavailable("libseccomp cannot be loaded: install it (Debian/Ubuntu: apt-get install "
                                 "libseccomp2; RHEL/Fedora: dnf install libseccomp)") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def seccomp_filter_fd() -> int:
    """A memfd holding the BPF program bwrap loads with `--seccomp FD` (positioned at 0). The caller closes it."""
    program = memoryview(seccomp_program())
    fd = os.memfd_create("score-plugins-seccomp", os.MFD_ALLOW_SEALING)
    while program:
        program = program[os.write(fd, program):]
    # sealed: nothing holding the descriptor (bwrap, or anything it leaks to) can change the filter it loads
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@functools.lru_cache(maxsize=1)
def seccomp_program() -> bytes:
    """The filter, assembled by libseccomp once per process (a pair's two sides and every pair of a task load
    the same program; a failure is not cached, so it is raised again at the next use)."""
    fd = _assemble_seccomp()
    try:
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def _assemble_seccomp() -> int:
    lib = _libseccomp()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SandboxUnavailable("libseccomp cannot create a filter (seccomp_init failed)")
    try:
        for arch in ARCHES.values():
            rc = lib.seccomp_arch_add(ctx, arch)
            if rc not in (0, -errno.EEXIST):
                raise SandboxUnavailable(f"libseccomp cannot add architecture {arch:#x} ({os.strerror(-rc)})")

        def rule(action: int, name: str, *cmps: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp (an older one): nothing to filter
                return
            array = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
            if rc != 0:
                raise SandboxUnavailable(f"libseccomp refused the rule for {name} ({os.strerror(-rc)})")

        for name in DENIED_CALLS:
            rule(SCMP_ACT_ERRNO(errno.EPERM), name)
        for name in ENOSYS_CALLS:
            rule(SCMP_ACT_ERRNO(errno.ENOSYS), name)
        for flag in NEW_NAMESPACES:  # clone with any new-namespace flag (rules for one call are OR-ed)
            rule(SCMP_ACT_ERRNO(errno.EPERM), "clone", _ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        fd = os.memfd_create("score-plugins-seccomp", 0)
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc != 0:
            os.close(fd)
            raise SandboxUnavailable(f"libseccomp cannot export the filter ({os.strerror(-rc)})")
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    finally:
        lib.seccomp_release(ctx)
