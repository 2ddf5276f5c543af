"""Render one run's bundle: code snapshot, lockfiles, manifest, job scripts, spool and log folders.

The bundle is self-contained: an admin can `sbatch job.sh` it by hand, and its
results land in `spool/` where `score-plugins ingest` finds them. It holds no
credential of any kind.
"""

from __future__ import annotations

import compileall
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from envs.conda import rattler_tool, stage_lockfile
from envs.sides import SIDES
from jobscripts import EnvLine, ScoreJob, SubmitArray, TaskLine, render_env_builder, render_score_job, render_submit
from pipeline.atomic import write_atomically
from pipeline.catalog import gitrepo
from pipeline.config import Settings
from pipeline.confine import build_network
from pipeline.errors import BadInput
from pipeline.stages.plan import Plan, PlannedPair
from pipeline.tiers import Tier
from pipeline.units import size_bytes
from pipeline.job.manifest import Manifest

JOB_PACKAGE = Path(__file__).parents[1] / "job"  # pipeline/job: everything that runs on a node, stdlib only
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
        """Each pair of the run once (a pair an escalation ran again is in several tasks)."""
        return list({p["key"]: p for t in self.manifest.tasks for p in t["pairs"]}.values())

    def task_of(self) -> dict[str, int]:
        """Each pair's task (its latest, when an escalation ran it again)."""
        return {p["key"]: t["index"] for t in self.manifest.tasks for p in t["pairs"]}

    def script_for(self, index: int) -> tuple[Path, int]:
        """The job script that runs task `index`, and the task's index within that script's array."""
        task = self.manifest.tasks[index]
        script = task.get("script", "job.sh")
        first = next(t["index"] for t in self.manifest.tasks if t.get("script", "job.sh") == script)
        return self.run_dir / script, index - first

    def arrays(self) -> list[tuple[Path, int, int]]:
        """(job script, first task, task count) of each array, in task order."""
        found: dict[str, list[int]] = {}
        for task in self.manifest.tasks:
            found.setdefault(task.get("script", "job.sh"), []).append(task["index"])
        return [(self.run_dir / name, ids[0], len(ids)) for name, ids in found.items()]


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def pack_tasks(pairs: list[PlannedPair], per_task: int) -> list[list[PlannedPair]]:
    """Group pairs by their two environments (the model's and the benchmark's), then cut each group into tasks of
    at most `per_task` pairs."""
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
        "benchmark_parent": pair.benchmark_parent, "benchmark_version": pair.benchmark_version,
        "parent_note": pair.parent_note, "benchmark_runtime_id": pair.benchmark_runtime_id,
        "model_folders": list(pair.model_folders),
    }


