"""Repairing runs: the coordinator killed mid-run, reconcile, cancel, rerun --failed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import CLI, commit_all, write


def test_coordinator_killed_mid_run_then_reconcile_and_rerun(workspace, example_repo):
    write(example_repo, "sklearn_scores/benchmarks/slow/__init__.py",
          "import time\nfrom sklearn_scores import benchmark_registry\n\n"
          "class Slow:\n    def __call__(self, model):\n        time.sleep(4)\n        return 0.25\n\n"
          "benchmark_registry['slow'] = Slow\n")
    write(example_repo, "sklearn_scores/benchmarks/slow/requirements.txt", "scikit-learn>=1.3\n")
    write(example_repo, "sklearn_scores/benchmarks/raises/__init__.py",
          "from sklearn_scores import benchmark_registry\n\n"
          "class Raises:\n    def __call__(self, model):\n        raise ValueError('flaky benchmark')\n\n"
          "benchmark_registry['raises'] = Raises\n")
    commit_all(example_repo, "a slow benchmark and a failing one")
    workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "1"
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1"], cwd=workspace.path,
                            env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(workspace.state.glob("runs/*/spool/*.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the coordinator dies; its tasks run on
    proc.wait()
    status = workspace.json("status")
    first = status["run_id"]
    assert status["status"] == "RUNNING"
    assert status["coordinator"] == "gone"  # told apart from a live run (its watcher's process is gone)
    assert [r["coordinator"] for r in workspace.json("runs") if r["run_id"] == first] == ["gone"]
    assert "its coordinator is gone" in workspace.cli("status", first).stdout
    assert any(j["state"] == "PENDING" for j in status["jobs"])
    # started again at once, the coordinator submits nothing that the first run still holds
    again = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert again.returncode in (0, 1), again.stderr  # 1: a pair the dead run had already seen fail ran again
    again_data = json.loads(again.stdout)
    # every pair is exactly one of: still held by the first run, already scored, or (having failed) run again;
    # none that the first run still holds is submitted twice
    assert again_data["in_flight"]
    held = set(again_data["in_flight"])  # pair keys the first run held when the second one planned
    second = {k for (k,) in workspace.rows("SELECT pair_key FROM jobs WHERE run_id = ?", again_data["run_id"])}
    first_keys = {k for (k,) in workspace.rows("SELECT pair_key FROM jobs WHERE run_id = ?", first)}
    assert held <= first_keys and not held & second, "a pair the first run held was submitted again"
    assert all(v == first for v in again_data["in_flight"].values())
    assert all(p["state"] != "COMPLETED" or p["benchmark"] != "raises" for p in again_data["pairs"])
    assert "still being scored" in again.stderr

    # reconcile while tasks may still run: nothing is closed that is still alive
    deadline = time.time() + 180
    while time.time() < deadline:
        workspace.json("reconcile")
        status = workspace.json("status", first)
        if not any(j["state"] in ("PENDING", "RUNNING") for j in status["jobs"]):
            break
        time.sleep(2)
    counts = status["counts"]
    # tasks running when the coordinator died finished on their own and were ingested from the spool;
    # tasks it had not started yet are LOST, each with its reason
    assert sum(counts.values()) == 8 and counts.get("LOST", 0) >= 1, counts
    assert counts.get("COMPLETED", 0) + counts.get("FAILED", 0) >= 1, counts
    assert all(j["reason"] for j in status["jobs"] if j["state"] != "COMPLETED")
    # reconcile says what it knows: a task that never started is not one that "ended without a result"
    lost = [j["reason"] for j in status["jobs"] if j["state"] == "LOST"]
    assert lost and all(r.startswith("never started") for r in lost), lost
    deadline = time.time() + 60  # the tasks' pid files go when the tasks end (they outlive their coordinator)
    while list(workspace.state.glob(f"runs/{first}/logs/task-*.pid")) and time.time() < deadline:
        time.sleep(0.5)
    assert not list(workspace.state.glob(f"runs/{first}/logs/task-*.pid"))
    assert workspace.json("reconcile") == {}  # nothing left open
    # the run reconcile closed is mailed once, one message per person its pairs concern
    mailed = [p for p in workspace.state.glob("outbox/**/*.eml") if f"X-Score-Plugins-Run: {first}" in p.read_text()]
    people = {s for j in workspace.rows("SELECT submitters FROM jobs WHERE run_id = ?", first) for s in json.loads(j[0])}
    assert len(mailed) == len(people) >= 1
    scored_before = {(r["model"], r["benchmark"]) for r in workspace.json("leaderboard")}

    # rerun --failed runs exactly the pairs that did not complete, as a new run
    rerun = workspace.cli("rerun", status["run_id"], "--failed", "--format", "json")
    assert rerun.returncode == 1, rerun.stderr  # the raising benchmark fails again
    result = json.loads(rerun.stdout)
    assert result["commit"] == status["commit"]  # at the same commit as the run it repeats
    not_completed = {(j["model"], j["benchmark"]) for j in status["jobs"] if j["state"] != "COMPLETED"}
    assert {(p["model"], p["benchmark"]) for p in result["pairs"]} == not_completed
    board = workspace.json("leaderboard")
    assert sorted(r["model"] for r in board if r["benchmark"] == "slow") == [
        "gaussian-nb", "knn-5", "logreg", "random-forest"]
    # each pair scored once, counted where duplicates would be (the scores table; the leaderboard keeps one row)
    assert workspace.rows("SELECT pair_key, COUNT(*) FROM scores GROUP BY pair_key HAVING COUNT(*) > 1") == []
    # and at most one run ever completed each pair
    assert workspace.rows("SELECT pair_key FROM jobs WHERE state = 'COMPLETED' GROUP BY pair_key "
                          "HAVING COUNT(*) > 1") == []
    assert {(r["model"], r["benchmark"]) for r in board} >= scored_before
    assert all(p["stage"] == "score" and "flaky" in p["reason"] for p in result["pairs"]
               if p["benchmark"] == "raises")


def test_cancel_a_local_run_keeps_finished_results(workspace, example_repo):
    """A run with one pair finished and one still running, cancelled by another process: the running task
    is stopped and recorded CANCELLED, the finished pair stays COMPLETED with its score."""
    write(example_repo, "sklearn_scores/benchmarks/slow/__init__.py",
          "import time\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
          "    def __call__(self, model):\n        time.sleep(300)\n        return 0.5\n\n"
          "benchmark_registry['slow'] = Bench\n")
    commit_all(example_repo, "a slow benchmark")
    workspace.env.update({"SCORE_PLUGINS_PAIRS_PER_TASK": "1", "SCORE_PLUGINS_LOCAL_WORKERS": "2"})
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--all", "--models", "logreg",
                             "--benchmarks", "iris-accuracy,slow", "--format", "json"], cwd=workspace.path,
                            env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # one pair done (its score ingested), the other still running
            lines.append(line)
            if "1/2 pairs done" in line:
                break
        assert any("1/2 pairs done" in line for line in lines), lines
        run_id = workspace.json("status")["run_id"]
        assert workspace.json("cancel", run_id) == {"run_id": run_id, "cancelled": 1}
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert json.loads(out)["states"] == {"COMPLETED": 1, "CANCELLED": 1}
    assert [(r["benchmark"], r["model"]) for r in workspace.json("leaderboard")] == [("iris-accuracy", "logreg")]
    status = workspace.json("status", run_id)
    assert status["counts"] == {"COMPLETED": 1, "CANCELLED": 1}, status
    running = subprocess.run(["pgrep", "-f", str(workspace.state / "runs" / run_id)], capture_output=True, text=True)
    assert running.stdout.strip() == "", "cancel stopped the running task for real"
    assert workspace.cli("cancel", "no-such-run").returncode == 2


def terminal_signals() -> None:
    """In a child before exec: SIGINT, SIGHUP and SIGTERM at their defaults, as a terminal or Jenkins gives them."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def start_two_slow_pairs(workspace, example_repo) -> tuple[subprocess.Popen, list[str]]:  # noqa: ANN001
    """A run of two pairs that sleep for minutes, returned once both run (its stderr lines so far)."""
    write(example_repo, "sklearn_scores/benchmarks/slow/__init__.py",
          "import time\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
          "    def __call__(self, model):\n        time.sleep(300)\n        return 0.5\n\n"
          "benchmark_registry['slow'] = Bench\n")
    commit_all(example_repo, "a slow benchmark")
    workspace.env.update({"SCORE_PLUGINS_PAIRS_PER_TASK": "1", "SCORE_PLUGINS_LOCAL_WORKERS": "2"})
    # SIGINT and SIGHUP as in a terminal: a test session started in the background (CI, `cmd &`) inherits SIGINT
    # ignored, one started under nohup (or by a runner that ignores hang-ups) SIGHUP ignored; the coordinator keeps
    # an inherited SIG_IGN of either on purpose (pipeline.admin.signals), so the test gives it a terminal's
    # dispositions (a SIGHUP left ignored is why test_sigterm_and_sighup...[SIGHUP] once outlived its 120 s)
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--models",
                             "logreg,knn-5", "--format", "json"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_signals)
    lines = []
    for line in proc.stderr:  # the readiness signal: both slow pairs are running
        lines.append(line)
        if "array tasks: running 2" in line:
            break
    return proc, lines


