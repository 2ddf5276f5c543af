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
import stat
import time
import traceback
from dataclasses import MISSING, asdict, dataclass, field, fields
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

if __package__:  # imported as pipeline.job.worker (the coordinator, tests)
    from . import sandbox as sb
else:  # run as a script in a job bundle: the copy of pipeline/job/sandbox.py next to this file
    import sandbox as sb  # type: ignore[no-redef]
if __package__:  # the model's process and its stand-in (pipeline/job/boundary.py; the bundle's copy in a job)
    from pipeline.job import boundary
else:
    import boundary  # type: ignore[no-redef]

SCHEMA = 1  # of a result file in the spool (docs/spool.md)
MANIFEST_SCHEMA = 1


class ManifestError(ValueError):
    """A manifest this worker cannot read: another schema, a missing or unknown field, a wrong type."""


@dataclass
class Manifest:
    """A run's manifest (`manifest.json`): written by the coordinator (`pipeline.stages.bundle`), read here in the
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
    sandbox: str = "auto"  # auto (= bwrap) | bwrap | off
    sandbox_network: str = "on"  # on | off (loopback only)
    max_processes: Optional[int] = 512  # per pair (a per-pair user when the worker is root)
    disk_limit_bytes: Optional[int] = None  # per pair: its work folder, and any one file it writes
    output_limit_bytes: Optional[int] = None  # per pair: what it prints; the pair is stopped past it
    shm_bytes: int = 256 << 20  # its private /dev/shm
    uid_base: int = sb.UID_BASE
    mem_limit_bytes: Optional[int] = None  # the plugin's data limit (local executor; Slurm enforces its own)
    shared_cache: Optional[str] = None
    trusted_caches: list = field(default_factory=list)  # cache variables an admin shares between all plugins
    boundary_cap_bytes: int = boundary.DEFAULT_CAP  # largest message between the model's and benchmark's process
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


def child_env(manifest: Manifest, workdir: Path, caches: dict | None = None) -> dict:
    """Everything the plugin process may see: no credentials, no inherited secrets, nothing of ours.
    `caches` (variable -> folder, see plugin_caches) replaces the shared cache's one folder per variable."""
    env = {k: os.environ[k] for k in CHILD_ENV_KEEP if k in os.environ}
    home = workdir / "home" if (workdir / "home").is_dir() else workdir
    env.update({
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "PYTHONPATH": manifest.code_dir + (f":{workdir / 'site'}" if _has_entries(workdir / "site") else ""),
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
    if caches is not None:
        env.update(caches)
    elif cache:  # data, weights and activations survive the pair (Brain-Score's and the usual libraries' homes)
        for name, sub in CACHE_HOMES.items():
            env[name] = str(Path(cache) / sub)
    env.update(manifest.plugin_env)
    return env


def _has_entries(folder: Path) -> bool:
    """Whether a setup.py installed anything into the pair's `site` folder (made empty by root beforehand)."""
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


CACHE_HOMES = {
    "BRAINIO_HOME": "brainio", "BRAINSCORE_HOME": "brainscore", "RESULTCACHING_HOME": "result_caching",
    "TORCH_HOME": "torch", "HF_HOME": "huggingface", "XDG_CACHE_HOME": "xdg", "KERAS_HOME": "keras",
}


SYSTEM_PATHS = sb.SYSTEM_PATHS
NOBODY = sb.NOBODY


def plugin_caches(manifest: Manifest, kind: str, plugin: str) -> dict[str, str]:
    """Cache variable -> folder for one plugin's process: `<shared_cache>/<kind>/<plugin>/<sub>`, its own, so
    that no plugin can change a file another plugin's pair reads (weights, hub code, data, activations).
    Data and metric plugins write into the cache of the process that loads them (the benchmark's, or the
    model's own copy). A variable the admin listed in `trusted_caches` is `<shared_cache>/shared/<sub>` for all."""
    if not manifest.shared_cache:
        return {}
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", plugin) or kind not in ("models", "benchmarks"):
        raise StageError("import", f"plugin folder {plugin[:80]!r} cannot name a cache folder")
    root = Path(manifest.shared_cache)
    return {name: str(root / "shared" / sub if name in manifest.trusted_caches else root / kind / plugin / sub)
            for name, sub in CACHE_HOMES.items()}


def cache_folders(manifest: Manifest, caches: dict[str, str]) -> tuple[str, ...]:
    """The folders to bind read-write for these caches: made by root below the root-owned cache root (no plugin
    sees a parent, so none can plant a link there), group-writable by the sandbox users' shared group (setgid,
    umask 002): every pair of the same plugin has a user of its own, and keeps writing the same cache."""
    folders = sorted({str(Path(p).parent) if "/shared/" not in p else p for p in caches.values()})
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if manifest.sandbox != "off" and sb.running_as_root():
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode):
                raise StageError("import", f"cache folder {folder} is not a folder")
            if info.st_gid != NOBODY or stat.S_IMODE(info.st_mode) != 0o2775:
                os.lchown(folder, info.st_uid if info.st_uid != 0 else 0, NOBODY)
                os.chmod(folder, 0o2775)
    return tuple(folders)


def sandbox_identity() -> tuple[int, int] | None:
    """(uid, gid) the plugin process runs as when the worker is root (nobody), else None (already unprivileged)."""
    return (NOBODY, NOBODY) if os.getuid() == 0 else None


def sandbox_prepare(manifest: Manifest, workdir: Path, uid: int = NOBODY) -> None:
    """One side's work folder: root's own (so nothing in it can be replaced by the plugin), holding `home` (HOME,
    TMPDIR, working directory) and `site` (what a setup.py installs), both the side's user's. The cache root
    stays root's and is never bound whole: each plugin's cache folders are (see cache_folders)."""
    os.chmod(workdir, 0o755)
    for name in ("home", "site"):
        (workdir / name).mkdir(mode=0o755)
        if manifest.sandbox != "off":
            sb.give(str(workdir / name), uid)
    if manifest.shared_cache:
        Path(manifest.shared_cache).mkdir(parents=True, exist_ok=True)


def sandboxed(manifest: Manifest, pair: dict, workdir: Path, cmd: list[str], env_python: str | None = None,
              extra_ro: tuple[str, ...] = (), cwd: Path | None = None, *, uid: int = NOBODY,
              folders: list[str] | None = None, writable: tuple[str, ...] | None = None
              ) -> tuple[list[str], str, tuple[int, ...]]:
    """Wrap a pair's process in the sandbox (pipeline/job/sandbox.py), as an attacker's: an empty root with only the
    system folders, its environment and its base interpreter, the domain package with the pair's own plugin
    folders, the worker and its manifest (all read-only), its work folder and the shared cache (read-write); its
    own PID, IPC and UTS namespaces (and network when `sandbox_network` is off); a private /dev/shm; a per-pair
    unprivileged user with no capability when started as root; no_new_privs and a libseccomp filter.
    `folders` narrows the plugin folders to one side of the pair (the model's process sees its own); `writable`
    replaces the shared cache with these folders (its own caches, the hand-off folder).
    Returns (argv, what was done, file descriptors the child must inherit). Fails closed: StageError when the
    sandbox cannot be set up; only `sandbox = "off"` runs the command as it is."""
    if manifest.sandbox == "off":
        return cmd, "no sandbox (sandbox=off: plugin code ran unconfined)", ()
    code = Path(manifest.code_dir)
    root = code / manifest.domain_root
    env_dir = Path(env_python_dir(env_python or cmd[0]))
    view = sb.View(ro=[str(env_dir)], cwd=str(cwd or workdir / "home"), network=manifest.sandbox_network != "off",
                   shm_bytes=manifest.shm_bytes, uid=uid)
    sb.python_view(str(env_dir / "bin" / "python"), view)
    view.ro.append(str(code))
    # Other plugins' folders are hidden; the domain package stays whole: its __init__.py files, helpers and
    # every file directly in a type folder (`benchmarks/__init__.py` defines BenchmarkBase in Brain-Score).
    for plugin_type in ("models", "benchmarks", "data", "metrics"):
        folder = root / plugin_type
        if folder.is_dir() and not folder.is_symlink():
            view.tmpfs.append(str(folder))
            view.ro_over.extend(str(e) for e in sorted(folder.iterdir()) if e.is_file() and not e.is_symlink())
    if folders is None:
        folders = pair.get("folders") or [f"models/{pair['model_plugin']}", f"benchmarks/{pair['benchmark_plugin']}"]
    for folder in folders:
        if (root / folder).is_dir():
            view.ro_over.append(str(root / folder))
    modules = (str(Path(manifest.worker).with_name(name)) for name in ("sandbox.py", "boundary.py"))
    view.ro.extend(p for p in (manifest.path, manifest.worker, *modules) if os.path.exists(p))
    cache = manifest.shared_cache
    view.rw.extend(writable if writable is not None else (cache,) if cache and Path(cache).is_dir() else ())
    view.rw.append(str(workdir))
    try:
        argv, fds, how = sb.command(view, cmd, extra_ro=(*manifest.sandbox_extra_paths, *extra_ro))
    except sb.SandboxUnavailable as exc:
        raise StageError("import", f"the sandbox cannot be set up on this node, nothing was run: {exc}") from None
    return argv, how, fds


def symlink_chain(path: str) -> tuple[list[tuple[str, str]], str]:
    return sb.symlink_chain(path)


def child_setup(manifest: Manifest, processes: int | None = None):  # noqa: ANN201 - a preexec function
    """Limits applied in the child before it starts: memory (see memory_limit), processes, bytes per file."""
    if manifest.sandbox == "off":
        return memory_limit(manifest.mem_limit_bytes)
    return sb.Limits(processes=processes, file_bytes=manifest.disk_limit_bytes,
                     data_bytes=manifest.mem_limit_bytes).preexec()


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


def split_folders(pair: dict) -> tuple[list[str], list[str]]:
    """(what the model's process sees, what the benchmark's process sees): each plugin with what it uses."""
    folders = list(pair.get("folders") or [f"models/{pair['model_plugin']}", f"benchmarks/{pair['benchmark_plugin']}"])
    own = pair.get("model_folders")
    if own is None:  # a manifest written before the split: the model's part comes first
        bench = f"benchmarks/{pair['benchmark_plugin']}"
        own = folders[:folders.index(bench)] if bench in folders else [f"models/{pair['model_plugin']}"]
    return list(own), [f for f in folders if f not in own or not f.startswith("models/")]


def run_pair(manifest: Manifest, pair: dict, env_python: str, log: Path) -> dict:
    """Score one pair in two sandboxed child processes; whatever happens, return a result dict.

    The model runs in its own process (boundary.py serve-model) that sees only its own plugin folders and
    caches; the benchmark's process sees the benchmark's, and talks to the model through a socket
    (boundary.RemoteModel). Started as root, each side runs as a user of its own (two node-wide slots), so
    neither can signal, trace or count as the other. Only the benchmark's process holds the report pipe this
    process owns: stages, then one result, never a file in a folder a plugin can write. Every message is
    size-capped and checked against a schema (`check_report`).
    """
    result = base_result(manifest, pair)
    started = time.time()
    result["started_at"] = now()
    result["log_path"] = str(log)
    if manifest.trusted_caches:
        result["trusted_caches"] = list(manifest.trusted_caches)
    slots: list = []
    try:
        if manifest.sandbox != "off" and sb.running_as_root():
            for _side in ("model", "benchmark"):
                slots.append(sb.UidSlot(base=manifest.uid_base).__enter__())
    except (sb.SandboxUnavailable, OSError) as exc:
        for slot in slots:
            slot.__exit__()
        result.update({"status": "error", "state": "FAILED", "stage": "import", "ended_at": now(),
                       "reason": f"the sandbox cannot be set up on this node, nothing was run: {exc}",
                       "log_tail": "", "elapsed_seconds": 0.0})
        return result
    uids = (slots[0].uid, slots[1].uid) if slots else (NOBODY, NOBODY)
    try:
        failure = _run_pair_as(manifest, pair, env_python, log, result, uids)
    finally:
        for slot in slots:
            slot.__exit__()
    result["ended_at"] = now()
    result["elapsed_seconds"] = round(time.time() - started, 3)
    if failure:
        result.update({"status": "error", **failure, "log_tail": tail(log)})
    else:
        result.update({"status": "ok", "state": "COMPLETED", "stage": None, "reason": None})
    return result


def _run_pair_as(manifest: Manifest, pair: dict, env_python: str, log: Path, result: dict,
                 uids: tuple[int, int]) -> dict | None:
    """run_pair's body, the model's side as uids[0] and the benchmark's as uids[1] (when root); None when the
    pair scored, else its failure."""
    timeout = int(manifest.pair_timeout)
    model_uid, bench_uid = uids
    model_folders, bench_folders = split_folders(pair)
    failure: dict | None = None
    with tempfile.TemporaryDirectory(prefix="pair-") as tmp:
        os.chmod(tmp, 0o755)
        bench_dir, model_dir, handoff = Path(tmp) / "benchmark", Path(tmp) / "model", Path(tmp) / "handoff"
        for folder, uid in ((bench_dir, bench_uid), (model_dir, model_uid)):
            folder.mkdir()
            sandbox_prepare(manifest, folder, uid)
        handoff.mkdir(mode=0o755)  # the benchmark's side writes stimulus files here; the model's reads them
        if manifest.sandbox != "off":
            sb.give(str(handoff), bench_uid)
        installed: dict = {"installed": []}
        for side_dir, side_folders, uid in ((model_dir, model_folders, model_uid), (bench_dir, bench_folders, bench_uid)):
            wanted = [f for f in pair.get("setup_in_job") or [] if f in side_folders]
            if wanted and not installed.get("failure"):
                done = install_in_job(manifest, pair, env_python, side_dir, log, wanted, side_folders, uid=uid)
                installed = {"installed": installed["installed"] + done.get("installed", []), **(
                    {"failure": done["failure"]} if done.get("failure") else {})}
        if pair.get("setup_in_job"):
            result["installed_in_job"] = installed.get("installed")
        read_fd, write_fd = os.pipe()
        bench_end, model_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        own = pair_manifest(manifest, pair)
        sides = []
        seccomp_fds: list[int] = []
        how = ""
        try:
            model_caches = plugin_caches(manifest, "models", pair["model_plugin"])
            bench_caches = plugin_caches(manifest, "benchmarks", pair["benchmark_plugin"])
            boundary_py = str(Path(manifest.worker).with_name("boundary.py"))
            model_cmd = [env_python, boundary_py, "serve-model", "--manifest", own.path, "--pair", pair["key"],
                         "--channel-fd", str(model_end.fileno()), "--cap", str(manifest.boundary_cap_bytes)]
            bench_cmd = [env_python, manifest.worker, "score-pair", "--manifest", own.path, "--pair", pair["key"],
                         "--report-fd", str(write_fd), "--model-fd", str(bench_end.fileno()),
                         "--handoff", str(handoff)]
            model_argv, how, model_fds = sandboxed(own, pair, model_dir, model_cmd, extra_ro=(str(handoff),),
                                                   uid=model_uid, folders=model_folders,
                                                   writable=cache_folders(manifest, model_caches))
            seccomp_fds += model_fds
            sides.append((model_argv, model_dir, model_caches, (model_end.fileno(), *model_fds)))
            bench_argv, how, bench_fds = sandboxed(own, pair, bench_dir, bench_cmd, uid=bench_uid,
                                                   folders=bench_folders,
                                                   writable=(*cache_folders(manifest, bench_caches), str(handoff)))
            seccomp_fds += bench_fds
            sides.append((bench_argv, bench_dir, bench_caches, (write_fd, bench_end.fileno(), *bench_fds)))
        except StageError as exc:
            how = how or exc.reason
            failure = {"state": "FAILED", "stage": exc.stage, "reason": exc.reason}
        reader = ReportReader(read_fd)
        processes = _process_limit(manifest)
        procs: list[subprocess.Popen] = []
        with open(log, "ab") as logf:
            logf.write(f"[score-plugins] {now()} scoring {pair['model']} on {pair['benchmark']} ({how}; the model "
                       f"in its own process)\n".encode())
            if manifest.trusted_caches:
                logf.write(f"[score-plugins] caches shared by every plugin (trusted_caches): "
                           f"{', '.join(manifest.trusted_caches)}\n".encode())
            logf.flush()
            output = LogWriter(logf, manifest.output_limit_bytes)
            failure = failure or installed.get("failure")
            try:
                for argv, side_dir, caches, pass_fds in sides if failure is None else ():
                    procs.append(subprocess.Popen(
                        argv, cwd=side_dir, env=child_env(manifest, side_dir, caches), stdout=output.fd,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                        pass_fds=pass_fds, preexec_fn=child_setup(manifest, processes)))
            except OSError as exc:
                failure = {"state": "FAILED", "stage": "env_build", "reason": f"cannot start {env_python}: {exc}"}
            finally:
                for fd in (write_fd, *seccomp_fds):
                    os.close(fd)
                bench_end.close()
                model_end.close()
                output.started()
            reader.start()
            if failure is None and len(procs) == 2:
                watch = PairWatch(manifest, Path(tmp), uids, output)
                code, usage, stopped = wait_with_usage(procs[1], timeout, watch.check)
                reader.join(REPORT_DRAIN_SECONDS)
                result["max_rss_bytes"] = int(usage.ru_maxrss) * 1024 if usage else None
                result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3) if usage else None
                stage, reported, problem = reader.outcome()
                if reported and reported.get("max_rss_bytes"):  # the plugins' own, behind the PID namespaces
                    result["max_rss_bytes"] = max(result["max_rss_bytes"] or 0, reported["max_rss_bytes"])
                if stopped == "timeout":
                    failure = {"state": "TIMEOUT", "stage": stage,
                               "reason": f"pair exceeded its time limit of {timeout} s and was stopped"}
                elif stopped:
                    failure = {"state": "FAILED", "stage": stage, "reason": stopped}
                else:
                    failure = _child_outcome(code, stage, reported, problem, result)
                    if failure and code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
                        failure["reason"] = (f"pair wrote a file larger than its disk limit of "
                                             f"{manifest.disk_limit_bytes} bytes and was stopped (SIGXFSZ)")
                    elif failure and "[Errno 27]" in failure["reason"]:  # Python ignores SIGXFSZ: EFBIG instead
                        failure["reason"] += (f" (a file reached the pair's disk limit of {manifest.disk_limit_bytes}"
                                              " bytes)")
            model_usage = _end_model(procs, failure is None and len(procs) == 2)
            if model_usage is not None and result.get("max_rss_bytes") is not None:  # the pair's peak: either side's
                result["max_rss_bytes"] = max(result["max_rss_bytes"], int(model_usage.ru_maxrss) * 1024)
            output.finish()
            reader.close()
            if failure and len(procs) == 2 and "closed the channel" in str(failure.get("reason")):
                failure = _model_died(procs[0].returncode, failure)
        cap_log(log)
        Path(own.path).unlink(missing_ok=True)
    return failure


