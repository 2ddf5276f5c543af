"""Scoring on a real one-node Slurm cluster (scripts/slurm-cluster): sbatch arrays, submitit,
MaxArraySize chunking, a time limit, a memory limit, and scancel of one task."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from pipeline.executors.base import TaskState
from pipeline.executors.slurm import ArrayPart, array_chunks, parse_sacct
from tests.conftest import ROOT, CLI, call_times, calls, commit_all, wait_for, write

pytestmark = pytest.mark.integration


def add_benchmark(repo, folder: str, identifier: str, body: str) -> None:
    write(repo, f"sklearn_scores/benchmarks/{folder}/__init__.py",
          "from sklearn_scores import benchmark_registry\n\n"
          "class Bench:\n"
          "    def __call__(self, model):\n"
          + "".join(f"        {line}\n" for line in body.splitlines())
          + f"\nbenchmark_registry['{identifier}'] = Bench\n")
    write(repo, f"sklearn_scores/benchmarks/{folder}/requirements.txt", "scikit-learn>=1.3\n")


def test_sacct_parsing_and_chunking():
    parts = [ArrayPart("100", 0, 3), ArrayPart("101", 3, 3)]
    text = ("100_0|COMPLETED|0:0|vm|00:00:05|None\n"
            "100_1|CANCELLED by 0|0:15|vm|00:00:02|None\n"
            "100_2|OUT_OF_MEMORY|0:125|vm|00:00:03|None\n"
            "101_[0-2%1]|PENDING|0:0|None assigned|00:00:00|JobArrayTaskLimit\n")
    states = parse_sacct(text, parts)
    assert [states[i].state for i in range(6)] == ["COMPLETED", "CANCELLED", "OUT_OF_MEMORY", "PENDING", "PENDING",
                                                   "PENDING"]
    assert states[1].reason.startswith("CANCELLED by 0")
    assert parse_sacct("100_1|NODE_FAIL|0:0|vm|00:01:00|None\n", parts)[1] == TaskState(1, "NODE_FAIL", "NODE_FAIL",
                                                                                         "vm")
    oom = parse_sacct("100_1|FAILED|0:9|vm|00:00:08|None||800M\n100_1.batch|CANCELLED by 0|0:9|vm|00:00:08||957728K|\n",
                      parts)[1]
    assert oom.state == "OUT_OF_MEMORY" and "935 MB used of 800 MB" in oom.reason
    assert array_chunks(7, 3) == [(0, 3), (3, 3), (6, 1)]
    assert array_chunks(2, 1001) == [(0, 2)]


def test_score_through_slurm_and_submitit(slurm_cluster, workspace, example_repo):
    log = workspace.log_slurm_calls()
    workspace.env.update({"SCORE_PLUGINS_ARRAY_THROTTLE": "1", "SCORE_PLUGINS_PAIRS_PER_TASK": "4"})
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--executor", "slurm",
                            "--models", "logreg,knn-5")
    assert result["states"] == {"COMPLETED": 8}
    # one real sacct call per poll cycle (counted by a passthrough wrapper, not by our own counters)
    stats = result["executor_stats"]
    assert len(calls(log, "sacct")) == stats["sacct_calls"] == stats["poll_cycles"] > 0, (calls(log, "sacct"), stats)
    # the %N throttle reaches Slurm, and Slurm honours it: the two array tasks never overlap
    [submitted] = calls(log, "sbatch")
    assert "--array=0-1%1" in submitted.split() and "--no-requeue" in submitted.split()
    job_id = result["pairs"][0]["job_id"].split("@")[0]
    spans = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,Start,End"],
                           capture_output=True, text=True, check=True).stdout.split()
    times = sorted(tuple(line.split("|")[1:]) for line in spans)
    assert len(times) == 2 and times[0][1] <= times[1][0], times
    # sacct is asked less and less often while the run goes on (back-off), never in a busy loop
    at = call_times(log, "sacct")
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert gaps and min(gaps) >= 1.5, gaps
    assert all(later >= earlier - 0.5 for earlier, later in zip(gaps, gaps[1:])), gaps
    if len(gaps) >= 3:
        assert gaps[-1] > gaps[0] * 1.5, gaps
    workspace.env.pop("SCORE_PLUGINS_ARRAY_THROTTLE")
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--executor", "submitit",
                            "--models", "gaussian-nb")
    assert result["states"] == {"COMPLETED": 4}
    board = workspace.json("leaderboard")
    assert len(board) == 12
    by_model = {r["model"]: r for r in board}
    assert by_model["logreg"]["executor"] == "slurm" and by_model["gaussian-nb"]["executor"] == "submitit"
    for row in board:
        accounting = subprocess.run(["sacct", "-X", "-n", "-P", "-j", row["job_id"], "--format=JobID,State"],
                                    capture_output=True, text=True, check=True).stdout
        assert "COMPLETED" in accounting  # the recorded job id is Slurm's own


def test_array_larger_than_max_array_size(slurm_cluster, workspace, example_repo):
    up = subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], env={"SLURM_MAX_ARRAY_SIZE": "3",
                        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    try:
        workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "2"
        result = workspace.json("run", "--repo", str(example_repo), "--all", "--executor", "slurm")
        assert result["states"] == {"COMPLETED": 16}  # 8 tasks in parts of 3, 3 and 2
        status = workspace.json("status")
        assert len({j["job_id"] for j in status["jobs"]}) == 3  # three array jobs, as Slurm numbered them
        assert {j["array_index"] for j in status["jobs"]} == {0, 1, 2}  # none beyond MaxArraySize - 1
    finally:
        subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], check=True, capture_output=True)


def test_time_limit_memory_limit_and_a_cancelled_task(slurm_cluster, workspace, example_repo):
    add_benchmark(example_repo, "endless", "endless", "while True:\n    pass")
    add_benchmark(example_repo, "hog", "hog", "import time\nblocks = []\nfor _ in range(40):\n"
                  "    blocks.append(bytearray(100 * 2**20))\n    time.sleep(0.05)\ntime.sleep(60)\nreturn 0.5")
    add_benchmark(example_repo, "sleepy", "sleepy", "import time\ntime.sleep(40)\nreturn 0.5")
    commit_all(example_repo, "three misbehaving benchmarks")
    workspace.env.update({"SCORE_PLUGINS_TIME_MINUTES": "1", "SCORE_PLUGINS_MEM": "800M",
                          "SCORE_PLUGINS_PAIRS_PER_TASK": "1", "SCORE_PLUGINS_PAIR_TIMEOUT": "3600"})
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", "slurm",
                             "--models", "logreg", "--format", "json"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # cancel the task that sleeps, while it runs
    target = None
    deadline = time.time() + 120
    while target is None and time.time() < deadline:
        time.sleep(1)
        for status_file in workspace.state.glob("runs/*/logs/task-*.out"):
            text = status_file.read_text()
            manifest = json.loads((status_file.parents[1] / "manifest.json").read_text())
            index = int(status_file.stem.split("-")[1])
            if manifest["tasks"][index]["pairs"][0]["benchmark"] == "sleepy" and "as array task" in text:
                target = text.split("as array task ")[1].split()[0]  # JOBID_INDEX: this task only
    assert target, "the sleepy task never started"
    subprocess.run(["scancel", target], check=True)  # it sleeps 40 s: it is running now
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 1, err
    pairs = {p["benchmark"]: p for p in json.loads(out)["pairs"]}
    assert pairs["endless"]["state"] == "TIMEOUT" and "TIMEOUT" in pairs["endless"]["reason"]
    assert pairs["hog"]["state"] == "OUT_OF_MEMORY" and "memory limit" in pairs["hog"]["reason"], pairs["hog"]
    assert pairs["sleepy"]["state"] == "CANCELLED" and "CANCELLED" in pairs["sleepy"]["reason"]
    status = workspace.json("status")
    assert status["counts"] == {"TIMEOUT": 1, "OUT_OF_MEMORY": 1, "CANCELLED": 1}


def test_requests_beyond_the_partition_are_refused_before_submission(slurm_cluster, workspace, example_repo):
    workspace.env["SCORE_PLUGINS_MEM"] = "100T"
    proc = workspace.cli("run", "--repo", str(example_repo), "--all", "--executor", "slurm")
    assert proc.returncode == 2 and "exceeds" in proc.stderr and "partition debug" in proc.stderr
    assert not (workspace.state / "runs").exists()  # nothing rendered, recorded or submitted


def test_admin_renders_submits_by_hand_and_ingests(slurm_cluster, workspace, example_repo):
    data = workspace.json("render", "--repo", str(example_repo), "--all", "--models", "knn-5",
                          "--out", str(workspace.path / "bundle"))
    job_id = subprocess.run(["sbatch", "--parsable", "--wait", data["job_script"]], cwd=workspace.path,
                            capture_output=True, text=True, check=True, timeout=600).stdout.strip()
    assert job_id
    ingested = workspace.json("ingest", data["run_dir"])
    assert ingested["scores"] == 4 and ingested["failures"] == 0
    board = workspace.json("leaderboard")
    assert len(board) == 4 and {r["job_id"] for r in board} == {job_id.split(";")[0]}
    assert workspace.json("ingest", data["run_dir"])["duplicates"] == 4


def test_pyslurm_state_mapping():
    """pyslurm cannot run against Debian's Slurm 22.05 (PyPI ships it for 25.11): its Job objects are
    stood in for by SimpleNamespace here, and only our mapping of them is tested."""
    from types import SimpleNamespace as FakePyslurmJob

    from pipeline.executors.slurm.pyslurm_executor import states_from_jobs

    jobs = [FakePyslurmJob(array_id=7, array_task_id=0, state="COMPLETED", state_reason="None", batch_host="n1"),
            FakePyslurmJob(array_id=7, array_task_id=1, state="NODE_FAIL", state_reason="NodeDown", batch_host="n2"),
            FakePyslurmJob(array_id=8, array_task_id=0, state="FAILED", state_reason="", batch_host="n1")]
    states = states_from_jobs(jobs, 7, 3)
    assert [states[i].state for i in range(3)] == ["COMPLETED", "NODE_FAIL", "PENDING"]
    assert states[1].reason == "NODE_FAIL (NodeDown)" and states[1].node == "n2"


@pytest.mark.parametrize("max_retries", [2, 0])
def test_node_failure_is_retried(slurm_cluster, workspace, example_repo, max_retries):
    """A node that goes down mid-task: the task ends NODE_FAIL, is resubmitted (at most `max_retries` times),
    and completes; with no retries allowed, the pair ends NODE_FAIL with its reason, on its first attempt."""
    workspace.env["SCORE_PLUGINS_MAX_RETRIES"] = str(max_retries)
    add_benchmark(example_repo, "slowish", "slowish", "import time\ntime.sleep(15)\nreturn 0.5")
    commit_all(example_repo, "a slow benchmark")
    node = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", "slurm",
                             "--models", "logreg", "--format", "json"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # readiness, not sleeps: the pair is being scored (its benchmark sleeps 15 s) when the node goes down
        [pair_log] = wait_for(lambda: [p for p in workspace.state.glob("runs/*/logs/*.log")
                                       if not p.name.startswith("env-")], 180, "the pair's plugin process to start")
        run_id = pair_log.parents[1].name
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=score-plugins-test"],
                       check=True)
        wait_for(lambda: "NODE_FAIL" in subprocess.run(["sacct", "-X", "-n", "-P", "--format=State", "-S", "now-1hour",
                                                         "--name", f"score-{run_id}"],
                                                        capture_output=True, text=True).stdout,
                 60, "Slurm to record the task as NODE_FAIL")
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
    out, err = proc.communicate(timeout=400)
    if max_retries == 0:
        assert proc.returncode == 1, err
        [job] = workspace.json("status", expect=0)["jobs"]
        assert job["state"] == "NODE_FAIL" and "NODE_FAIL" in job["reason"] and "resubmitting" not in err
        assert workspace.rows("SELECT attempt FROM jobs") == [(1,)]
        return
    assert proc.returncode == 0, err
    assert json.loads(out)["states"] == {"COMPLETED": 1}
    [job] = workspace.json("status")["jobs"]
    assert job["state"] == "COMPLETED"
    assert "resubmitting 1 task(s) after NODE_FAIL" in err
    # the retry is recorded: a second attempt (the result may come from either: a task on a node marked DOWN
    # can still finish; the job id recorded is the one of the Slurm job that wrote the result)
    [(attempt, job_id)] = workspace.rows("SELECT attempt, slurm_job_id FROM jobs")
    assert attempt == 2 and job_id.isdigit(), (attempt, job_id)


def test_slurmctld_restarted_mid_run(slurm_cluster, workspace, example_repo):
    """The controller goes away while tasks run and comes back: the run waits, loses nothing, and
    every pair completes once."""
    add_benchmark(example_repo, "steady", "steady", "import time\ntime.sleep(12)\nreturn 0.5")
    commit_all(example_repo, "a steady benchmark")
    workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "2"
    log = workspace.log_slurm_calls()
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", "slurm",
                             "--format", "json"], cwd=workspace.path, env=workspace.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(workspace.state.glob("runs/*/logs/task-*.out")), 180, "a task to start")
        subprocess.run(["pkill", "-x", "slurmctld"], check=True)
        wait_for(lambda: subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("DOWN"),
                 30, "the controller to be down")
        # and its process gone (it saves its state first), so that `up` below starts a new one
        wait_for(lambda: subprocess.run(["pgrep", "-x", "slurmctld"]).returncode == 1, 60, "slurmctld to exit")
        polls = len(calls(log, "sacct"))
        wait_for(lambda: len(calls(log, "sacct")) > polls, 120, "the run to poll while the controller is gone")
    finally:
        subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], check=True, capture_output=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["states"] == {"COMPLETED": 4}
    board = workspace.json("leaderboard")
    assert sorted(r["model"] for r in board if r["benchmark"] == "steady") == [
        "gaussian-nb", "knn-5", "logreg", "random-forest"]
    # every pair once: one score row per pair, and Slurm ran each array task once (nothing resubmitted)
    assert workspace.rows("SELECT COUNT(*), COUNT(DISTINCT pair_key) FROM scores") == [(4, 4)]
    assert len(calls(log, "sbatch")) == 1  # submitted once, never again


@pytest.mark.parametrize("executor", ["slurm", "submitit"])
def test_reconcile_and_cancel_a_live_run_whose_coordinator_died(slurm_cluster, workspace, example_repo, executor):
    """The coordinator of a Slurm run is killed while its tasks run: `reconcile` leaves live tasks open (it
    reads their state from the stored job id), `cancel` stops them on Slurm and closes their rows."""
    add_benchmark(example_repo, "sleepy", "sleepy", "import time\ntime.sleep(600)\nreturn 0.5")
    commit_all(example_repo, "a benchmark that takes ten minutes")
    workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "1"
    assert not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip(), "the cluster is busy"
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", executor,
                             "--models", "logreg,knn-5"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = ""

    def running() -> int:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "RUNNING", "-n", f"score-{run_id}", "-o", "%i"],
                             capture_output=True, text=True).stdout
        return len(out.split())

    try:
        [(run_id,)] = wait_for(lambda: workspace.rows("SELECT id FROM runs WHERE status = 'RUNNING'", missing_ok=True), 120,
                               "the run to be submitted")
        wait_for(lambda: running() == 2, 180, "both array tasks to run on Slurm")
        # and accounting (what reconcile asks, through sacct) has caught up with the controller
        wait_for(lambda: subprocess.run(["sacct", "-X", "-n", "-P", "--format=State", "-S", "now-1hour", "--name",
                                         f"score-{run_id}"], capture_output=True, text=True).stdout.split()
                 == ["RUNNING", "RUNNING"], 60, "sacct to list both tasks as running")
        proc.kill()  # the coordinator dies; its tasks run on
        proc.wait()
        # the coordinator may have seen them start before it died (its own poll); what it did not record, reconcile does
        pending = len(workspace.rows("SELECT 1 FROM jobs WHERE run_id = ? AND state = 'PENDING'", run_id))
        assert workspace.json("reconcile") == {run_id: {"RUNNING": pending} if pending else {}}  # alive: left open
        assert workspace.rows("SELECT state FROM jobs WHERE run_id = ?", run_id) == [("RUNNING",), ("RUNNING",)]
        status = workspace.json("status", run_id)
        assert status["status"] == "RUNNING" and status["counts"] == {"RUNNING": 2}
        assert workspace.json("cancel", run_id) == {"run_id": run_id, "cancelled": 2}
        wait_for(lambda: running() == 0, 60, "Slurm to stop the tasks")
    finally:
        proc.kill()
        proc.wait()
        if run_id:  # never leave ten-minute tasks behind for the next test
            subprocess.run(["scancel", "-n", f"score-{run_id}"], check=False)
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}
    assert workspace.json("reconcile") == {}


def test_transient_sbatch_failure_is_retried_and_squeue_stands_in_for_accounting(slurm_cluster, workspace,
                                                                                   example_repo):
    """The first sbatch fails as a busy controller would (an injected fault, named so: the wrapper prints
    Slurm's own message without reaching Slurm); the run tries again. With the accounting daemon stopped,
    sacct fails and squeue answers instead; the run ends with its results."""
    log = workspace.log_slurm_calls(
        fail_first_sbatch="sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")
    subprocess.run(["pkill", "-x", "slurmdbd"], check=True)
    try:
        wait_for(lambda: subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0, 30,
                 "sacct to fail without its daemon")
        proc = workspace.cli("run", "--repo", str(example_repo), "--all", "--executor", "slurm", "--models", "logreg",
                             "--benchmarks", "iris-accuracy", "--format", "json")
    finally:
        subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], check=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["states"] == {"COMPLETED": 1}
    assert len(calls(log, "sbatch")) == 2 and "trying again" in proc.stderr
    stats = result["executor_stats"]
    assert stats["squeue_calls"] == len(calls(log, "squeue")) >= 1, (stats, calls(log, "squeue"))


def test_reproduce_through_sbatch_gives_the_identical_score(slurm_cluster, workspace, example_repo):
    workspace.json("run", "--repo", str(example_repo), "--all", "--executor", "slurm", "--models", "knn-5",
                   "--benchmarks", "wine-accuracy")
    [row] = workspace.json("leaderboard")
    data = workspace.json("reproduce", str(row["id"]), "--out", str(workspace.path / "again"))
    subprocess.run(["sbatch", "--parsable", "--wait", data["job_script"]], cwd=workspace.path, check=True,
                   capture_output=True, text=True, timeout=600)
    [result] = [json.loads(p.read_text()) for p in (workspace.path / "again" / "spool").glob("*.json")]
    assert result["status"] == "ok" and result["score_ceiled"] == row["score"]
    assert (result["lock_hash"], result["env_hash"], result["commit"]) == (row["lock_hash"], row["env_hash"],
                                                                          row["commit"])
