#!/usr/bin/env python3
"""The only code that runs inside a scoring job: score pairs, write results to the spool.

Standard library only, copied into every run bundle, so a job needs neither our
package nor any credential. `run-task` (under the base interpreter) loops over one
array task's pairs and runs each in a child process under the plugins' environment
(`score-pair`), with a time limit, a clean environment and a capped log. Each
result, score or error with its stage, is written atomically as
`<spool>/<pair key>.json`; the coordinator ingests the spool into the database.
"""

from __future__ import annotations

import argparse
import json
import re
import math
import numbers
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import MISSING, asdict, dataclass, field, fields
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

SCHEMA = 1  # of a result file in the spool (docs/spool.md)
MANIFEST_SCHEMA = 1


class ManifestError(ValueError):
    """A manifest this worker cannot read: another schema, a missing or unknown field, a wrong type."""


@dataclass
class Manifest:
    """A run's manifest (`manifest.json`): written by the coordinator (`pipeline.bundle`), read here in the
    job. One typed schema for both sides; a field added on one side and not the other fails loudly."""

    run_id: str
    commit: str
    domain_root: str
    executor: str
    code_dir: str
    spool_dir: str
    log_dir: str
    worker: str
    env_root: str
    env_mode: str
    env_backend: str
    state_dir: str
    created_at: str
    tasks: list  # [{"index": int, "lock": {...}, "pairs": [{"key", "model", "benchmark", ...}]}]
    pair_timeout: int = 1800
    cpus_per_task: int = 1
    array_throttle: int = 0
    sandbox: str = "auto"  # auto | bwrap | off
    mem_limit_bytes: Optional[int] = None  # the plugin's data limit (local executor; Slurm enforces its own)
    shared_cache: Optional[str] = None
    plugin_env: dict = field(default_factory=dict)
    sandbox_extra_paths: list = field(default_factory=list)
    uv: str = ""  # installs what a dynamic setup.py asks for, inside the job's sandbox
    schema: int = MANIFEST_SCHEMA
    path: str = field(default="", compare=False)  # where it was read from; never written

    def to_json(self) -> str:
        data = asdict(self)
        del data["path"]
        return json.dumps(data, indent=1)

    @classmethod
    def from_dict(cls, data: dict, path: str = "") -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("a manifest is a JSON object")
        if data.get("schema") != MANIFEST_SCHEMA:
            raise ManifestError(f"manifest schema {data.get('schema')!r}; this worker reads schema "
                                f"{MANIFEST_SCHEMA} (render the bundle again)")
        known = {f.name: f for f in fields(cls) if f.name != "path"}
        unknown = sorted(set(data) - set(known))
        missing = sorted(n for n, f in known.items() if n not in data and f.default is MISSING
                         and f.default_factory is MISSING)
        if unknown or missing:
            raise ManifestError("manifest fields " + "; ".join(
                x for x in (f"unknown: {', '.join(unknown)}" if unknown else "",
                            f"missing: {', '.join(missing)}" if missing else "") if x))
        for name, value in data.items():
            kinds = _MANIFEST_TYPES[str(known[name].type)]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ManifestError(f"manifest field {name}: {type(value).__name__} is not {known[name].type}")
        return cls(**data, path=path)

    @classmethod
    def load(cls, path: "str | Path") -> "Manifest":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), str(Path(path).resolve()))


_MANIFEST_TYPES = {"str": (str,), "int": (int,), "list": (list,), "dict": (dict,),
                   "Optional[int]": (int, type(None)), "Optional[str]": (str, type(None))}
