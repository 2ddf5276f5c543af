"""40 trivial pairs through the pipeline on Slurm against one sbatch job per pair, same cluster, same run.

Ours: `score-plugins run --executor slurm` (pairs packed 4 per array task, one environment built once
and reused, one sacct call per poll cycle). Baseline, the Brain-Score way: one sbatch job per pair,
each building its environment afresh, then scoring. Both use the same rendered job script and worker.
Needs the cluster: scripts/slurm-cluster up. ratio = ours / baseline seconds (target < 0.5).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import last_line, synthetic_repo

from pipeline.bundle import render_bundle
from pipeline.config import load_settings
from pipeline.database import open_database
from pipeline.detect import detect_all
from pipeline.executors.base import job_environment
from pipeline.plan import make_plan
from pipeline.run import Request, execute, python_version

PAIRS = 40


def trivial_repo(dest: Path) -> Path:
    repo = synthetic_repo(dest, PAIRS, 1)
    base = repo / "bench_domain"
    (base / "__init__.py").write_text("model_registry = {}\nbenchmark_registry = {}\ndata_registry = {}\n"
                                      "metric_registry = {}\n")
    (base / "benchmarks/b0000/__init__.py").write_text(
        "from bench_domain import benchmark_registry\n\nclass Trivial:\n    ceiling = 1.0\n"
        "    def __call__(self, model):\n        return 0.5\n\nbenchmark_registry['bench-0000'] = Trivial\n")
    for d in list((base / "models").iterdir()) + [base / "benchmarks/b0000"]:
        (d / "requirements.txt").write_text("six==1.16.0\n")
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "trivial plugins"], check=True,
                   env={"GIT_AUTHOR_NAME": "B", "GIT_AUTHOR_EMAIL": "b@example.org", "GIT_COMMITTER_NAME": "B",
                        "GIT_COMMITTER_EMAIL": "b@example.org", "PATH": "/usr/bin:/bin"})
    return repo


def wait_for(job_ids: list[str]) -> None:
    while True:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.5)


def main() -> None:
    subprocess.run([str(Path(__file__).resolve().parents[1] / "scripts/slurm-cluster"), "up"], check=True)
    out: dict = {"pairs": PAIRS}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp_path = Path(tmp)
        Path(tmp).chmod(0o755)
        repo = trivial_repo(tmp_path / "repo")
        settings = load_settings({"state_dir": str(tmp_path / "state"), "env_root": str(tmp_path / "envs")})
        db = open_database("local", settings.state_dir)
        try:
            start = time.perf_counter()
            result = execute(settings, db, Request(repo=repo, all=True, executor="slurm"))
            out["ours_seconds"] = round(time.perf_counter() - start, 2)
            assert result.states == {"COMPLETED": PAIRS}, result.states
            stats = result.executor_stats
            out["poll_cycles"] = stats["poll_cycles"]
            out["sacct_calls_per_poll_cycle"] = stats["sacct_calls"] / max(1, stats["poll_cycles"])
            print(f"ours: {PAIRS} pairs in {out['ours_seconds']} s, {out['poll_cycles']} poll cycles, "
                  f"{out['sacct_calls_per_poll_cycle']} sacct call per cycle")

            # baseline: one job per pair, each with a fresh environment
            fresh = load_settings({"state_dir": str(tmp_path / "state-base"), "pairs_per_task": 1,
                                   "env_mode": "fresh"})
            change, catalog = detect_all(repo, "HEAD")
            plan = make_plan(change, catalog, locks_dir=fresh.locks_dir, uv=fresh.uv,
                             python_version=python_version(fresh.python), scored=lambda keys: set())
            bundle = render_bundle(fresh, plan, repo, "slurm")
            start = time.perf_counter()
            ids = []
            for index in range(bundle.n_tasks):
                env = job_environment({"SCORE_PLUGINS_TASK_OFFSET": str(index)})
                proc = subprocess.run(["sbatch", "--parsable", "--array=0", f"--output={bundle.log_dir}/b-%j.out",
                                       str(bundle.job_script)], capture_output=True, text=True, env=env, check=True)
                ids.append(proc.stdout.strip())
            wait_for(ids)
            out["baseline_seconds"] = round(time.perf_counter() - start, 2)
            done = len(list(bundle.spool_dir.glob("*.json")))
            assert done == PAIRS, done
            print(f"baseline: {PAIRS} sbatch jobs in {out['baseline_seconds']} s")
        finally:
            db.close()
    out["ratio"] = round(out["ours_seconds"] / out["baseline_seconds"], 3)
    out["ratio_definition"] = "ours_seconds / baseline_seconds (lower is better); target < 0.5"
    last_line(out)


if __name__ == "__main__":
    sys.exit(main())
