"""40 trivial pairs on the one-node Slurm cluster: our pipeline against three baselines, same cluster, same run.

Every timer starts at the same point (a plan in hand, nothing rendered) and stops when every pair's result
exists; every side's results are checked (status ok, score 0.5 each).
- ours: render the bundle (pairs packed 4 per array task, grouped by environment), one array job, the
  environment built once and reused (built beforehand: the cache is warm), watched with one sacct call per poll
  cycle, results ingested into the database as they arrive;
- per_pair: the same, but one sbatch job per pair (the Brain-Score way), environment cache warm;
- fresh_env: ours, but every task builds its environment afresh (env_mode=fresh);
- floor: one hand-written `sbatch --array` of the same shape as ours (the same pairs in the same tasks), each
  task running, for each of its pairs, the same scoring process: the environment's Python importing the same
  plugins from the same code snapshot and calling the benchmark on the model, writing the result file of the pair
  (key, status, score); no sandbox, no worker, no database, no watching. Its results are checked equal to ours
  (the same keys, the same scores). The old floor, the same array writing the files with `echo` (the scheduler's
  own cost), is kept as `echo_floor_seconds`;
- sandboxed floor: the same array again, each pair's two sandboxed processes (the model's, building the model,
  and the benchmark's, scoring) started by a shell loop with exactly the bubblewrap view, seccomp filter and
  unprivileged user our worker gives them (argv from the job's own `sandboxed`); results checked equal.
Figures: ratio_packing = ours / per_pair (the effect of arrays and packing), ratio_env_cache = ours / fresh_env
(the effect of the cache), floor_ratio = ours / floor (the pipeline's own overhead over the same scoring
processes under the same scheduler; 1.0 would be none; goal <= 1.2), sandboxed_floor_ratio = ours / the sandboxed
floor (what the pipeline adds beyond the defences it must pay for: two sandboxed processes per pair).
The last line's `ratio` is ratio_packing. Needs the cluster: scripts/slurm-cluster up.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import last_line, trivial_repo

from pipeline.job.pair_sandbox import sandboxed
from pipeline.job.seccomp import seccomp_program
from pipeline.stages import ledger
from pipeline.stages.bundle import Bundle, render_bundle
from pipeline.config import Settings, load_settings, python_version
from pipeline.database import open_database
from pipeline.stages.detect import detect_all
from pipeline.executors.base import job_environment
from pipeline.executors.slurm import SlurmExecutor
from pipeline.stages.plan import Plan, make_plan
from pipeline.stages.watch import Watcher

PAIRS = 40


def wait_for(job_ids: list[str]) -> None:
    while True:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.5)


def run_array(script: Path, tasks: int, spool: Path, out: dict, name: str) -> dict[str, float]:
    """Submit a hand-written `sbatch --array` of `tasks` tasks, time it to its end, check and return its scores."""
    start = time.perf_counter()
    logs = spool.parent / f"{name}-logs"
    logs.mkdir(exist_ok=True)
    job = subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--output={logs}/%a.out", str(script)],
                         capture_output=True, text=True, check=True, env=job_environment({})).stdout.strip()
    wait_for([job])
    out[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
    try:
        check_results(spool)
    except (AssertionError, ValueError):
        for log in sorted(logs.glob("*.out")):  # what the tasks said, for whoever reads the failure
            print(f"--- {name} task {log.stem}:\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        raise
    results = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    return {r.get("pair_key", str(n)): r["score_ceiled"] for n, r in enumerate(results)}  # echo's carry no key


def check_results(spool: Path) -> None:
    results = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    assert len(results) == PAIRS, len(results)
    assert all(r["status"] == "ok" and r["score_ceiled"] == 0.5 for r in results), results[:1]


def plan_for(settings: Settings, repo: Path) -> Plan:
    change, catalog = detect_all(repo, "HEAD")
    return make_plan(change, catalog, locks_dir=settings.locks_dir, uv=settings.coordinator_uv,
                     python_version=python_version(settings.python), scored=lambda keys: set())


def ours(settings: Settings, repo: Path, plan: Plan, out: dict, name: str) -> Bundle:
    db = open_database("local", settings.state_dir)
    try:
        start = time.perf_counter()
        run_id = f"bench-{name}"
        ledger.open_run(db, run_id, plan, ledger.RunInfo(repo=str(repo), head=plan.commit, domain=plan.domain_root,
                                                         executor="slurm"))
        bundle = render_bundle(settings, plan, repo, "slurm", run_id=run_id)
        ledger.record_bundle(db, bundle)
        rendered = time.perf_counter()
        executor = SlurmExecutor()
        job_id = executor.submit(bundle)
        ledger.submitted(db, run_id, job_id)
        watcher = Watcher(db, executor, bundle)
        watcher.wait(job_id)
        out[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
        out[f"{name}_render_seconds"] = round(rendered - start, 2)  # claim + bundle: before anything is submitted
        out[f"{name}_poll_cycles"] = watcher.stats()["poll_cycles"]
        out[f"{name}_sacct_calls"] = watcher.stats()["sacct_calls"]
        out[f"{name}_tasks"] = bundle.n_tasks
        check_results(bundle.spool_dir)
        # what each task did with its environment: reused the cached one, or built its own
        logs = [p.read_text() for p in bundle.log_dir.glob("env-*.log")]
        out[f"{name}_env_builds"] = sum("building environment" in text for text in logs)
        return bundle
    finally:
        db.close()


def per_pair(settings: Settings, repo: Path, plan: Plan, out: dict) -> None:
    start = time.perf_counter()
    bundle: Bundle = render_bundle(settings, plan, repo, "slurm")
    ids = []
    for index in range(bundle.n_tasks):
        env = job_environment({"SCORE_PLUGINS_TASK_OFFSET": str(index)})
        proc = subprocess.run(["sbatch", "--parsable", "--array=0", f"--output={bundle.log_dir}/b-%j.out",
                               str(bundle.job_script)], capture_output=True, text=True, env=env, check=True)
        ids.append(proc.stdout.strip())
    wait_for(ids)
    out["per_pair_seconds"] = round(time.perf_counter() - start, 2)
    check_results(bundle.spool_dir)


SCORE_ONE = """
import importlib, json, sys
root, model_plugin, model, benchmark_plugin, benchmark, key = sys.argv[1:]
domain = importlib.import_module(root)
importlib.import_module(f"{root}.models.{model_plugin}")
importlib.import_module(f"{root}.benchmarks.{benchmark_plugin}")
score = domain.benchmark_registry[benchmark]()(domain.model_registry[model]())
print(json.dumps({"pair_key": key, "status": "ok", "score_ceiled": float(score)}))
"""


def floor(tmp: Path, out: dict, bundle: Bundle, envs: str) -> dict[str, float]:
    """FLOOR: the same array (same tasks, same pairs) running the same scoring processes, by hand."""
    spool = tmp / "scoring-floor-spool"
    spool.mkdir()
    (tmp / "score_one.py").write_text(SCORE_ONE)
    lines = tmp / "scoring-floor-tasks"
    lines.mkdir()
    for task in bundle.manifest.tasks:
        (lines / f"{task['index']}.tsv").write_text("".join(
            f"{envs}/{task['envs']['benchmark']['env_key']}/bin/python\t{p['model_plugin']}\t{p['model']}\t{p['benchmark_plugin']}\t"
            f"{p['benchmark']}\t{p['key']}\n" for p in task["pairs"]))
    script = tmp / "scoring-floor.sh"
    script.write_text("#!/bin/bash\n"
                      f"while IFS=$'\\t' read -r py mp m bp b key; do\n"
                      f"  PYTHONPATH={bundle.manifest.code_dir} \"$py\" {tmp}/score_one.py "
                      f"{bundle.manifest.domain_root} \"$mp\" \"$m\" \"$bp\" \"$b\" \"$key\" > {spool}/\"$key\".json\n"
                      f"done < {lines}/\"$SLURM_ARRAY_TASK_ID\".tsv\n")
    return run_array(script, bundle.n_tasks, spool, out, "floor")


BUILD_MODEL = """
import importlib, sys
root, model_plugin, model = sys.argv[1:]
domain = importlib.import_module(root)
importlib.import_module(f"{root}.models.{model_plugin}")
domain.model_registry[model]()
"""


def sandboxed_floor(tmp: Path, out: dict, bundle: Bundle, envs: str) -> dict[str, float]:
    """FLOOR WITH THE DEFENCES: the same array running, per pair, the same two sandboxed processes as ours (the
    model's, which builds the model, and the benchmark's, which scores), each with the very bubblewrap view,
    seccomp filter and unprivileged user our worker gives it (argv from the job's own `sandboxed`), started
    by a shell loop: what is left between this and ours is the pipeline's own per-pair work (work folders,
    per-pair users, limit watch, log capture, the boundary's protocol, reports, ingest)."""
    spool = tmp / "sandboxed-floor-spool"
    spool.mkdir()
    for name, source in (("score_one.py", SCORE_ONE), ("build_model.py", BUILD_MODEL)):
        (tmp / name).write_text(source)
    (tmp / "filter.bpf").write_bytes(seccomp_program())
    manifest = bundle.manifest
    lines = []
    for task in manifest.tasks:
        python = f"{envs}/{task['envs']['benchmark']['env_key']}/bin/python"  # each side in its own environment
        model_python = f"{envs}/{task['envs']['model']['env_key']}/bin/python"
        body = []
        for n, p in enumerate(task["pairs"]):
            sides = []
            for side, cmd in (("model", [model_python, str(tmp / "build_model.py"), manifest.domain_root,
                                         p["model_plugin"], p["model"]]),
                              ("bench", [python, str(tmp / "score_one.py"), manifest.domain_root, p["model_plugin"],
                                         p["model"], p["benchmark_plugin"], p["benchmark"], p["key"]])):
                work = tmp / "sandboxed-floor-work" / f"{p['key']}-{side}"
                (work / "home").mkdir(parents=True)
                argv, _how, fds = sandboxed(manifest, p, work, cmd, env_python=cmd[0],
                                            extra_ro=(str(tmp / "score_one.py"), str(tmp / "build_model.py")))
                for fd in fds:
                    os.close(fd)
                argv[argv.index("--seccomp") + 1] = "9"
                redirects = f" 9<{shlex.quote(str(tmp / 'filter.bpf'))}"
                if "--ro-bind-data" in argv:  # network "on": the sandbox's resolv.conf, given as a file on fd 8
                    (tmp / "resolv.conf").write_text("nameserver 10.0.2.3\n")
                    argv[argv.index("--ro-bind-data") + 1] = "8"
                    redirects += f" 8<{shlex.quote(str(tmp / 'resolv.conf'))}"
                if "--parent" in argv[:argv.index("--")]:  # the network launcher's parent is the job's shell here
                    del argv[argv.index("--parent"):argv.index("--parent") + 2]
                sides.append(f"PYTHONPATH={shlex.quote(manifest.code_dir)} HOME={shlex.quote(str(work / 'home'))} "
                             + " ".join(shlex.quote(a) for a in argv) + redirects)
            body.append(f"  {sides[0]} >/dev/null &\n  {sides[1]} >{shlex.quote(str(spool / p['key']))}.json\n"
                        "  wait\n")
        lines.append(f"{task['index']})\n{''.join(body)}  ;;\n")
    script = tmp / "sandboxed-floor.sh"
    script.write_text(f"#!/bin/bash\ncase \"$SLURM_ARRAY_TASK_ID\" in\n{''.join(lines)}esac\n")
    return run_array(script, bundle.n_tasks, spool, out, "sandboxed_floor")


def echo_floor(tmp: Path, out: dict, tasks: int) -> None:
    """The old floor: the same array shape, each item a file write by `echo` (the scheduler's own cost)."""
    spool = tmp / "floor-spool"
    spool.mkdir()
    script = tmp / "floor.sh"
    script.write_text("#!/bin/bash\n"
                      f"for ((i = SLURM_ARRAY_TASK_ID; i < {PAIRS}; i += {tasks})); do\n"
                      f"  echo '{{\"status\": \"ok\", \"score_ceiled\": 0.5}}' > {spool}/$i.json\n"
                      "done\n")
    run_array(script, tasks, spool, out, "echo_floor")


def main() -> None:
    global PAIRS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    PAIRS = 4 if args.smoke else args.pairs
    subprocess.run([str(Path(__file__).resolve().parents[1] / "scripts/slurm-cluster"), "up"], check=True)
    out: dict = {"pairs": PAIRS}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        repo = trivial_repo(tmp_path / "repo", PAIRS, 1)
        envs = str(tmp_path / "envs")

        def settings(name: str, **extra: object) -> Settings:
            return load_settings({"state_dir": str(tmp_path / name), "env_root": envs, **extra})

        plan = plan_for(settings("ours"), repo)
        warm = render_bundle(settings("warm"), plan, repo, "slurm")  # build the environments beforehand
        for task in warm.manifest.tasks[:1]:
            for env in task["envs"].values():  # each side's (one, when both sides lock the same)
                subprocess.run(["bash", str(warm.run_dir / "build_env.sh"), f"{envs}/{env['env_key']}",
                                env["lockfile"]], check=True, capture_output=True)
        ours_bundle = ours(settings("ours"), repo, plan, out, "ours")
        print(f"ours: {PAIRS} pairs in {out['ours_seconds']} s ({out['ours_poll_cycles']} poll cycles, "
              f"{out['ours_sacct_calls']} sacct calls)")
        per_pair(settings("per-pair", pairs_per_task=1), repo, plan, out)
        print(f"per_pair: {PAIRS} sbatch jobs in {out['per_pair_seconds']} s")
        ours(settings("fresh", env_mode="fresh"), repo, plan, out, "fresh_env")
        print(f"fresh_env: {out['fresh_env_seconds']} s ({out['fresh_env_env_builds']} environments built in "
              f"the tasks; ours built {out['ours_env_builds']})")
        assert out["fresh_env_env_builds"] == out["fresh_env_tasks"] and out["ours_env_builds"] == 0
        floor_scores = floor(tmp_path, out, ours_bundle, envs)
        ours_scores = {r["pair_key"]: r["score_ceiled"]
                       for r in (json.loads(p.read_text()) for p in ours_bundle.spool_dir.glob("*.json"))}
        assert floor_scores == ours_scores, "the scoring floor and ours wrote different results"
        print(f"floor: one hand-written array of {out['ours_tasks']} tasks running the same {PAIRS} scoring "
              f"processes in {out['floor_seconds']} s (same results as ours)")
        assert sandboxed_floor(tmp_path, out, ours_bundle, envs) == ours_scores, "the sandboxed floor differs"
        print(f"sandboxed floor: the same array running the same {2 * PAIRS} sandboxed processes (two per pair, "
              f"our bwrap views, filter and users) from a shell loop in {out['sandboxed_floor_seconds']} s")
        echo_floor(tmp_path, out, out["ours_tasks"])
        print(f"echo floor: the same array writing {PAIRS} files with echo in {out['echo_floor_seconds']} s")
    out["ratio_packing"] = round(out["ours_seconds"] / out["per_pair_seconds"], 3)
    out["ratio_env_cache"] = round(out["ours_seconds"] / out["fresh_env_seconds"], 3)
    out["floor_ratio"] = round(out["ours_seconds"] / out["floor_seconds"], 2)
    out["sandboxed_floor_ratio"] = round(out["ours_seconds"] / out["sandboxed_floor_seconds"], 2)
    out["echo_floor_ratio"] = round(out["ours_seconds"] / out["echo_floor_seconds"], 2)
    out["note"] = "measured on a shared 2-core machine under load: compare figures of the same run only"
    out["ratio"] = out["ratio_packing"]
    out["ratio_definition"] = ("ours_seconds / per_pair_seconds (lower is better); ratio_env_cache = ours / "
                               "fresh_env; floor_ratio = ours / the same array running the same scoring processes by hand "
                               "(goal <= 1.2); sandboxed_floor_ratio = ours / the same array running the same two sandboxed processes "
                               "per pair from a shell loop (the pipeline's own overhead beyond its defences); echo_floor_ratio = ours / the same array writing files with echo")
    print(f"ratio_packing {out['ratio_packing']}, ratio_env_cache {out['ratio_env_cache']}, "
          f"floor_ratio {out['floor_ratio']}, sandboxed_floor_ratio {out['sandboxed_floor_ratio']}")
    last_line(out)


if __name__ == "__main__":
    sys.exit(main())