LOG_CAP_BYTES = 2_000_000  # a pair's log beyond this keeps its head and tail
TAIL_CHARS = 3000
CHILD_ENV_KEEP = ("LANG", "LC_ALL", "TZ")


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, data: dict) -> None:
    """Temporary file in the same folder, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


SPOOL_INDEX = ".index"  # the spool's append-only list of finished result names (docs/spool.md)


def announce(spool: Path, name: str) -> None:
    """Append a finished result's name to the spool's index, so that the coordinator reads what is new instead
    of listing the whole folder every cycle. One short O_APPEND write; best effort: a line lost (e.g. on NFS)
    only delays that result to the coordinator's final listing of the folder."""
    try:
        fd = os.open(spool / SPOOL_INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name}\n".encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        print(f"[score-plugins] cannot announce {name} in the spool index: {exc}", file=sys.stderr)


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    """The last `chars` characters of a log, decoded leniently (plugins may print any bytes)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\x00", "")
    return text[-chars:]


def cap_log(path: Path, cap: int = LOG_CAP_BYTES) -> None:
    """Keep a huge log readable: its first and last `cap/2` bytes around a marker."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size <= cap:
        return
    half = cap // 2
    with open(path, "rb") as f:
        head = f.read(half)
        f.seek(size - half)
        end = f.read()
    marker = f"\n[... {size - 2 * half} bytes cut by score-plugins ...]\n".encode()
    tmp = path.with_suffix(".capped")
    tmp.write_bytes(head + marker + end)
    os.replace(tmp, path)


def job_context() -> dict:
    env = os.environ
    index = env.get("SLURM_ARRAY_TASK_ID")
    return {
        "job_id": env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID") or "",
        "array_index": int(index) if index and index.isdigit() else None,
        "node": env.get("SLURMD_NODENAME") or socket.gethostname(),
        "attempt": int(env.get("SLURM_RESTART_COUNT") or 0) + 1,
    }


def base_result(manifest: Manifest, pair: dict) -> dict:
    keys = ("key", "model", "benchmark", "model_plugin", "benchmark_plugin", "model_code_hash",
            "benchmark_code_hash", "lock_hash", "env_hash", "submitters", "model_owner", "benchmark_owner")
    result = {k: pair.get(k) for k in keys}
    result["pair_key"] = result.pop("key")
    result.update({"schema": SCHEMA, "run_id": manifest.run_id, "commit": manifest.commit,
                   "domain": manifest.domain_root, "executor": manifest.executor})
    result.update(job_context())
    return result


def child_env(manifest: Manifest, workdir: Path) -> dict:
    """Everything the plugin process may see: no credentials, no inherited secrets, nothing of ours."""
    env = {k: os.environ[k] for k in CHILD_ENV_KEEP if k in os.environ}
    env.update({
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONPATH": manifest.code_dir + (f":{workdir / 'site'}" if (workdir / "site").is_dir() else ""),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",  # the plugin's prints land in the log before its traceback, in order
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": str(manifest.cpus_per_task),
        "OPENBLAS_NUM_THREADS": str(manifest.cpus_per_task),
        "MKL_NUM_THREADS": str(manifest.cpus_per_task),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    })
    # site CPU workarounds and the site's TLS and proxy settings (paths and hosts, not secrets): plugins may
    # download their weights, and an installation inside the job must reach the index
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
              "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if k in os.environ and "@" not in os.environ[k]:  # a proxy URL with a password stays out of reach
            env[k] = os.environ[k]
    cache = manifest.shared_cache
    if cache:  # data, weights and activations survive the pair (Brain-Score's and the usual libraries' homes)
        for name, sub in CACHE_HOMES.items():
            env[name] = str(Path(cache) / sub)
    env.update(manifest.plugin_env)
    return env


CACHE_HOMES = {
    "BRAINIO_HOME": "brainio", "BRAINSCORE_HOME": "brainscore", "RESULTCACHING_HOME": "result_caching",
    "TORCH_HOME": "torch", "HF_HOME": "huggingface", "XDG_CACHE_HOME": "xdg", "KERAS_HOME": "keras",
}


# Read-only system paths the plugin process sees (when present); everything else of the node is absent.
SYSTEM_PATHS = (
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/sys",
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts", "/etc/host.conf",
    "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/timezone",
    "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/mime.types",
    "/etc/fonts", "/etc/os-release", "/etc/machine-id",
)
NOBODY = 65534


def sandbox_identity() -> tuple[int, int] | None:
    """(uid, gid) the plugin process runs as when the worker is root (nobody), else None (already unprivileged)."""
    return (NOBODY, NOBODY) if os.getuid() == 0 else None


def sandbox_prepare(manifest: Manifest, workdir: Path) -> None:
    """Give the unprivileged plugin user its work folder and the shared cache (nothing else is writable)."""
    identity = sandbox_identity() if manifest.sandbox != "off" and shutil.which("bwrap") \
        else None
    cache = manifest.shared_cache
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
    if identity is None:
        return
    os.chown(workdir, *identity)
    if cache and os.stat(cache).st_uid == 0:
        os.chown(cache, *identity)


