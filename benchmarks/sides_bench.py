"""What an environment per side costs a pair on a cache hit: the same pairs, the same job, once with each side in its
own environment (the model's: the domain's dependencies and the model's requirement; the benchmark's: the domain's
alone) and once with both sides in ONE shared environment (the union, as every pair ran before the split), in one
run, alternating.

A repository with a domain dependency (numpy, imported by both sides) and four models that each require one more
package (six) the benchmark does not: per side, the model's environment is numpy + six and the benchmark's numpy;
shared, both processes run in numpy + six. Both bundles are rendered from real plans (`make_plan`, `shared=True`
for the baseline), every environment is built once beforehand (the cache hit), then each bundle's job script runs
its one task of four pairs on this machine as the local executor runs it: the environment step (finds each
environment complete), the worker, each pair's two sandboxed processes (bubblewrap as here: root, per-pair users),
the boundary, the result files. Results are checked equal (every pair ok, the same score both ways).
ratio = the median, over reps, of per-side seconds / shared seconds, the two runs of each rep back to back (their
order swapped every other rep), so that what else runs on a shared machine moves both alike; target <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import last_line

from pipeline.config import load_settings, python_version
from pipeline.executors.base import job_environment
from pipeline.stages.bundle import Bundle, render_bundle
from pipeline.stages.detect import detect_all
from pipeline.stages.plan import make_plan

MODELS = 4

BENCHMARK = """
import numpy as np

from side_dom import benchmark_registry


class Bench:
    ceiling = 1.0

    def __call__(self, model):
        answers = np.array([model.answer(i) for i in range(4)])
        return float((answers == np.arange(4) * 2).mean()) / 2


benchmark_registry['bench'] = Bench
"""

MODEL = """
import numpy as np
import six

from side_dom import model_registry


class Doubler:
    def answer(self, i):
        return int(np.int64(i) * 2) if six.PY3 else -1