def copy_job_package(folder: Path) -> Path:
    """The job package (its code only) copied into `folder` as `job/`; returns the copy's worker.py. The job runs
    its files as files (`python job/worker.py`, `job/sandbox.py`, `job/boundary.py`): each imports its package."""
    dest = folder / "job"
    shutil.copytree(JOB_PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    # bytecode for a job on this Python (read-only in the sandbox): a pair's two processes import, not compile
    compileall.compile_dir(str(dest), quiet=1, force=True)
    return dest / "worker.py"


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
    worker = copy_job_package(run_dir)

    conda_builder = run_dir / "build_env_conda.sh"
    tiers = settings.tier_list
    default = tiers[0].name
    groups = [(t, [p for p in plan.to_run if (p.tier or default) == t.name]) for t in tiers]
    tasks: list[dict] = []
    for tier, group in groups:
        for chunk in pack_tasks(group, settings.pairs_per_task):
            envs = chunk[0].lock
            assert envs is not None
            tasks.append(task_entry(settings, executor, tier, len(tasks), envs.env_hash,
                                    {side: side_env(lock, run_dir, conda_builder) for side, lock in envs.sides()},
                                    [pair_entry(p) for p in chunk]))
    if any(env["builder"] for t in tasks for env in t["envs"].values()):
        _write(conda_builder, render_env_builder(
            backend=settings.conda_backend, rattler_python=settings.rattler_python,
            rattler_tool=str(run_dir / "rattler_tool.py"), micromamba=settings.micromamba, conda=settings.conda,
            uv=settings.uv, package_cache=str(settings.package_cache or ""), sandbox=settings.sandbox,
            python=settings.python, extra_ro=tuple(settings.sandbox_extra_paths),
            network=build_network(settings)), executable=True)
        shutil.copyfile(RATTLER_TOOL, run_dir / "rattler_tool.py")

    env_root = Path(settings.env_root).resolve()
    manifest = Manifest(
        run_id=run_id, commit=plan.commit, domain_root=plan.domain_root, executor=executor, code_dir=str(code_dir),
        spool_dir=str(run_dir / "spool"), log_dir=str(run_dir / "logs"), worker=str(worker), env_root=str(env_root),
        env_mode=settings.env_mode, env_backend=settings.env_backend, pair_timeout=settings.pair_timeout,
        cpus_per_task=settings.cpus_per_task, array_throttle=settings.array_throttle, sandbox=settings.sandbox,
        # Slurm enforces `mem` itself; on this machine the worker sets it as the plugin's data limit
        mem_limit_bytes=size_bytes(settings.mem) if executor == "local" else None,
        local_memory=settings.local_memory,  # a memory cgroup per pair (or, explicitly, RLIMIT_DATA only)
        state_dir=str(settings.state_dir.resolve()),
        shared_cache=str(Path(settings.shared_cache).resolve()) if settings.shared_cache else None,
        trusted_caches=list(settings.trusted_caches), boundary_cap_bytes=size_bytes(settings.boundary_cap) or 0,
        plugin_env=dict(item.split("=", 1) for item in settings.plugin_env),
        sandbox_extra_paths=list(settings.sandbox_extra_paths),
        sandbox_network=settings.sandbox_network, max_processes=settings.pair_max_processes,
        disk_limit_bytes=size_bytes(settings.pair_disk_limit), output_limit_bytes=size_bytes(settings.pair_output_limit),
        cache_limit_bytes=size_bytes(settings.plugin_cache_limit),
        shm_bytes=size_bytes(settings.pair_shm) or (512 << 20), uid_base=settings.sandbox_uid_base,
        uv=settings.uv,  # installs what a dynamic setup.py asks for, inside the job's sandbox
        gpu_dev_dir=settings.gpu_dev_dir,
        created_at=datetime.now(timezone.utc).isoformat(), tasks=tasks,
    )
    manifest_path = run_dir / "manifest.json"
    manifest.path = str(manifest_path.resolve())

    _write(run_dir / "build_env.sh", render_env_builder(
        # always uv: with env_backend = conda every pair has a conda lock and runs the conda builder instead
        backend="uv", uv=settings.uv, python=settings.python, package_cache=str(settings.package_cache or ""),
        sandbox=settings.sandbox, extra_ro=tuple(settings.sandbox_extra_paths), network=build_network(settings)),
        executable=True)
    job_script = run_dir / "job.sh"
    write_scripts(settings, run_dir, manifest, tasks, "")
    if not tasks:  # an empty plan still leaves a job script an admin can read
        _write(job_script, render_score_job(score_job(settings, manifest, run_dir, [], tiers[0], 0)),
               executable=True)
    _write(manifest_path, manifest.to_json())
    bundle = Bundle(run_id, run_dir, job_script, manifest_path, manifest, executor)
    _write(run_dir / "submit.sh", render_submit(run_id, str(run_dir), tuple(  # sbatch by hand, ids recorded
        SubmitArray(script.name, first, n) for script, first, n in bundle.arrays())), executable=True)
    return bundle


def side_env(lock, run_dir: Path, conda_builder: Path) -> dict:  # noqa: ANN001 - a Lock or CondaLock
    """One side's environment as a task records it: its key (the folder under env_root), its lockfile in the
    bundle (once per environment, whichever pairs and sides share it), the builder for its kind of lock (empty:
    the job's uv one), and its packages by layer."""
    if getattr(lock, "kind", "pip") == "conda":
        lockfile, builder = conda_lockfile(lock, run_dir), str(conda_builder)
    else:
        lockfile, builder = run_dir / "locks" / f"{lock.env_hash}.txt", ""
        if not lockfile.exists():
            shutil.copyfile(lock.path, lockfile)
    return {"env_key": lock.env_hash, "lockfile": str(lockfile), "builder": builder, "packages": env_packages(lock)}


def task_entry(settings: Settings, executor: str, tier: Tier, index: int, env_key: str, envs: dict,
               pairs: list[dict]) -> dict:
    """One array task of the manifest: its pairs, the environment of each side (`envs`: "model" and "benchmark",
    each as side_env records it; `env_key` names the two, `<model's>+<benchmark's>`), and the tier it runs on
    (the local executor enforces that tier's memory on the plugin and its time on the task; Slurm its own)."""
    return {"index": index, "env_key": env_key, "envs": envs, "pairs": pairs, "tier": tier.name,
            "time_minutes": tier.time_minutes, "mem": tier.mem, "gpus": tier.gpus,
            "mem_limit_bytes": tier.mem_bytes if executor == "local" else None}


def score_job(settings: Settings, manifest: Manifest, run_dir: Path, tasks: list[dict], tier: Tier,
              first: int) -> ScoreJob:
    throttle = f"%{settings.array_throttle}" if settings.array_throttle else ""
    return ScoreJob(
        run_id=manifest.run_id, run_dir=str(run_dir), manifest=str(run_dir / "manifest.json"),
        worker=manifest.worker, python=settings.python, build_env=str(run_dir / "build_env.sh"),
        log_dir=manifest.log_dir, env_root=manifest.env_root, env_mode=manifest.env_mode,
        tasks=tuple(TaskLine(t["index"], *(EnvLine(t["envs"][side]["env_key"], t["envs"][side]["lockfile"],
                                                    t["envs"][side]["builder"]) for side in SIDES)) for t in tasks),
        n_pairs=sum(len(t["pairs"]) for t in tasks), modules=tuple(settings.modules),
        slurm=settings.slurm_options(f"score-{manifest.run_id}", f"0-{max(len(tasks) - 1, 0)}{throttle}", tier),
        first_task=first)


def write_scripts(settings: Settings, run_dir: Path, manifest: Manifest, tasks: list[dict], label: str) -> None:
    """One job script per tier among `tasks` (consecutive in the manifest), each an array with that tier's
    request in its header: job.sh for the run's first array, job-<tier>.sh (job-<label>-<tier>.sh for an
    escalation) for the others. Each task records its script."""
    tiers = {t.name: t for t in settings.tier_list}
    start = 0
    while start < len(tasks):
        tier = tasks[start]["tier"]
        end = start
        while end < len(tasks) and tasks[end]["tier"] == tier:
            end += 1
        first = tasks[start]["index"]
        name = "job.sh" if first == 0 else f"job-{label + '-' if label else ''}{tier}.sh"
        _write(run_dir / name, render_score_job(score_job(settings, manifest, run_dir, tasks[start:end],
                                                          tiers[tier], first)), executable=True)
        for task in tasks[start:end]:
            task["script"] = name
        start = end


def add_tasks(settings: Settings, bundle: Bundle, placed: list[tuple[str, list[dict]]], label: str,
              per_task: int | None = None) -> list[int]:
    """Append tasks to a run (an escalation: pairs on a larger tier, or the neighbours of a pair that ran out of
    memory), each tier its own new array script, `per_task` pairs a task (default `pairs_per_task`); the manifest
    is rewritten. Returns the new task indices."""
    tiers = {t.name: t for t in settings.tier_list}
    per_task = per_task or settings.pairs_per_task
    by_key = {p["key"]: t for t in bundle.manifest.tasks for p in t["pairs"]}
    new: list[dict] = []
    for tier_name, pairs in placed:
        by_env: dict[str, list[dict]] = {}
        for pair in pairs:
            by_env.setdefault(by_key[pair["key"]]["env_key"], []).append(pair)
        for env_key in sorted(by_env):
            group = by_env[env_key]
            source = by_key[group[0]["key"]]
            for i in range(0, len(group), per_task):
                new.append(task_entry(settings, bundle.executor, tiers[tier_name],
                                      len(bundle.manifest.tasks) + len(new), env_key, source["envs"],
                                      group[i:i + per_task]))
    write_scripts(settings, bundle.run_dir, bundle.manifest, new, label)
    bundle.manifest.tasks.extend(new)
    _write(bundle.manifest_path, bundle.manifest.to_json())
    return [t["index"] for t in new]


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
    write_atomically(path, text, 0o755 if executable else None)