def seccomp_program() -> bytes | None:
    """A seccomp BPF filter (x86-64) refusing what a plugin never needs: mount and friends, ptrace, kexec,
    module loading, namespaces, keyrings, bpf, userfaultfd, process_vm_*; other ABIs are killed."""
    import platform
    import struct

    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    allow, kill = 0x7FFF0000, 0x80000000
    denied = (101, 155, 161, 165, 166, 167, 168, 169, 170, 171, 175, 176, 246, 248, 249, 250, 272, 298, 304, 308,
              310, 311, 313, 320, 321, 323, 428, 429, 430, 431, 432, 433, 442)
    new_namespaces = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
    prog: list[tuple[int, int, int, int]] = []

    def ins(code: int, jt: int = 0, jf: int = 0, k: int = 0) -> None:
        prog.append((code, jt, jf, k))

    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    # Layout: header, one test per denied call, the clone checks, then the return blocks at the end.
    n_tests = len(denied)
    ins(ld_abs, k=4)                                   # arch
    ins(jeq, 1, 0, 0xC000003E)                        # x86-64? skip the kill
    ins(ret, k=kill)
    ins(ld_abs, k=0)                                   # syscall number
    tail_from = 4 + 1 + 1 + n_tests + 1 + 3           # index of the first return block (computed below)
    # the return blocks: [allow, eperm, enosys]
    def to(target: int) -> int:
        return target - (len(prog) + 1)

    allow_at, eperm_at, enosys_at = tail_from, tail_from + 1, tail_from + 2
    ins(jge, to(eperm_at), 0, 0x40000000)             # x32 ABI
    ins(jeq, to(enosys_at), 0, 435)                    # clone3: glibc falls back to clone
    for nr in denied:
        ins(jeq, to(eperm_at), 0, nr)
    ins(jeq, 0, to(allow_at), 56)                      # clone: look at its flags
    ins(ld_abs, k=16)                                  # args[0], low 32 bits
    ins(jset, to(eperm_at), 0, new_namespaces)
    ins(ret, k=allow)
    assert len(prog) == allow_at
    ins(ret, k=allow)
    ins(ret, k=eperm)
    ins(ret, k=enosys)
    return b"".join(struct.pack("<HBBI", *i) for i in prog)