def _end_model(procs: list[subprocess.Popen], scored: bool):  # noqa: ANN202 - a resource usage or None
    """Every process of the pair ends: the model's when the benchmark's side hangs up (2 s after a score), else
    it is stopped. Returns the model's process's resource usage (its peak memory), when it had one."""
    usage = None
    for proc in procs:
        deadline = time.monotonic() + (2 if proc is procs[0] and scored else 0.01)
        while proc.returncode is None:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                usage = rusage if proc is procs[0] else usage
                break
            if time.monotonic() > deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _pid, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                usage = rusage if proc is procs[0] else usage
                break
            time.sleep(0.01)
        try:  # nothing of the pair outlives it (bubblewrap's own children too)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return usage


def _model_died(code: int | None, failure: dict) -> dict:
    """The benchmark's side lost the model: say how the model's process ended (a signal, e.g. the OOM killer)."""
    if code is not None and code > 128 and (code - 128) in set(signal.Signals):
        code = -(code - 128)  # bubblewrap reports a child killed by a signal as 128 + the signal
    if code is None or code >= 0:
        return {**failure, "reason": f"{failure['reason']} (the model's process exited with code {code})"}
    died = _child_outcome(code, failure["stage"], None, None, {}) or failure
    return {**died, "reason": died["reason"].replace("plugin process", "the model's process was", 1)}


