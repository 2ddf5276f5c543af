"""Render one run's bundle: code snapshot, lockfiles, manifest, job scripts, spool and log folders.

The bundle is self-contained: an admin can `sbatch job.sh` it by hand, and its
results land in `spool/` where `score-plugins ingest` finds them. It holds no
credential of any kind.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from envs.conda import rattler_tool, stage_lockfile
from jobscripts import ScoreJob, TaskLine, render_env_builder, render_score_job
from pipeline import gitrepo
from pipeline.config import Settings
from pipeline.errors import BadInput
from pipeline.plan import Plan, PlannedPair
from pipeline.units import size_bytes
from pipeline.worker import Manifest

WORKER_SOURCE = Path(__file__).with_name("worker.py")
SANDBOX_SOURCE = Path(__file__).with_name("sandbox.py")  # imported by the worker, run by the env builders
BOUNDARY_SOURCE = Path(__file__).with_name("boundary.py")  # the model's process and its stand-in, next to the worker
RATTLER_TOOL = Path(rattler_tool())


@dataclass
class Bundle:
    run_id: str
    run_dir: Path
    job_script: Path
    manifest_path: Path
    manifest: Manifest
    executor: str

    @property
    def spool_dir(self) -> Path:
        return self.run_dir / "spool"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def n_tasks(self) -> int:
        return len(self.manifest.tasks)

    def pairs(self) -> list[dict]:
        return [p for t in self.manifest.tasks for p in t["pairs"]]

    def task_of(self) -> dict[str, int]:
        return {p["key"]: t["index"] for t in self.manifest.tasks for p in t["pairs"]}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def pack_tasks(pairs: list[PlannedPair], per_task: int) -> list[list[PlannedPair]]:
    """Group pairs by environment, then cut each group into tasks of at most `per_task` pairs."""
    by_env: dict[str, list[PlannedPair]] = {}
    for pair in pairs:
        assert pair.lock is not None
        by_env.setdefault(pair.lock.env_hash, []).append(pair)
    tasks = []
    for env_hash in sorted(by_env):
        group = by_env[env_hash]
        tasks.extend(group[i:i + per_task] for i in range(0, len(group), per_task))
    return tasks


def code_paths(repo: Path, plan: Plan) -> list[str]:
    """What a bundle's code snapshot holds: the domain package (its `__init__.py` files, helpers, type-level
    modules) and the plugin folders its pairs use, not the repository's other hundreds of plugins."""
    root = plan.domain_root
    needed = {f"{root}/{folder}" for pair in plan.to_run for folder in pair.folders}
    paths = []
    for entry in gitrepo.list_tree_level(repo, plan.commit, root):
        name = entry.path.rsplit("/", 1)[-1]
        if entry.kind == "tree" and name in ("models", "benchmarks", "data", "metrics"):
            paths.extend(e.path for e in gitrepo.list_tree_level(repo, plan.commit, entry.path)
                         if e.kind == "blob" or e.path in needed)
        else:
            paths.append(entry.path)
    return paths


def pair_entry(pair: PlannedPair) -> dict:
    assert pair.lock is not None
    return {
        "key": pair.key, "model": pair.model, "benchmark": pair.benchmark,
        "model_plugin": pair.model_plugin, "benchmark_plugin": pair.benchmark_plugin,
        "model_code_hash": pair.model_code_hash, "benchmark_code_hash": pair.benchmark_code_hash,
        "lock_hash": pair.lock.lock_hash, "env_hash": pair.lock.env_hash,
        "model_owner": pair.model_owner, "benchmark_owner": pair.benchmark_owner, "submitters": pair.submitters,
        "reasons": pair.reasons, "folders": list(pair.folders), "setup_in_job": list(pair.setup_in_job),
        "model_folders": list(pair.model_folders),
    }