def sandboxed(manifest: Manifest, pair: dict, workdir: Path, cmd: list[str], env_python: str | None = None,
              extra_ro: tuple[str, ...] = (), cwd: Path | None = None) -> tuple[list[str], str, tuple[int, ...]]:
    """Wrap the plugin process in bubblewrap, as an attacker's: an empty root with only the system folders, its
    environment and its base interpreter, the domain package with the pair's own plugin folders, the worker
    and its manifest (all read-only), its work folder and the shared cache (read-write); its own PID, IPC and
    UTS namespaces; a dedicated unprivileged user with no capability when started as root; no_new_privs and
    a seccomp filter. Returns (argv, what was done, file descriptors the child must inherit)."""
    mode = manifest.sandbox
    bwrap = shutil.which("bwrap") if mode != "off" else None
    if bwrap is None:
        if mode == "bwrap":
            raise StageError("import", "sandbox=bwrap but bubblewrap (bwrap) is not installed on this node")
        return cmd, "no sandbox" + (" (bubblewrap not installed)" if mode == "auto" else " (sandbox=off)"), ()
    code = Path(manifest.code_dir)
    root = code / manifest.domain_root
    env_dir = Path(env_python_dir(env_python or cmd[0]))
    args = [bwrap]
    made: set[str] = set()

    def parents(path: str) -> None:
        # bubblewrap would copy each parent's mode (a 0700 state folder would lock the plugin user out)
        for parent in (str(p) for p in reversed(Path(path).parents) if str(p) != "/"):
            if parent not in made:
                made.add(parent)
                args.extend(["--perms", "0755", "--dir", parent])

    def bind(kind: str, path: str) -> None:
        parents(path)
        args.extend([kind, path, path])

    for path in (*SYSTEM_PATHS, *(manifest.sandbox_extra_paths), *extra_ro):
        if os.path.lexists(path):
            bind("--ro-bind", path)
    args += ["--dev", "/dev", "--proc", "/proc", "--dir", "/tmp", "--unshare-pid", "--unshare-ipc",
             "--unshare-uts", "--hostname", "sandbox", "--die-with-parent", "--new-session"]
    bind("--ro-bind", str(env_dir))
    # the environment's interpreter is a chain of symlinks to a base installation: recreate each link that
    # lies outside the folders bound here, and bind the base installation's prefix (never its whole home)
    links, real_python = symlink_chain(str(env_dir / "bin" / "python"))
    prefix = str(Path(real_python).parent.parent)
    for target, link in links:
        if not link.startswith(str(env_dir) + "/") and not link.startswith(prefix + "/") and \
                not any(link == p or link.startswith(p + "/") for p in SYSTEM_PATHS):
            parents(link)
            args.extend(["--symlink", target, link])
    if not any(prefix == p or prefix.startswith(p + "/") for p in SYSTEM_PATHS):
        bind("--ro-bind", prefix)

    bind("--ro-bind", str(code))
    # Other plugins' folders are hidden; the domain package stays whole: its __init__.py files, helpers and
    # every file directly in a type folder (`benchmarks/__init__.py` defines BenchmarkBase in Brain-Score).
    for plugin_type in ("models", "benchmarks", "data", "metrics"):
        folder = root / plugin_type
        if folder.is_dir() and not folder.is_symlink():
            args += ["--tmpfs", str(folder)]
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and not entry.is_symlink():
                    args += ["--ro-bind", str(entry), str(entry)]
    for folder in pair.get("folders") or [f"models/{pair['model_plugin']}", f"benchmarks/{pair['benchmark_plugin']}"]:
        path = root / folder
        if path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for path in (manifest.path, manifest.worker):
        bind("--ro-bind", path)
    cache = manifest.shared_cache
    if cache and Path(cache).is_dir():
        bind("--bind", cache)
    bind("--bind", str(workdir))
    args += ["--chdir", str(cwd or workdir), "--remount-ro", "/"]
    fds: tuple[int, ...] = ()
    program = seccomp_program()
    how = "sandbox: bubblewrap"
    if program is not None:
        fd = os.memfd_create("score-plugins-seccomp", 0)
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
        args += ["--seccomp", str(fd)]
        fds = (fd,)
        how += ", seccomp"
    identity = sandbox_identity()
    if identity is None:
        args += ["--unshare-user", "--cap-drop", "ALL", "--"]
        how += ", user namespace"
    else:  # root: become a dedicated unprivileged user, with every capability gone, before the plugin starts
        uid, gid = identity
        args += ["--", shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        how += f", uid {uid}"
    return args + cmd, how, fds


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


def child_setup(manifest: Manifest):  # noqa: ANN201 - a preexec function or None
    """Limits applied in the child before it starts (see memory_limit)."""
    return memory_limit(manifest.mem_limit_bytes)


def memory_limit(limit: int | None):  # noqa: ANN201 - a preexec function or None
    """Where no scheduler enforces memory (the local executor), cap the plugin's data segment: an
    allocation past it raises MemoryError in the plugin instead of exhausting the machine."""
    if not limit:
        return None

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


def env_python_dir(python: str) -> str:
    """The environment folder of an environment's interpreter (<env>/bin/python -> <env>)."""
    return str(Path(python).parent.parent)


def pair_manifest(manifest: Manifest, pair: dict) -> Manifest:
    """The manifest as one pair's process needs it: this pair's entry only. A run of 10,000 pairs has a manifest
    of megabytes; read once per pair, it made a run's cost grow with the square of its size. Written beside the
    run's manifest (root-owned, read-only to the plugin, bound read-only into the sandbox like it)."""
    folder = Path(manifest.path).parent / ".pair-manifests"
    folder.mkdir(mode=0o755, exist_ok=True)
    own = dc_replace(manifest, tasks=[{"index": 0, "pairs": [pair]}])
    path = folder / f"{pair['key']}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(own.to_json(), encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    own.path = str(path)
    return own


def run_pair(manifest: Manifest, pair: dict, env_python: str, log: Path) -> dict:
    """Score one pair in a child process; whatever happens, return a result dict.

    The child reports through a pipe this process owns (stages, then one result), never through a file
    in a folder the plugin can write: nothing it could plant there (a symlink, a FIFO, a forged result)
    is ever opened. Every message is size-capped and checked against a schema (`check_report`).
    """
    result = base_result(manifest, pair)
    started = time.time()
    result["started_at"] = now()
    result["log_path"] = str(log)
    timeout = int(manifest.pair_timeout)
    with tempfile.TemporaryDirectory(prefix="pair-") as tmp:
        workdir = Path(tmp)
        sandbox_prepare(manifest, workdir)
        installed = install_in_job(manifest, pair, env_python, workdir, log) if pair.get("setup_in_job") else None
        if installed is not None:
            result["installed_in_job"] = installed.get("installed")
        read_fd, write_fd = os.pipe()
        own = pair_manifest(manifest, pair)
        cmd = [env_python, manifest.worker, "score-pair", "--manifest", own.path,
               "--pair", pair["key"], "--report-fd", str(write_fd)]
        fds: tuple[int, ...] = ()
        try:
            cmd, how, fds = sandboxed(own, pair, workdir, cmd)
        except StageError as exc:
            cmd, how = [], exc.reason
        reader = ReportReader(read_fd)
        failure: dict | None = None
        with open(log, "ab") as logf:
            logf.write(f"[score-plugins] {now()} scoring {pair['model']} on {pair['benchmark']} ({how})\n".encode())
            logf.flush()
            proc = None
            try:
                if not cmd:
                    raise OSError(how)
                proc = subprocess.Popen(cmd, cwd=workdir, env=child_env(manifest, workdir), stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                        pass_fds=(write_fd, *fds), preexec_fn=child_setup(manifest))
            except OSError as exc:
                failure = {"state": "FAILED", "stage": "env_build", "reason": f"cannot start {env_python}: {exc}"}
            finally:
                for fd in (write_fd, *fds):
                    os.close(fd)
            reader.start()
            if installed is not None and installed.get("failure"):
                if proc is not None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    proc = None
                failure = installed["failure"]
            if proc is not None:
                code, usage, timed_out = wait_with_usage(proc, timeout)
                reader.join(REPORT_DRAIN_SECONDS)
                result["max_rss_bytes"] = int(usage.ru_maxrss) * 1024 if usage else None
                stage, reported, problem = reader.outcome()
                if timed_out:
                    failure = {"state": "TIMEOUT", "stage": stage,
                               "reason": f"pair exceeded its time limit of {timeout} s and was stopped"}
                else:
                    failure = _child_outcome(code, stage, reported, problem, result)
            reader.close()
        cap_log(log)
        Path(own.path).unlink(missing_ok=True)
    result["ended_at"] = now()
    result["elapsed_seconds"] = round(time.time() - started, 3)
    if failure:
        result.update({"status": "error", **failure, "log_tail": tail(log)})
    else:
        result.update({"status": "ok", "state": "COMPLETED", "stage": None, "reason": None})
    return result


STAGES = ("env_build", "import", "score", "persist")
SETUP_READER = r'''
import json, os, sys, types
try:
    import setuptools
except ImportError:  # the locked environment need not have setuptools: a stand-in that only listens
    setuptools = types.ModuleType("setuptools")
    setuptools.find_packages = lambda *args, **kwargs: []
    setuptools.find_namespace_packages = setuptools.find_packages
    sys.modules["setuptools"] = setuptools
found = {}
def capture(**kwargs):
    found.update(kwargs)
setuptools.setup = capture
try:
    import distutils.core
    distutils.core.setup = capture
except Exception:
    pass
sys.argv = ["setup.py", "egg_info"]
exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__name__": "__main__", "__file__": "setup.py"})
requires = found.get("install_requires") or []
requires = [requires] if isinstance(requires, str) else list(requires)
print("SCORE_PLUGINS_REQUIRES " + json.dumps([str(r) for r in requires]))
'''
REQUIREMENT_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?\s*([<>=!~]=?[^;\s]*(\s*,\s*[<>=!~]=?[^;\s]*)*)?(\s*;.*)?$")


def install_in_job(manifest: Manifest, pair: dict, env_python: str, workdir: Path, log: Path) -> dict:
    """What a plugin's setup.py asks for, when that cannot be read statically: setup.py is run inside the sandbox
    (with `setup()` captured, nothing built), the requirements it names are checked, installed with uv into the
    pair's work folder (inside the sandbox too) and recorded as installed. Returns {"installed": [...]} or
    {"failure": ...}."""
    root = Path(manifest.code_dir) / manifest.domain_root
    uv = manifest.uv or shutil.which("uv") or "uv"
    requirements: list[str] = []
    with open(log, "ab") as logf:
        for folder in pair["setup_in_job"]:
            plugin_dir = root / folder
            proc = _sandboxed_run(manifest, pair, workdir, [env_python, "-c", SETUP_READER], env_python, (),
                                  plugin_dir, logf, capture=True)
            lines = [line for line in proc[1].splitlines() if line.startswith("SCORE_PLUGINS_REQUIRES ")]
            try:
                found = json.loads(lines[-1].split(" ", 1)[1]) if lines else None
            except ValueError:
                found = None
            if proc[0] != 0 or not isinstance(found, list):
                return {"failure": {"state": "FAILED", "stage": "env_build",
                                    "reason": f"the setup.py of {folder} could not be read in the job (exit {proc[0]})"}}
            for item in found:
                if not isinstance(item, str) or not REQUIREMENT_LINE.match(item.strip()) or len(item) > 200:
                    return {"failure": {"state": "FAILED", "stage": "env_build",
                                        "reason": f"the setup.py of {folder} names {str(item)[:80]!r}, not a plain "
                                                  "requirement from the index"}}
                requirements.append(item.strip())
        if not requirements:
            return {"installed": []}
        logf.write(f"[score-plugins] installing in the job (setup.py not readable statically): "
                   f"{', '.join(requirements)}\n".encode())
        logf.flush()
        site = workdir / "site"
        site.mkdir(exist_ok=True)
        identity = sandbox_identity()
        if identity is not None:
            os.chown(site, *identity)
        code, _ = _sandboxed_run(manifest, pair, workdir, [uv, "pip", "install", "--quiet", "--python", env_python,
                                                           "--target", str(site), *requirements],
                                 env_python, (uv,), workdir, logf)
    if code != 0:
        return {"failure": {"state": "FAILED", "stage": "env_build",
                            "reason": f"installing {', '.join(requirements)[:200]} in the job failed (exit {code})"}}
    installed = sorted(p.name[:-len(".dist-info")].replace("-", "==", 1) for p in site.glob("*.dist-info"))
    return {"installed": installed}


def _sandboxed_run(manifest: Manifest, pair: dict, workdir: Path, cmd: list[str], env_python: str,
                   extra_ro: tuple[str, ...], cwd: Path, logf, capture: bool = False) -> tuple[int, str]:  # noqa: ANN001
    """One helper command in the pair's sandbox (same view, same user), with a time limit."""
    args, _how, fds = sandboxed(manifest, pair, workdir, cmd, env_python=env_python, extra_ro=extra_ro, cwd=cwd)
    env = child_env(manifest, workdir)
    env.update({"UV_CACHE_DIR": str(workdir / ".uv-cache"), "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy"})
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, pass_fds=fds,
                              stdout=subprocess.PIPE if capture else logf, stderr=logf,
                              timeout=int(manifest.pair_timeout))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    finally:
        for fd in fds:
            os.close(fd)
    out = proc.stdout.decode("utf-8", "replace")[:100_000] if capture and proc.stdout else ""
    if capture:
        logf.write(out.encode())
    return proc.returncode, out
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
        return {"status": "error", "stage": stage, "reason": reason}, None
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
            "raw_values": values}, None


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
        state = "OUT_OF_MEMORY" if reason.startswith("MemoryError") else "FAILED"
        return {"state": state, "stage": reported["stage"], "reason": reason}
    if code != 0:
        return {"state": "FAILED", "stage": "persist",
                "reason": f"plugin process reported a score but exited with code {code}"}
    for k in ("score_raw", "score_ceiled", "ceiling", "error", "raw_values"):
        result[k] = reported.get(k)
    return None