def _process_limit(manifest: Manifest) -> int | None:
    """RLIMIT_NPROC for the pair. As root each pair has its own user, so the limit is the pair's own; otherwise
    the limit counts every process of the user running the worker, so it is raised by what that user runs now."""
    if manifest.sandbox == "off" or not manifest.max_processes:
        return None
    if sb.running_as_root():
        return manifest.max_processes
    return manifest.max_processes + sb.count_tasks(os.getuid())


class LogWriter:
    """The pair's stdout and stderr, capped while they are written: the first half of LOG_CAP_BYTES goes to the
    log as it comes, then only the last half is kept (in memory) and written with a marker at the end. Past
    `limit` bytes in all, `flooded` is set and the pair is stopped."""

    def __init__(self, logf, limit: int | None):  # noqa: ANN001 - a binary file
        import threading

        self.logf, self.limit = logf, limit
        read_fd, self.fd = os.pipe()
        self.read_fd = read_fd
        self.total = 0
        self.head_room = LOG_CAP_BYTES // 2
        self.tail = bytearray()
        self.flooded = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def started(self) -> None:
        os.close(self.fd)  # the child holds the write end now

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.total += len(chunk)
            if self.limit and self.total > self.limit:
                self.flooded = True
            if self.head_room > 0:
                head, chunk = chunk[:self.head_room], chunk[self.head_room:]
                self.head_room -= len(head)
                self.logf.write(head)
                self.logf.flush()
            if chunk:
                self.tail.extend(chunk)
                if len(self.tail) > LOG_CAP_BYTES // 2:
                    del self.tail[:len(self.tail) - LOG_CAP_BYTES // 2]

    def finish(self) -> None:
        self.thread.join(REPORT_DRAIN_SECONDS)  # a grandchild holding the pipe open cannot keep us waiting
        dropped = self.total - LOG_CAP_BYTES // 2 - len(self.tail)
        if dropped > 0:
            self.logf.write(f"\n[... {dropped} bytes cut by score-plugins ...]\n".encode())
        self.logf.write(bytes(self.tail))
        self.logf.flush()
        os.close(self.read_fd)


class PairWatch:
    """Checks, while the pair runs, the limits no rlimit enforces for the pair as a whole: its output, its
    processes (per-pair user, root only) and the bytes in its work folder. Returns the reason to stop it."""

    def __init__(self, manifest: Manifest, workdir: Path, uids: tuple[int, ...], output: LogWriter):
        self.manifest, self.workdir, self.uids, self.output = manifest, workdir, tuple(set(uids)), output
        self.next_slow = 0.0

    def check(self) -> str | None:
        m = self.manifest
        if self.output.flooded:
            return f"pair printed more than its output limit of {m.output_limit_bytes} bytes and was stopped"
        if m.sandbox == "off" or time.monotonic() < self.next_slow:
            return None
        self.next_slow = time.monotonic() + 1.0
        if m.max_processes and sb.running_as_root() and \
                max(sb.count_processes(uid) for uid in self.uids) >= m.max_processes:
            return f"pair reached its limit of {m.max_processes} processes and was stopped"
        if m.disk_limit_bytes and sb.tree_size(str(self.workdir), m.disk_limit_bytes) > m.disk_limit_bytes:
            return f"pair wrote more than its disk limit of {m.disk_limit_bytes} bytes and was stopped"
        return None


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


def install_in_job(manifest: Manifest, pair: dict, env_python: str, workdir: Path, log: Path,
                   wanted: list[str] | None = None, visible: list[str] | None = None, *, uid: int = NOBODY) -> dict:
    """What a plugin's setup.py asks for, when that cannot be read statically: setup.py is run inside the sandbox
    (with `setup()` captured, nothing built), the requirements it names are checked, installed with uv into the
    pair's work folder (inside the sandbox too) and recorded as installed. Returns {"installed": [...]} or
    {"failure": ...}. `wanted`: these folders only, in a sandbox that sees `visible` (one side of the pair)."""
    root = Path(manifest.code_dir) / manifest.domain_root
    uv = manifest.uv or shutil.which("uv") or "uv"
    requirements: list[str] = []
    with open(log, "ab") as logf:
        for folder in pair["setup_in_job"] if wanted is None else wanted:
            plugin_dir = root / folder
            proc = _sandboxed_run(manifest, pair, workdir, [env_python, "-c", SETUP_READER], env_python, (),
                                  plugin_dir, logf, capture=True, uid=uid, folders=visible)
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
        # `site` was made by root in a root-owned work folder before any plugin code ran (sandbox_prepare): the
        # plugin cannot have replaced it with a symlink, and nothing here changes an owner or follows a link
        site = workdir / "site"
        code, _ = _sandboxed_run(manifest, pair, workdir, [uv, "pip", "install", "--quiet", "--python", env_python,
                                                           "--target", str(site), *requirements],
                                 env_python, (uv,), workdir / "home", logf, uid=uid, folders=visible)
    if code != 0:
        return {"failure": {"state": "FAILED", "stage": "env_build",
                            "reason": f"installing {', '.join(requirements)[:200]} in the job failed (exit {code})"}}
    installed = sorted(name[:-len(".dist-info")].replace("-", "==", 1) for name in os.listdir(site)
                       if name.endswith(".dist-info"))
    return {"installed": installed}


def _sandboxed_run(manifest: Manifest, pair: dict, workdir: Path, cmd: list[str], env_python: str,
                   extra_ro: tuple[str, ...], cwd: Path, logf, capture: bool = False,  # noqa: ANN001
                   uid: int = NOBODY, folders: list[str] | None = None) -> tuple[int, str]:
    """One helper command in one side's sandbox (same view, same user, same limits, no cache), with a time
    limit."""
    try:
        args, _how, fds = sandboxed(manifest, pair, workdir, cmd, env_python=env_python, extra_ro=extra_ro, cwd=cwd,
                                    uid=uid, folders=folders, writable=())
    except StageError as exc:
        logf.write(f"[score-plugins] {exc.reason}\n".encode())
        return 1, ""
    env = child_env(manifest, workdir, {})
    env.update({"UV_CACHE_DIR": str(workdir / "home" / ".uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
                "UV_LINK_MODE": "copy"})
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, pass_fds=fds,
                              stdout=subprocess.PIPE if capture else logf, stderr=logf,
                              timeout=int(manifest.pair_timeout), preexec_fn=child_setup(manifest, _process_limit(
                                  manifest)))
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


def own_peak() -> int:
    """This process's peak resident memory and its finished children's, in bytes (Linux reports KiB)."""
    import resource

    return 1024 * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def pair_peak(channel: "boundary.Channel") -> int:
    """The pair's peak memory: the benchmark's process's own, or the model's process's as it reports it (behind
    its PID namespace nothing else can see it; a model that under-reports only starts its next run too small)."""
    return max(own_peak(), boundary.model_peak(channel) or 0)


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
        # Python's MemoryError, numpy's _ArrayMemoryError (a subclass) and the like: the plugin ran out of memory
        state = "OUT_OF_MEMORY" if re.match(r"_?\w*MemoryError\b", reason) else "FAILED"
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
    delay = 0.01
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage, None
        stopped = "timeout" if time.monotonic() > deadline else (check() if check else None)
        if stopped:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage, stopped
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def env_failure_result(manifest: Manifest, pair: dict, env_log: Path, status: int) -> dict:
    result = base_result(manifest, pair)
    said = [line for line in tail(env_log).splitlines() if line.startswith("score-plugins: ")]
    reason = f"building the environment failed (exit {status})"
    if status == 3 and said:  # the sandbox could not be set up: nothing was built or run; say what is missing
        reason = f"{reason}: {said[-1][len('score-plugins: '):][:500]}"
    result.update({"status": "error", "state": "FAILED", "stage": "env_build",
                   "reason": reason, "log_path": str(env_log),
                   "log_tail": tail(env_log), "started_at": now(), "ended_at": now()})
    return result


def cmd_run_task(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    task = manifest.tasks[args.task]
    if "mem_limit_bytes" in task:  # the task's tier (the local executor's memory limit; None under Slurm)
        manifest = dc_replace(manifest, mem_limit_bytes=task["mem_limit_bytes"])
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
    """Inside the plugins' environment, the benchmark's side: import the benchmark plugin, score it against the
    model's process (a boundary.RemoteModel), report through the pipe. Never raises."""
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
    channel = None
    peak = [0]
    try:
        manifest = load_manifest(args.manifest)
        pair = next(p for t in manifest.tasks for p in t["pairs"] if p["key"] == args.pair)
        channel = boundary.Channel(args.model_fd, cap=manifest.boundary_cap_bytes, handoff=Path(args.handoff),
                                   peer="the model's process")
        root = manifest.domain_root
        domain = importlib.import_module(root)
        try:
            importlib.import_module(f"{root}.benchmarks.{pair['benchmark_plugin']}")
            benchmark_factory = getattr(domain, "benchmark_registry")[pair["benchmark"]]
        except KeyError as exc:
            raise StageError("import", f"{exc} is not registered after importing its plugin") from None
        boundary.wait_for_model(channel, "imported")  # the model's process imports its plugin meanwhile
        stage("score")
        boundary.wait_for_model(channel, "ready")
        model = boundary.RemoteModel(channel, pair["model"])
        benchmark = benchmark_factory()
        value = benchmark(model)
        violation = boundary.violation(model)
        if violation:  # a benchmark that caught the error still fails its pair with it
            raise StageError("score", violation)
        ceiling_attr = None
        if not isinstance(getattr(value, "attrs", None), dict) or "ceiling" not in value.attrs:
            try:  # a Score that carries its ceiling is enough; else the benchmark's own, for the record
                ceiling_attr = getattr(benchmark, "ceiling", None)
            except Exception:  # noqa: BLE001 - a ceiling property that fails is not fatal to the score
                ceiling_attr = None
        reported = read_score(value, ceiling_attr)
        stage("persist")
        send({"status": "ok", **reported, "max_rss_bytes": pair_peak(channel)})
        return 0
    except StageError as exc:
        report = {"status": "error", "stage": exc.stage, "reason": exc.reason}
    except boundary.ModelFailed as exc:
        report = {"status": "error", "stage": exc.stage, "reason": exc.reason}
    except boundary.BoundaryError as exc:
        report = {"status": "error", "stage": current["stage"], "reason": str(exc)}
    except BaseException as exc:  # a plugin may raise anything, SystemExit included
        traceback.print_exc()
        report = {"status": "error", "stage": current["stage"],
                  "reason": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        if channel is not None:
            peak[0] = pair_peak(channel)  # a MemoryError's peak tells the next run where to start
            channel.close()  # the model's process sees the end and exits
    report["max_rss_bytes"] = peak[0] or own_peak()
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
    pair.add_argument("--model-fd", type=int, required=True, help="socket to the model's process")
    pair.add_argument("--handoff", required=True, help="folder for stimulus files the model may read")
    args = parser.parse_args(argv)
    if args.command == "run-task":
        return cmd_run_task(args)
    return cmd_score_pair(args)


if __name__ == "__main__":
    sys.exit(main())