def test_ctrl_c_cancels_what_it_started_records_it_and_exits_130(workspace, example_repo):
    """Outside a terminal progress is one line per change on stderr; Ctrl-C (SIGINT) cancels the running
    tasks, records them CANCELLED, keeps finished scores, writes the emails, and exits 130."""
    proc, lines = start_two_slow_pairs(workspace, example_repo)
    assert any("0/2 pairs done (0 failed), 2 left" in line for line in lines), lines
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    result = json.loads(out)
    assert result["interrupted"] and result["states"] == {"CANCELLED": 2}
    assert all(p["reason"] == "interrupted by Ctrl-C" for p in result["pairs"])
    assert result["emails"], "the submitters are told"
    leftovers = subprocess.run(["pgrep", "-f", str(workspace.state / "runs")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "no task of the run is left running"
    status = workspace.json("status")
    assert status["counts"] == {"CANCELLED": 2}


def test_cancel_stops_a_live_local_run_started_by_another_coordinator(workspace, example_repo):
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    run_id = workspace.json("status")["run_id"]
    cancelled = workspace.json("cancel", run_id)
    assert cancelled["cancelled"] == 2  # whoever recorded them first: this command or the run's coordinator
    running = subprocess.run(["pgrep", "-f", str(workspace.state / "runs" / run_id)], capture_output=True, text=True)
    assert running.stdout.strip() == "", "cancel stopped the tasks for real"
    out, _ = proc.communicate(timeout=120)  # the first coordinator sees its tasks end and finishes
    result = json.loads(out)
    assert result["states"] == {"CANCELLED": 2}
    assert {p["reason"] for p in result["pairs"]} == {"cancelled with score-plugins cancel"}, result["pairs"]
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}, status


def test_a_corrupt_database_and_an_unwritable_state_folder_are_exit_3(workspace, example_repo, tmp_path):
    workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                   "iris-accuracy")
    db = workspace.state / "local.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    proc = workspace.cli("leaderboard")
    assert proc.returncode == 3 and "is not usable (file is not a database)" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    db.unlink()
    # a read-only state folder (a read-only bind mount in a private mount namespace: root ignores file modes),
    # the database elsewhere: the run stops before submitting anything
    workspace.env["SCORE_PLUGINS_DB_LOCAL"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    workspace.cli("db", "upgrade", check=True)
    script = (f"mount --bind {workspace.state} {workspace.state} && "
              f"mount -o remount,ro,bind {workspace.state} && "
              f"exec {CLI} run --repo {example_repo} --all --models knn-5 --benchmarks iris-accuracy")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "cannot be written" in proc.stderr and "Traceback" not in proc.stderr