def wait_with_usage(proc: subprocess.Popen, timeout: float) -> tuple[int, object, bool]:
    """Wait for the child, killing its process group at `timeout`; return its own rusage (peak memory)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage, False
        if time.monotonic() > deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage, True
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def env_failure_result(manifest: Manifest, pair: dict, env_log: Path, status: int) -> dict:
    result = base_result(manifest, pair)
    result.update({"status": "error", "state": "FAILED", "stage": "env_build",
                   "reason": f"building the environment failed (exit {status})", "log_path": str(env_log),
                   "log_tail": tail(env_log), "started_at": now(), "ended_at": now()})
    return result


def cmd_run_task(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    task = manifest.tasks[args.task]
    spool = Path(manifest.spool_dir)
    logs = Path(manifest.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    failures = 0
    for pair in task["pairs"]:
        target = spool / f"{pair['key']}.json"
        if _already_ok(target):
            continue  # a re-run of this task keeps what an earlier attempt finished
        if args.env_status != 0:
            result = env_failure_result(manifest, pair, Path(args.env_log), args.env_status)
        else:
            result = run_pair(manifest, pair, args.env_python, logs / f"{pair['key']}.log")
        try:
            write_json_atomic(target, result)
        except OSError as exc:
            print(f"[score-plugins] cannot write {target}: {exc}", file=sys.stderr)
            return 3
        announce(spool, target.name)
        failures += result["status"] != "ok"
        print(f"[score-plugins] {pair['model']} on {pair['benchmark']}: "
              f"{result.get('score_ceiled') if result['status'] == 'ok' else result['stage'] + ' error'}")
    return 0


def _already_ok(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def load_manifest(path: str) -> Manifest:
    return Manifest.load(path)


class StageError(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


MAX_RAW_VALUES = 1000


def _center(value: object, what: str) -> float:
    """The one number a Score stands for, the way brainscore-core reads it (`_retrieve_score_center`):
    `aggregation='center'` when that dimension exists, else the scalar; a non-scalar raw is averaged."""
    coords = getattr(value, "coords", None)
    if coords is not None and "aggregation" in coords:
        value = value.sel(aggregation="center")  # type: ignore[union-attr]
    size = getattr(value, "size", None)
    if isinstance(size, int) and size > 1 and hasattr(value, "values"):
        import numpy

        value = float(numpy.nanmean(numpy.asarray(value.values, dtype=float)))  # type: ignore[union-attr]
    elif hasattr(value, "item") and callable(value.item) and size in (None, 1) and not isinstance(value, float):
        value = value.item()  # numpy scalars, 0-d arrays and 0-d Scores
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise StageError("score", f"{what} is {type(value).__name__} {str(value)[:80]!r}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise StageError("score", f"{what} is {number}, not a finite number")
    return number


def _error(value: object) -> float | None:
    coords = getattr(value, "coords", None)
    try:
        if coords is not None and "aggregation" in coords:
            return _center(value.sel(aggregation="error"), "score error")  # type: ignore[union-attr]
        attrs = getattr(value, "attrs", None) or {}
        return _center(attrs["error"], "score error") if "error" in attrs else None
    except (StageError, KeyError, ValueError, TypeError):
        return None  # the error bar is informative only; a bad one is dropped, not fatal


def _raw_values(raw: object) -> list[float] | None:
    """A non-scalar raw score's values (capped), kept next to its aggregate."""
    size = getattr(raw, "size", None)
    if not (isinstance(size, int) and size > 1 and hasattr(raw, "values")):
        return None
    try:
        import numpy

        flat = numpy.asarray(raw.values, dtype=float).ravel()[:MAX_RAW_VALUES]  # type: ignore[union-attr]
        return [float(v) if math.isfinite(v) else None for v in flat]  # type: ignore[misc]
    except (TypeError, ValueError):
        return None