model_registry['model-{i}'] = Doubler
"""


def repo(dest: Path) -> Path:
    dom = dest / "side_dom"
    (dom / "benchmarks/bench").mkdir(parents=True)
    (dest / "pyproject.toml").write_text('[project]\nname = "side-dom"\nversion = "0.1"\ndependencies = ["numpy<2"]\n')
    (dom / "__init__.py").write_text("model_registry = {}\nbenchmark_registry = {}\n")
    (dom / "benchmarks/bench/__init__.py").write_text(BENCHMARK)
    for i in range(MODELS):
        (dom / f"models/m{i}").mkdir(parents=True)
        (dom / f"models/m{i}/__init__.py").write_text(MODEL.replace("{i}", str(i)))
        (dom / f"models/m{i}/requirements.txt").write_text("six==1.16.0\n")
    env = {"GIT_AUTHOR_NAME": "B", "GIT_AUTHOR_EMAIL": "b@example.org", "GIT_COMMITTER_NAME": "B",
           "GIT_COMMITTER_EMAIL": "b@example.org", "PATH": "/usr/bin:/bin"}
    for args in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "plugins"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env)
    return dest


def bundle_for(tmp: Path, source: Path, shared: bool) -> Bundle:
    name = "shared" if shared else "sides"
    settings = load_settings({"state_dir": str(tmp / name), "env_root": str(tmp / "envs"), "pairs_per_task": 8,
                              "sandbox": "bwrap"}, environ={})
    change, catalog = detect_all(source, "HEAD")
    plan = make_plan(change, catalog, locks_dir=tmp / "locks", uv=settings.coordinator_uv,
                     python_version=python_version(settings.python), scored=lambda keys: set(), shared=shared)
    assert len(plan.to_run) == MODELS and not plan.cannot_run, plan.to_json()
    return render_bundle(settings, plan, source, "local", run_id=f"bench-{name}")


def run_job(bundle: Bundle) -> tuple[float, dict[str, float]]:
    """One run of the bundle's one task, timed from `bash job.sh` to its end; the scores it wrote."""
    for old in bundle.spool_dir.glob("*.json"):  # the worker keeps a finished pair: every run scores anew
        old.unlink()
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(bundle.job_script)], env=job_environment({"SLURM_ARRAY_TASK_ID": "0"}),
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    results = [json.loads(p.read_text()) for p in bundle.spool_dir.glob("*.json")]
    if proc.returncode != 0 or len(results) != MODELS or any(r["status"] != "ok" for r in results):
        sys.exit(f"the job failed: {proc.stderr[-2000:]} {[r.get('reason') for r in results]}\n"
                 + (bundle.log_dir / "task-0.out").read_text()[-3000:])
    return seconds, {r["model"]: r["score_ceiled"] for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.reps = 1
    with tempfile.TemporaryDirectory(prefix="sides-bench-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        source = repo(tmp / "repo")
        bundles = {"sides": bundle_for(tmp, source, shared=False), "shared": bundle_for(tmp, source, shared=True)}
        tasks = {name: b.manifest.tasks for name, b in bundles.items()}
        assert all(len(t) == 1 for t in tasks.values()), tasks  # the same shape: one task of four pairs each way
        envs = {name: {side: e["env_key"] for side, e in t[0]["envs"].items()} for name, t in tasks.items()}
        assert envs["sides"]["model"] != envs["sides"]["benchmark"]  # two environments...
        assert envs["shared"]["model"] == envs["shared"]["benchmark"] == envs["sides"]["model"]  # ...or the union
        scores = {name: run_job(b)[1] for name, b in bundles.items()}  # builds every environment (untimed)
        assert scores["sides"] == scores["shared"] == {f"model-{i}": 0.5 for i in range(MODELS)}, scores
        times: dict[str, list[float]] = {"sides": [], "shared": []}
        for rep in range(args.reps):  # back to back, the order swapped every other time
            for name in (("sides", "shared") if rep % 2 else ("shared", "sides")):
                seconds, got = run_job(bundles[name])
                assert got == scores[name]
                times[name].append(seconds)
        logs = {name: (b.log_dir / "env-0.log").read_text() for name, b in bundles.items()}
        assert "building" not in logs["sides"] + logs["shared"]  # the cache hit: every environment was complete
        shutil.rmtree(tmp / "envs", ignore_errors=True)
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    # each rep's two runs back to back: their ratio cancels what the rest of a shared machine does meanwhile
    paired = sorted(a / b for a, b in zip(times["sides"], times["shared"]))
    print(f"{MODELS} pairs in one task, environments built: shared (one environment, both sides) "
          f"{median['shared']:.3f} s, per side (model's and benchmark's) {median['sides']:.3f} s "
          f"(medians of {args.reps}; per pair {median['shared'] / MODELS:.3f} s and {median['sides'] / MODELS:.3f} s); "
          f"median of the paired ratios {paired[len(paired) // 2]:.3f}; load {os.getloadavg()[0]:.1f}")
    last_line({"ratio": round(paired[len(paired) // 2], 3),
               "ratio_of_medians": round(median["sides"] / median["shared"], 3),
               "best_ratio": round(best["sides"] / best["shared"], 3),
               "sides_seconds": round(median["sides"], 3), "shared_seconds": round(median["shared"], 3),
               "per_pair_sides_seconds": round(median["sides"] / MODELS, 4),
               "per_pair_shared_seconds": round(median["shared"] / MODELS, 4), "pairs": MODELS, "reps": args.reps,
               "all_sides_seconds": [round(t, 3) for t in times["sides"]],
               "all_shared_seconds": [round(t, 3) for t in times["shared"]],
               "load_at_end": round(os.getloadavg()[0], 2),
               "ratio_definition": "median over reps of per-side seconds / shared seconds, the two runs of a rep back "
                                   "to back, for the same task of 4 pairs, environments built (target <= 1.1)"})


if __name__ == "__main__":
    os.umask(0o022)
    main()
