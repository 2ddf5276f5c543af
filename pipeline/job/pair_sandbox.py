"""How one pair's processes are confined: the clean environment, the per-plugin caches, the work folders, the
sandbox view (pipeline/job/sandbox.py builds it) and the limits applied in the child."""

from __future__ import annotations

import re
import os
import stat
from pathlib import Path

from . import sandbox as sb
from .manifest import Manifest
from .spool import StageError


CHILD_ENV_KEEP = ("LANG", "LC_ALL", "TZ")
# a node that cannot confine a pair: the infrastructure's (INFRA_FAIL, like an environment build it refuses), never
# the plugins'; the words are those of env_failure_result's "sandbox unavailable"
NO_SANDBOX = "infrastructure (sandbox unavailable): the sandbox cannot be set up on this node, nothing was run"


def child_env(manifest: Manifest, workdir: Path, caches: dict | None = None, gpu_env: dict | None = None) -> dict:
    """Everything the plugin process may see: no credentials, no inherited secrets, nothing of ours.
    `caches` (variable -> folder, see plugin_caches) replaces the shared cache's one folder per variable.
    `gpu_env`: the GPU side's CUDA_VISIBLE_DEVICES (pipeline/job/gpus.py); any other side gets an empty one,
    so that even unconfined (sandbox = "off") it uses no GPU."""
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
    env.update(gpu_env if gpu_env else {"CUDA_VISIBLE_DEVICES": ""})
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


def own_cache_folder(manifest: Manifest, kind: str, plugin: str) -> str | None:
    """The folder holding one plugin's own caches (`<shared_cache>/<kind>/<plugin>`), which `plugin_cache_limit`
    bounds; None when it has none (no shared cache, or every cache variable is trusted and shared)."""
    caches = plugin_caches(manifest, kind, plugin)
    if not any(name not in manifest.trusted_caches for name in caches):
        return None
    return str(Path(manifest.shared_cache) / kind / plugin)


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


# Once `main` is done (returned or raised), the pair's side has said all it will: its output is flushed and the
# process ends there (os._exit), without the interpreter's teardown, the plugin's atexit handlers or a wait for
# threads it left running, none of which can change a result already reported, and each of which could hold the
# pair up. As Python's own exit does, a closed or missing stream is skipped and a failed flush exits 120.
LAUNCHER = """import importlib, os, sys
sys.path[:] = [sys.argv.pop(1)] + [p for p in sys.path if p]
try:
    code = importlib.import_module(sys.argv.pop(1)).main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if type(exc.code) is int else (0 if exc.code is None else 1)
except BaseException:
    import traceback
    traceback.print_exc()
    code = 1
for stream in (sys.stdout, sys.stderr):
    try:
        if stream is not None and not stream.closed:
            stream.flush()
    except BaseException:
        code = code or 120
os._exit(code if type(code) is int else 1)"""


def launch(python: str, worker: str, module: str) -> list[str]:
    """The command that runs the job package's `module` (score_pair or boundary) in a plugin environment: imported,
    not run as a file, so the bytecode compiled when the bundle was made is used (a file run as a script is
    compiled anew in each of a pair's two processes), and only the package's parent folder leads sys.path: the
    current folder (the pair's writable one), which `-c` would put first, is dropped, and `-s` leaves out the
    user site of the pair's writable home."""
    package = Path(worker).parent
    return [python, "-s", "-c", LAUNCHER, str(package.parent), f"{package.name}.{module}"]