def read_score(value: object, benchmark_ceiling: object = None) -> dict:
    """What a benchmark returned, read with Brain-Score's semantics.

    The returned value is the leaderboard score, already ceiled (brainscore-core's `ceil_score`);
    `attrs['raw']` holds the unceiled score and `attrs['ceiling']` the ceiling when present. A plain
    number is its own raw score. The benchmark's `ceiling` property is recorded when the Score does
    not carry one, and never divides the score again.
    """
    if value is None or isinstance(value, (str, bytes, list, tuple, dict, set)):
        raise StageError("score", f"benchmark returned {type(value).__name__} {str(value)[:80]!r}, not a number "
                         "or a Score")
    score = _center(value, "the score the benchmark returned")
    attrs = getattr(value, "attrs", None)
    attrs = attrs if isinstance(attrs, dict) else {}
    raw = _center(attrs["raw"], "the score's attrs['raw']") if "raw" in attrs else score
    ceiling_source = attrs["ceiling"] if "ceiling" in attrs else benchmark_ceiling
    ceiling = None
    if ceiling_source is not None:
        ceiling = _center(ceiling_source, "the benchmark ceiling")
        if ceiling <= 0:
            raise StageError("score", f"benchmark ceiling {ceiling} is not a positive number")
    if not -1e-9 <= score <= 1 + 1e-9:
        raise StageError("score", f"score {score} is outside [0, 1]")
    return {"score_ceiled": min(max(score, 0.0), 1.0), "score_raw": raw, "ceiling": ceiling,
            "error": _error(value), "raw_values": _raw_values(attrs.get("raw"))}


