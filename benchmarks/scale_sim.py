"""The coordinator's side of a run of 100,000 and 200,000 pairs, past what this machine can score: time and peak
memory of each stage, so that a full Brain-Score re-score (184,410 pairs for vision's `--all`) is planned on numbers.

Every stage is the pipeline's own code, in the order `score-plugins run` calls it, on a synthetic repository of
N/100 models x 100 benchmarks and a SQLite database in a fresh state folder: detect + plan (`detect_and_plan`),
claim the pairs (`ledger.open_run`), render the bundle, record its tasks, then watch cycles (`Watcher`'s ingest
step, driven cycle by cycle) over a spool that a **stand-in worker** fills, then the final ingest (which lists
the folder once), closing the pairs and finishing the run. The stand-in (`stand_in_worker`, named so: no plugin
runs, no job is submitted) writes exactly what the worker writes, a checked result file per pair and its line in
the spool's index, `--per-cycle` results between two cycles; its time is reported apart and is not the
coordinator's. Peak memory is the process's VmHWM, reset before each stage (/proc/self/clear_refs).

The last line's `ratio` is the mean time of a watch cycle in the last tenth of the largest run over the first
tenth (flat is 1.0: a cycle costs what is new, not what is done).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import last_line, trivial_repo

from pipeline.stages import ledger
from pipeline.config import load_settings
from pipeline.database import open_database
from pipeline.executors.base import TaskState
from pipeline.orchestrator.run import Request, detect_and_plan, run_info
from pipeline.stages.bundle import render_bundle
from pipeline.stages.watch import Watcher, ingest_when_reachable
from pipeline.job.spool import announce


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class Stage:
    """Times one stage and records its peak memory into `figures[name]`."""

    def __init__(self, figures: dict, name: str):
        self.figures, self.name = figures, name

    def __enter__(self) -> "Stage":
        reset_peak()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.figures[self.name] = {"seconds": round(time.perf_counter() - self.start, 2), "peak_mb": peak_mb()}
        print(f"  {self.name:28s} {self.figures[self.name]['seconds']:8.2f} s  peak {peak_mb():7.1f} MB", flush=True)


def stand_in_worker(spool: Path, pairs: list[dict], task_of: dict[str, int]) -> None:
    """STAND-IN for pipeline/job/worker.py (no plugin runs): what the worker leaves for each finished pair."""
    now = datetime.now(timezone.utc).isoformat()
    for pair in pairs:
        name = f"{pair['key']}.json"
        tmp = spool / f".tmp-{name}"
        tmp.write_text(json.dumps({
            "schema": 1, "pair_key": pair["key"], "model": pair["model"], "benchmark": pair["benchmark"],
            "status": "ok", "state": "COMPLETED", "stage": None, "reason": None, "score_ceiled": 0.5,
            "score_raw": 0.5, "ceiling": 1.0, "error": None, "started_at": now, "ended_at": now,
            "elapsed_seconds": 0.01, "attempt": 1, "job_id": "sim", "array_index": task_of[pair["key"]],
            "node": "sim", "executor": "local"}))
        os.replace(tmp, spool / name)
        announce(spool, name)


def simulate(pairs: int, tmp: Path, per_cycle: int) -> dict:
    figures: dict = {"pairs": pairs}
    state = tmp / f"state-{pairs}"
    settings = load_settings(environ={"SCORE_PLUGINS_STATE_DIR": str(state),
                                      "SCORE_PLUGINS_ENV_ROOT": str(tmp / "envs"),
                                      "SCORE_PLUGINS_PAIRS_PER_TASK": "50"})
    repo = trivial_repo(tmp / f"repo-{pairs}", pairs // 100, 100)
    db = open_database("local", settings.state_dir)
    req = Request(repo=repo, all=True)
    print(f"{pairs} pairs:", flush=True)
    with Stage(figures, "detect_and_plan"):
        _, catalog, plan = detect_and_plan(settings, db, req)
    assert len(plan.to_run) == pairs, len(plan.to_run)
    run_id = f"sim-{pairs}"
    with Stage(figures, "claim_pairs"):
        ledger.open_run(db, run_id, plan, run_info(req, plan, str(repo)))
    with Stage(figures, "render_bundle"):
        bundle = render_bundle(settings, plan, repo, "local", run_id=run_id)
    with Stage(figures, "record_tasks"):
        ledger.record_bundle(db, bundle)
    figures["manifest_mb"] = round((bundle.run_dir / "manifest.json").stat().st_size / 2**20, 1)
    watcher = Watcher(db, None, bundle)  # no executor is polled: cycles are driven one by one below
    watcher._missing = {f"{p['key']}.json" for p in bundle.pairs()}
    task_of = bundle.task_of()
    all_pairs = bundle.pairs()
    cycle_seconds: list[float] = []
    writing = 0.0
    reset_peak()
    for start in range(0, len(all_pairs), per_cycle):
        t0 = time.perf_counter()
        stand_in_worker(bundle.spool_dir, all_pairs[start:start + per_cycle], task_of)
        t1 = time.perf_counter()
        watcher._ingest_new()
        cycle_seconds.append(time.perf_counter() - t1)
        writing += t1 - t0
    t0 = time.perf_counter()
    for _ in range(100):
        watcher._ingest_new()  # idle cycles: nothing new in the index
    idle_ms = (time.perf_counter() - t0) * 10
    tenth = max(len(cycle_seconds) // 10, 1)
    first, last = sum(cycle_seconds[:tenth]) / tenth, sum(cycle_seconds[-tenth:]) / tenth
    figures["watch_and_ingest"] = {
        "seconds": round(sum(cycle_seconds), 2), "peak_mb": peak_mb(), "cycles": len(cycle_seconds),
        "results_per_cycle": per_cycle, "first_tenth_cycle_ms": round(1000 * first, 2),
        "last_tenth_cycle_ms": round(1000 * last, 2), "idle_cycle_ms": round(idle_ms, 3),
        "rows_per_second": round(pairs / sum(cycle_seconds))}
    figures["stand_in_worker_seconds"] = round(writing, 2)  # not the coordinator's
    print(f"  {'watch_and_ingest':28s} {sum(cycle_seconds):8.2f} s  peak {peak_mb():7.1f} MB  ({len(cycle_seconds)} "
          f"cycles, first tenth {1000 * first:.1f} ms, last tenth {1000 * last:.1f} ms, idle {idle_ms:.3f} ms)",
          flush=True)
    assert watcher.progress.done == pairs and not watcher._missing, (watcher.progress.done, len(watcher._missing))
    with Stage(figures, "final_ingest_listing"):
        ingest_when_reachable(db, bundle, watcher._ingested)
    with Stage(figures, "close_and_finish"):
        states = {t["index"]: TaskState(t["index"], "COMPLETED") for t in bundle.manifest.tasks}
        ledger.close_unfinished(db, bundle, states)
        run, jobs = ledger.finish(db, run_id, None)
    assert len(jobs) == pairs and all(j.state == "COMPLETED" for j in jobs)
    figures["coordinator_seconds"] = round(sum(v["seconds"] for v in figures.values() if isinstance(v, dict)), 2)
    db.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,200000")
    parser.add_argument("--per-cycle", type=int, default=200, help="results the stand-in writes between two cycles")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.per_cycle = "100", 20
    out: dict = {"stand_in": "stand_in_worker writes the worker's result files and index lines; no plugin runs",
                 "note": "measured on a shared 2-core machine under load", "runs": []}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            out["runs"].append(simulate(n, Path(tmp), args.per_cycle))
    largest = out["runs"][-1]["watch_and_ingest"]
    out["ratio"] = round(largest["last_tenth_cycle_ms"] / largest["first_tenth_cycle_ms"], 2)
    out["ratio_definition"] = "watch cycle time, last tenth of the largest run over its first tenth (flat is 1.0)"
    last_line(out)


if __name__ == "__main__":
    main()
