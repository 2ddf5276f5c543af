"""Scoring on a real one-node Slurm cluster (scripts/slurm-cluster): sbatch arrays, submitit,
MaxArraySize chunking, a time limit, a memory limit, and scancel of one task."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from pipeline.executors.base import TaskState
from pipeline.executors.slurm import ArrayPart, array_chunks, parse_sacct
from tests.conftest import ROOT, CLI, commit_all, write

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
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--executor", "slurm",
                            "--models", "logreg,knn-5")
    assert result["states"] == {"COMPLETED": 8}
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
    time.sleep(2)
    subprocess.run(["scancel", target], check=True)
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


def test_node_failure_is_retried(slurm_cluster, workspace, example_repo):
    """A node that goes down mid-task: the task ends NODE_FAIL, is resubmitted (bounded), and completes."""
    add_benchmark(example_repo, "slowish", "slowish", "import time\ntime.sleep(15)\nreturn 0.5")
    commit_all(example_repo, "a slow benchmark")
    node = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", "slurm",
                             "--models", "logreg", "--format", "json"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(workspace.state.glob("runs/*/logs/task-0.out")):
            time.sleep(0.5)
        time.sleep(3)
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=score-plugins-test"],
                       check=True)
        time.sleep(3)
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    assert json.loads(out)["states"] == {"COMPLETED": 1}
    [job] = workspace.json("status")["jobs"]
    assert job["state"] == "COMPLETED"
    assert "resubmitting 1 task(s) after NODE_FAIL" in err


def test_slurmctld_restarted_mid_run(slurm_cluster, workspace, example_repo):
    """The controller goes away while tasks run and comes back: the run waits, loses nothing, and
    every pair completes once."""
    add_benchmark(example_repo, "steady", "steady", "import time\ntime.sleep(12)\nreturn 0.5")
    commit_all(example_repo, "a steady benchmark")
    workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "2"
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", "slurm",
                             "--format", "json"], cwd=workspace.path, env=workspace.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(workspace.state.glob("runs/*/logs/task-*.out")):
            time.sleep(0.5)
        time.sleep(2)
        subprocess.run(["pkill", "-x", "slurmctld"], check=True)
        time.sleep(8)  # the run polls while the controller is gone
    finally:
        subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], check=True, capture_output=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["states"] == {"COMPLETED": 4}
    board = workspace.json("leaderboard")
    assert sorted(r["model"] for r in board if r["benchmark"] == "steady") == [
        "gaussian-nb", "knn-5", "logreg", "random-forest"]