def sandboxed(manifest: Manifest, pair: dict, workdir: Path, cmd: list[str], env_python: str | None = None,
              extra_ro: tuple[str, ...] = (), cwd: Path | None = None, *, uid: int = NOBODY,
              folders: list[str] | None = None, writable: tuple[str, ...] | None = None, gpu=None  # noqa: ANN001
              ) -> tuple[list[str], str, tuple[int, ...]]:
    """Wrap a pair's process in the sandbox (pipeline/job/sandbox.py), as an attacker's: an empty root with only the
    system folders, its environment and its base interpreter, the domain package with the pair's own plugin
    folders, the worker and its manifest (all read-only), its work folder and the shared cache (read-write); its
    own PID, IPC, UTS and network namespaces (the outside through slirp4netns, never the node; `sandbox_network`
    off: loopback only; host: the node's own network); a private /dev/shm; a per-pair
    unprivileged user with no capability when started as root; no_new_privs and a libseccomp filter.
    `folders` narrows the plugin folders to one side of the pair (the model's process sees its own); `writable`
    replaces the shared cache with these folders (its own caches, the hand-off folder). `gpu` (a
    pipeline.job.gpus.GpuView): the pair's GPUs, their device nodes and the driver's files; none without it.
    Returns (argv, what was done, file descriptors the child must inherit). Fails closed: StageError when the
    sandbox cannot be set up; only `sandbox = "off"` runs the command as it is."""
    if manifest.sandbox == "off":
        return cmd, "no sandbox (sandbox=off: plugin code ran unconfined)", ()
    code = Path(manifest.code_dir)
    root = code / manifest.domain_root
    env_dir = Path(env_python_dir(env_python or cmd[0]))
    view = sb.View(ro=[str(env_dir)], cwd=str(cwd or workdir / "home"), network=manifest.sandbox_network,
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
    package = str(Path(manifest.worker).parent)  # the job package: worker.py, boundary.py and what they import
    view.ro.extend(p for p in (manifest.path, package) if os.path.exists(p))
    cache = manifest.shared_cache
    view.rw.extend(writable if writable is not None else (cache,) if cache and Path(cache).is_dir() else ())
    view.rw.append(str(workdir))
    if gpu is not None:
        view.devices.extend(gpu.devices)
        view.proc_ro.extend(gpu.proc_ro)
        view.ro.extend(gpu.ro)
    try:
        argv, fds, how = sb.command(view, cmd, extra_ro=(*manifest.sandbox_extra_paths, *extra_ro))
    except sb.SandboxUnavailable as exc:
        raise StageError("import", f"{NO_SANDBOX}: {exc}", state="INFRA_FAIL") from None
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
    own = manifest.replace(tasks=[{"index": 0, "pairs": [pair]}])
    path = folder / f"{pair['key']}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(own.to_json(), encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    own.path = str(path)
    return own


def split_folders(pair: dict) -> tuple[list[str], list[str]]:
    """(what the model's process sees, what the benchmark's process sees): each plugin with what it uses.

    The plan writes `folders` as the model's part (`model_folders`) followed by the benchmark's, so a folder both
    reach is in both parts and on both sides (each side installs its setup.py into its own environment). A folder
    only the model reaches is never on the benchmark's side: its setup.py would run there, as the benchmark's
    user, able to write the benchmark's `site` (a sitecustomize.py there runs at the benchmark's start-up)."""
    folders = list(pair.get("folders") or [f"models/{pair['model_plugin']}", f"benchmarks/{pair['benchmark_plugin']}"])
    own = pair.get("model_folders")
    if own is None:  # a manifest written before `model_folders`: the model's part comes first all the same
        bench = f"benchmarks/{pair['benchmark_plugin']}"
        own = folders[:folders.index(bench)] if bench in folders else [f"models/{pair['model_plugin']}"]
    own = list(own)
    if folders[:len(own)] == own:
        rest = folders[len(own):]
    else:  # not in the plan's order: the benchmark's side gets nothing the model's part names (closed)
        rest = [f for f in folders if f not in own]
    return own, list(dict.fromkeys(rest))


def _process_limit(manifest: Manifest) -> int | None:
    """RLIMIT_NPROC for the pair. As root each pair has its own user, so the limit is the pair's own; otherwise
    the limit counts every process of the user running the worker, so it is raised by what that user runs now."""
    if manifest.sandbox == "off" or not manifest.max_processes:
        return None
    if sb.running_as_root():
        return manifest.max_processes
    return manifest.max_processes + sb.count_tasks(os.getuid())