def render_bundle(settings: Settings, plan: Plan, repo: Path, executor: str, out_dir: Path | None = None,
                  run_id: str | None = None) -> Bundle:
    """Write the bundle for `plan.to_run` into `out_dir` (default: the state folder's runs/<run id>)."""
    run_id = run_id or new_run_id()
    run_dir = (out_dir or settings.runs_dir / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("spool", "logs", "locks"):
        (run_dir / sub).mkdir(exist_ok=True)
    code_dir = run_dir / "code"
    if not code_dir.exists():
        gitrepo.export_tree(repo, plan.commit, code_paths(repo, plan), code_dir)
    worker = run_dir / "worker.py"
    shutil.copyfile(WORKER_SOURCE, worker)
    shutil.copyfile(SANDBOX_SOURCE, run_dir / "sandbox.py")
    shutil.copyfile(BOUNDARY_SOURCE, run_dir / "boundary.py")

    tasks = []
    task_lines = []
    conda_builder = run_dir / "build_env_conda.sh"
    for index, group in enumerate(pack_tasks(plan.to_run, settings.pairs_per_task)):
        lock = group[0].lock
        assert lock is not None
        if getattr(lock, "kind", "pip") == "conda":
            lockfile = conda_lockfile(lock, run_dir)
            builder = str(conda_builder)
        else:
            lockfile = run_dir / "locks" / f"{lock.env_hash}.txt"
            if not lockfile.exists():
                shutil.copyfile(lock.path, lockfile)
            builder = ""
        tasks.append({"index": index, "env_key": lock.env_hash, "lockfile": str(lockfile),
                      "packages": env_packages(lock), "pairs": [pair_entry(p) for p in group]})
        task_lines.append(TaskLine(index, lock.env_hash, str(lockfile), builder))
    if any(t.builder for t in task_lines):
        _write(conda_builder, render_env_builder(
            backend=settings.conda_backend, rattler_python=settings.rattler_python,
            rattler_tool=str(run_dir / "rattler_tool.py"), micromamba=settings.micromamba, conda=settings.conda,
            uv=settings.uv, package_cache=str(settings.package_cache or ""), sandbox=settings.sandbox,
            python=settings.python, extra_ro=tuple(settings.sandbox_extra_paths)), executable=True)
        shutil.copyfile(RATTLER_TOOL, run_dir / "rattler_tool.py")

    env_root = Path(settings.env_root).resolve()
    manifest = Manifest(
        run_id=run_id, commit=plan.commit, domain_root=plan.domain_root, executor=executor, code_dir=str(code_dir),
        spool_dir=str(run_dir / "spool"), log_dir=str(run_dir / "logs"), worker=str(worker), env_root=str(env_root),
        env_mode=settings.env_mode, env_backend=settings.env_backend, pair_timeout=settings.pair_timeout,
        cpus_per_task=settings.cpus_per_task, array_throttle=settings.array_throttle, sandbox=settings.sandbox,
        # Slurm enforces `mem` itself; on this machine the worker sets it as the plugin's data limit
        mem_limit_bytes=size_bytes(settings.mem) if executor == "local" else None,
        state_dir=str(settings.state_dir.resolve()),
        shared_cache=str(Path(settings.shared_cache).resolve()) if settings.shared_cache else None,
        trusted_caches=list(settings.trusted_caches), boundary_cap_bytes=size_bytes(settings.boundary_cap) or 0,
        plugin_env=dict(item.split("=", 1) for item in settings.plugin_env),
        sandbox_extra_paths=list(settings.sandbox_extra_paths),
        sandbox_network=settings.sandbox_network, max_processes=settings.pair_max_processes,
        disk_limit_bytes=size_bytes(settings.pair_disk_limit), output_limit_bytes=size_bytes(settings.pair_output_limit),
        shm_bytes=size_bytes(settings.pair_shm) or (512 << 20), uid_base=settings.sandbox_uid_base,
        uv=settings.uv,  # installs what a dynamic setup.py asks for, inside the job's sandbox
        created_at=datetime.now(timezone.utc).isoformat(), tasks=tasks,
    )
    manifest_path = run_dir / "manifest.json"
    _write(manifest_path, manifest.to_json())
    manifest.path = str(manifest_path.resolve())

    build_env = run_dir / "build_env.sh"
    # always uv: with env_backend = conda every pair has a conda lock and runs the conda builder instead
    _write(build_env, render_env_builder(backend="uv", uv=settings.uv, python=settings.python,
                                         package_cache=str(settings.package_cache or ""),
                                         sandbox=settings.sandbox, extra_ro=tuple(settings.sandbox_extra_paths)),
           executable=True)
    array = f"0-{max(len(tasks) - 1, 0)}" + (f"%{settings.array_throttle}" if settings.array_throttle else "")
    job = ScoreJob(
        run_id=run_id, run_dir=str(run_dir), manifest=str(manifest_path), worker=str(worker),
        python=settings.python, build_env=str(build_env), log_dir=str(run_dir / "logs"), env_root=str(env_root),
        env_mode=settings.env_mode, tasks=tuple(task_lines), n_pairs=len(plan.to_run),
        modules=tuple(settings.modules),
        slurm=settings.slurm_options(f"score-{run_id}", array),
    )
    job_script = run_dir / "job.sh"
    _write(job_script, render_score_job(job), executable=True)
    return Bundle(run_id, run_dir, job_script, manifest_path, manifest, executor)


def env_packages(lock) -> dict:  # noqa: ANN001 - envs.lock.Lock or envs.conda.CondaLock
    """The run's record of what its environment holds, by layer (the lockfile beside it has the hashes)."""
    if getattr(lock, "kind", "pip") == "conda":
        return {"kind": "conda", "conda": list(lock.packages), "pip": list(lock.pip_packages)}
    return {"kind": "pip", "conda": [], "pip": list(lock.packages)}


def conda_lockfile(lock, run_dir: Path) -> Path:  # noqa: ANN001 - envs.conda.CondaLock
    """The task's lockfile for the conda backends: the one conda-lock.yml (conda and pip layers), with the
    explicit file `conda-lock render` makes from it beside it (the node's micromamba or conda reads its conda
    URLs; every backend's uv reads its `# pip` lines)."""
    return stage_lockfile(lock.path, run_dir / "locks" / lock.env_hash)


_manifests: dict[Path, tuple[tuple[int, int], Manifest]] = {}


def read_manifest(run_dir: Path) -> Manifest:
    """A bundle's manifest (BadInput when it is not one this version can read), read again only when the file
    changed: the watch loop asks for it every half second, and a run of 10,000 pairs has a manifest of megabytes."""
    path = run_dir / "manifest.json"
    try:
        stat = path.stat()
        cached = _manifests.get(path)
        if cached and cached[0] == (stat.st_mtime_ns, stat.st_size):
            return cached[1]
        manifest = Manifest.load(path)
    except FileNotFoundError:
        raise BadInput(f"{run_dir} is not a run bundle (no manifest.json)") from None
    except (OSError, ValueError) as exc:  # ManifestError is a ValueError, as is bad JSON
        raise BadInput(f"{path} cannot be read ({exc})") from None
    _manifests[path] = ((stat.st_mtime_ns, stat.st_size), manifest)
    return manifest


def load_bundle(run_dir: Path) -> Bundle:
    """A rendered bundle from its folder."""
    manifest = read_manifest(run_dir)
    return Bundle(manifest.run_id, run_dir, run_dir / "job.sh", run_dir / "manifest.json", manifest,
                  manifest.executor)


def _write(path: Path, text: str, executable: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    if executable:
        os.chmod(tmp, 0o755)
    os.replace(tmp, path)
