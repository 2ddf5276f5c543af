"""How the coordinator's cost grows with the work: 100, 1,000 and 10,000 trivial pairs, local and Slurm.

Each size is one `score-plugins run --all` (a fresh state folder, a synthetic repository of M models x B
benchmarks whose plugins return 0.5 at once), the environment built beforehand, the sandbox off (`--sandbox`
to keep it: it adds about 0.1 s of task time per pair, which is the plugin side, not the coordinator's, and would
put 10,000 pairs past this machine's 15 minutes). Measured on the coordinator
process alone (sampled from /proc while it runs; its tasks are not counted): wall seconds, CPU seconds, peak
memory (VmHWM); then the rows the run wrote to the database, its sacct calls, and the files in its run folder.
The last line's `ratio` is the **marginal** coordinator CPU per added pair of the last step (e.g. 1,000 ->
10,000) over that of the first step (100 -> 1,000), the larger of both executors: flat is 1.0, and start-up
cost, which a ratio of averages hides, cancels out. The average per pair (largest over smallest size) is kept as
`average_ratio`. Needs the cluster for Slurm: scripts/slurm-cluster up.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, last_line, trivial_repo

SIZES = {2: (1, 2), 4: (2, 2), 6: (3, 2), 100: (10, 10), 1000: (100, 10), 3000: (30, 100), 10000: (100, 100)}  # pairs -> (models, benchmarks)
CLI = ROOT / ".venv/bin/score-plugins"
TICK = os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> tuple[float, int] | None:
    """(own CPU seconds, peak resident kB) of a live process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    cpu = (int(stat[11]) + int(stat[12])) / TICK  # utime + stime: this process only, not its children
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return cpu, hwm


def one_run(executor: str, pairs: int, repo: Path, work: Path, env_root: Path, pairs_per_task: int,
            sandbox: str = "off") -> dict:
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
    env.update({"SCORE_PLUGINS_ENV_ROOT": str(env_root), "SCORE_PLUGINS_PAIRS_PER_TASK": str(pairs_per_task),
                "SCORE_PLUGINS_LOCAL_WORKERS": "2", "SCORE_PLUGINS_SANDBOX": sandbox,
                "SCORE_PLUGINS_STATE_DIR": str(work / ".score-plugins")})  # never a stray one in a parent folder
    start = time.perf_counter()
    result_file = work / "run.json"  # a file, not a pipe: 10,000 pairs of JSON would fill a pipe and block the run
    with open(result_file, "w") as sink:
        proc = subprocess.Popen([str(CLI), "run", "--repo", str(repo), "--all", "--executor", executor, "--format",
                                 "json"], cwd=work, env=env, stdout=sink, stderr=subprocess.DEVNULL)
    cpu, hwm = 0.0, 0
    while proc.poll() is None:
        now = sample(proc.pid)
        if now:  # a zombie's status has no VmHWM: keep the highest seen
            cpu, hwm = now[0], max(hwm, now[1])
        time.sleep(0.05)
    last = (cpu, hwm)
    out = result_file.read_text()
    wall = time.perf_counter() - start
    assert proc.returncode == 0, out[-2000:]
    result = json.loads(out)
    assert result["states"] == {"COMPLETED": pairs}, result["states"]
    with sqlite3.connect(work / ".score-plugins/local.db") as conn:
        rows = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 - our own table names
                   for t in ("runs", "jobs", "scores", "models", "benchmark_types", "benchmark_instances",
                             "users", "submissions"))
    files = sum(len(names) for _, _, names in os.walk(result["run_dir"]))
    return {"pairs": pairs, "wall_seconds": round(wall, 2), "coordinator_cpu_seconds": round(last[0], 2),
            "cpu_ms_per_pair": round(1000 * last[0] / pairs, 3), "peak_rss_mb": round(last[1] / 1024, 1),
            "db_rows": rows, "sacct_calls": result["executor_stats"].get("sacct_calls", 0),
            "poll_cycles": result["executor_stats"].get("poll_cycles", 0), "run_folder_files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help=f"pairs per run, of {sorted(SIZES)}")
    parser.add_argument("--executors", default="local,slurm")
    parser.add_argument("--pairs-per-task", type=int, default=50)
    parser.add_argument("--sandbox", default="off", help="the sandbox setting of the runs (off, auto, bwrap)")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.executors, args.pairs_per_task = "2,4,6", "local", 2
    sizes = [int(s) for s in args.sizes.split(",")]
    executors = args.executors.split(",")
    if "slurm" in executors:
        subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], check=True, capture_output=True)
    out: dict = {"sizes": sizes, "pairs_per_task": args.pairs_per_task, "sandbox": args.sandbox, "curves": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        env_root = tmp_path / "envs"
        repos = {n: trivial_repo(tmp_path / f"repo-{n}", *SIZES[n]) for n in sizes}
        one_run("local", sizes[0], repos[sizes[0]], tmp_path / "warm-up", env_root, args.pairs_per_task)  # builds the env
        for executor in executors:
            curve = []
            for n in sizes:
                figures = one_run(executor, n, repos[n], tmp_path / f"work-{executor}-{n}", env_root,
                                  args.pairs_per_task, args.sandbox)
                curve.append(figures)
                print(f"{executor:6s} {n:6d} pairs: wall {figures['wall_seconds']:8.2f} s, coordinator CPU "
                      f"{figures['coordinator_cpu_seconds']:7.2f} s ({figures['cpu_ms_per_pair']:.2f} ms/pair), "
                      f"peak {figures['peak_rss_mb']:6.1f} MB, {figures['db_rows']} rows, "
                      f"{figures['sacct_calls']} sacct calls, {figures['run_folder_files']} files", flush=True)
            out["curves"][executor] = curve
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    averages = {e: round(c[-1]["cpu_ms_per_pair"] / c[0]["cpu_ms_per_pair"], 2) for e, c in out["curves"].items()}
    out["average_ratio_per_executor"] = averages
    out["average_ratio"] = max(averages.values())
    marginal = {e: marginal_ms_per_pair(c) for e, c in out["curves"].items()}
    out["marginal_ms_per_pair"] = marginal
    if len(sizes) >= 3:
        ratios = {e: round(m[-1]["ms_per_pair"] / max(m[0]["ms_per_pair"], 1e-6), 2) for e, m in marginal.items()}
        out["ratio_per_executor"] = ratios
        out["ratio"] = max(ratios.values())
    out["ratio_definition"] = ("marginal coordinator CPU per added pair, last step over first step (flat is 1.0), "
                               "the larger of the executors; needs three sizes")
    out["note"] = "measured on a shared 2-core machine under load: compare figures of the same run only"
    last_line(out)


def marginal_ms_per_pair(curve: list[dict]) -> list[dict]:
    """Coordinator CPU added per added pair, for each step of the curve (start-up cancels out)."""
    steps = []
    for small, large in zip(curve, curve[1:]):
        added = (large["coordinator_cpu_seconds"] - small["coordinator_cpu_seconds"]) / (large["pairs"] - small["pairs"])
        steps.append({"from": small["pairs"], "to": large["pairs"], "ms_per_pair": round(1000 * added, 3)})
    return steps


if __name__ == "__main__":
    sys.exit(main())