def cmd_score_pair(args: argparse.Namespace) -> int:
    """Inside the plugins' environment: import both plugins, score, report through the pipe. Never raises."""
    import importlib

    report_fd = os.fdopen(args.report_fd, "w", encoding="utf-8", closefd=True)
    current = {"stage": "import"}

    def send(message: dict) -> None:
        try:
            report_fd.write(json.dumps(message, allow_nan=False) + "\n")
            report_fd.flush()
        except (OSError, ValueError):
            pass  # the worker then records "exited without a valid result"

    def stage(name: str) -> None:
        current["stage"] = name
        send({"stage": name})

    stage("import")
    try:
        manifest = load_manifest(args.manifest)
        pair = next(p for t in manifest.tasks for p in t["pairs"] if p["key"] == args.pair)
        root = manifest.domain_root
        domain = importlib.import_module(root)
        try:
            importlib.import_module(f"{root}.models.{pair['model_plugin']}")
            model_factory = getattr(domain, "model_registry")[pair["model"]]
            importlib.import_module(f"{root}.benchmarks.{pair['benchmark_plugin']}")
            benchmark_factory = getattr(domain, "benchmark_registry")[pair["benchmark"]]
        except KeyError as exc:
            raise StageError("import", f"{exc} is not registered after importing its plugin") from None
        stage("score")
        model = model_factory()
        benchmark = benchmark_factory()
        value = benchmark(model)
        ceiling_attr = None
        if not isinstance(getattr(value, "attrs", None), dict) or "ceiling" not in value.attrs:
            try:  # a Score that carries its ceiling is enough; else the benchmark's own, for the record
                ceiling_attr = getattr(benchmark, "ceiling", None)
            except Exception:  # noqa: BLE001 - a ceiling property that fails is not fatal to the score
                ceiling_attr = None
        reported = read_score(value, ceiling_attr)
        stage("persist")
        send({"status": "ok", **reported})
        return 0
    except StageError as exc:
        report = {"status": "error", "stage": exc.stage, "reason": exc.reason}
    except BaseException as exc:  # a plugin may raise anything, SystemExit included
        traceback.print_exc()
        report = {"status": "error", "stage": current["stage"],
                  "reason": f"{type(exc).__name__}: {str(exc)[:500]}"}
    send(report)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("run-task", help="score every pair of one array task")
    task.add_argument("--manifest", required=True)
    task.add_argument("--task", type=int, required=True)
    task.add_argument("--env-python", required=True)
    task.add_argument("--env-status", type=int, default=0)
    task.add_argument("--env-log", default="")
    pair = sub.add_parser("score-pair", help="(inside the plugin environment) score one pair")
    pair.add_argument("--manifest", required=True)
    pair.add_argument("--pair", required=True)
    pair.add_argument("--report-fd", type=int, required=True, help="pipe to the worker (stages, then the result)")
    args = parser.parse_args(argv)
    if args.command == "run-task":
        return cmd_run_task(args)
    return cmd_score_pair(args)


if __name__ == "__main__":
    sys.exit(main())
