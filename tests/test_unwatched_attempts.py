"""Attempt rows for pairs that ended with no coordinator watching, on the one-node Slurm cluster: a run whose
coordinator was killed, closed by `reconcile` (sacct's state and peak), and a bundle an admin rendered,
`sbatch`ed by hand and ingested (the worker's results). One row per ended pair, none twice on a re-run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, commit_all, wait_for
from tests.test_tiers import add_benchmark, site_tiers

pytestmark = pytest.mark.integration

GB = 2**30


def attempts_by_benchmark(workspace, run_id: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for a in workspace.json("status", run_id)["attempts"]:
        found.setdefault(a["benchmark"], []).append(a)
    return found


def count_attempts(workspace, run_id: str) -> int:
    [(n,)] = workspace.rows("SELECT COUNT(*) FROM attempts WHERE run_id = ?", run_id)
    return n


def test_reconcile_records_an_attempt_for_each_pair_that_ended_after_its_coordinator_died(
        slurm_cluster, workspace, example_repo):
    """The coordinator is killed once its tasks are submitted: a pair killed over its tier's memory, one that
    completes and one whose plugin raises each end unwatched. Repeated `reconcile`s (while the slower tasks
    still run) give each exactly one attempt row, with Slurm's word on the killed one (OOM, sacct's peak,
    elapsed time, job id); the pair packed after the killed one, which never started, gets none (it made no
    attempt, and an OOM row would size it a tier up next time); nothing is escalated without a coordinator."""
    add_benchmark(example_repo, "a_hog", "a-hog", "import time\ntime.sleep(12)\nblocks = []\nfor _ in range(12):\n"
                  "    blocks.append(bytearray(100 * 2**20))\n    time.sleep(0.05)\ntime.sleep(4)\nreturn 0.5")
    add_benchmark(example_repo, "b_never", "b-never", "return 0.4")
    add_benchmark(example_repo, "c_quiet", "c-quiet", "import time\ntime.sleep(3)\nreturn 0.6")
    add_benchmark(example_repo, "d_raises", "d-raises", "import time\ntime.sleep(6)\nraise ValueError('flaky')")
    commit_all(example_repo, "a 1.2 GB benchmark and its neighbour, a quiet one, a failing one")
    site_tiers(workspace, {"name": "small", "mem": "800M", "time_minutes": 10},
               {"name": "large", "mem": "3G", "time_minutes": 10}, pairs_per_task=2)
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                             "--executor", "slurm"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = ""
    try:
        [(run_id,)] = wait_for(lambda: workspace.rows("SELECT id FROM runs WHERE status = 'RUNNING'", missing_ok=True), 300,
                               "the run to be submitted")
        proc.kill()  # the coordinator dies before any task ends; its tasks run on
        proc.wait()
        assert count_attempts(workspace, run_id) == 0
        seen: list[int] = []

        def reconciled() -> bool:
            workspace.json("reconcile")
            seen.append(count_attempts(workspace, run_id))
            return not workspace.rows("SELECT 1 FROM jobs WHERE run_id = ? AND state IN ('PENDING', 'RUNNING')",
                                      run_id)

        wait_for(reconciled, 420, "every task of the run to end", interval=2)
    finally:
        proc.kill()
        proc.wait()
        if run_id:
            subprocess.run(["scancel", "-n", f"score-{run_id}"], check=False)
    tries = attempts_by_benchmark(workspace, run_id)
    assert {b: [(a["tier"], a["state"], a["failure_kind"]) for a in rows] for b, rows in tries.items()} == {
        "a-hog": [("small", "OUT_OF_MEMORY", "OOM")], "c-quiet": [("small", "COMPLETED", None)],
        "d-raises": [("small", "FAILED", "PLUGIN")]}
    [(never,)] = workspace.rows("SELECT state FROM jobs WHERE run_id = ? AND benchmark = 'b-never'", run_id)
    assert never == "OUT_OF_MEMORY"  # closed with its task's state, but no attempt of its own
    [hog] = tries["a-hog"]
    assert hog["max_rss_bytes"] > 700 * 2**20 and hog["elapsed_seconds"] > 0  # sacct's, for the killed task
    assert hog["req_mem_bytes"] == 800 * 2**20 and hog["job_id"] and hog["escalated_to"] is None
    assert all(rows[0]["job_id"] for rows in tries.values())
    assert seen == sorted(seen) and seen[-1] == 3  # rows came as pairs ended, never more than one each
    status = workspace.json("status", run_id)
    assert status["status"] == "RECONCILED" and status["usage"]["attempts"] == 3
    assert workspace.json("reconcile") == {} and count_attempts(workspace, run_id) == 3


def test_a_hand_submitted_bundle_gets_an_attempt_row_for_each_result_it_ingests(
        slurm_cluster, workspace, example_repo):
    """`render` with two tiers, the admin `sbatch`es the small tier's script, ingests, then the large one's, and
    ingests again twice: each pair with a result gets one attempt row (its tier and request from the bundle's
    manifest, its failure kind, peak, time and job id from the worker's result), and a re-ingest adds none."""
    add_benchmark(example_repo, "quiet", "quiet", "return 0.6")
    add_benchmark(example_repo, "raises", "raises", "raise ValueError('flaky')")
    add_benchmark(example_repo, "greedy", "greedy", "raise MemoryError('wants everything')")
    add_benchmark(example_repo, "roomy", "roomy", "return 0.7", "resources:\n  memory: 2G\n")
    commit_all(example_repo, "four benchmarks, one declaring 2 GB")
    site_tiers(workspace, {"name": "small", "mem": "1G", "time_minutes": 10},
               {"name": "large", "mem": "3G", "time_minutes": 10})
    bundle = workspace.json("render", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                            "--out", str(workspace.path / "bundle"))
    small, large = bundle["job_scripts"]

    def sbatch(script: str) -> str:
        return subprocess.run(["sbatch", "--parsable", "--wait", script], cwd=workspace.path, capture_output=True,
                              text=True, check=True, timeout=600).stdout.strip().split(";")[0]

    small_job = sbatch(small)
    assert workspace.json("ingest", bundle["run_dir"])["failures"] == 2
    run_id = bundle["run_id"]
    first = attempts_by_benchmark(workspace, run_id)
    assert {b: [(a["tier"], a["failure_kind"]) for a in rows] for b, rows in first.items()} == {
        "quiet": [("small", None)], "raises": [("small", "PLUGIN")], "greedy": [("small", "OOM")]}
    large_job = sbatch(large)
    workspace.json("ingest", bundle["run_dir"])
    tries = attempts_by_benchmark(workspace, run_id)
    assert {b: [(a["tier"], a["failure_kind"], a["req_mem_bytes"], a["job_id"]) for a in rows]
            for b, rows in tries.items()} == {
        "quiet": [("small", None, GB, f"{small_job}_0")], "raises": [("small", "PLUGIN", GB, f"{small_job}_0")],
        "greedy": [("small", "OOM", GB, f"{small_job}_0")], "roomy": [("large", None, 3 * GB, f"{large_job}_0")]}
    assert all(a["elapsed_seconds"] and a["node"] for rows in tries.values() for a in rows)
    assert workspace.json("status", run_id)["status"] == "COMPLETED_WITH_FAILURES"
    workspace.json("ingest", bundle["run_dir"])
    workspace.json("ingest")  # every run folder
    assert count_attempts(workspace, run_id) == 4


def test_a_hand_submitted_task_slurm_killed_is_recorded_and_its_run_reruns_without_naming_an_executor(
        slurm_cluster, workspace, example_repo):
    """The bundle is submitted with the line `render` prints (its submit.sh records the Slurm job); Slurm kills
    the task over its memory. `ingest` asks Slurm about the recorded job: the pair that ran is OUT_OF_MEMORY with
    its attempt row (sacct's peak, the job and task that ran it), its never-started neighbour is closed with the
    task's state and no attempt, nothing stays RENDERED, and the run is over. `rerun --failed` of that rendered
    run goes to Slurm, where it was submitted, without --executor."""
    add_benchmark(example_repo, "a_hog", "a-hog", "import time\nblocks = []\nfor _ in range(12):\n"
                  "    blocks.append(bytearray(b'\\x01') * (100 * 2**20))\n    time.sleep(0.05)\n"
                  "time.sleep(4)\nreturn 0.5")
    add_benchmark(example_repo, "b_quiet", "b-quiet", "return 0.6")
    commit_all(example_repo, "a 1.2 GB benchmark and a small one")
    site_tiers(workspace, {"name": "small", "mem": "800M", "time_minutes": 10},
               {"name": "large", "mem": "3G", "time_minutes": 10})
    bundle = workspace.json("render", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                            "--out", str(workspace.path / "bundle"))
    submitted = subprocess.run(["bash", "-c", bundle["submit"]], capture_output=True, text=True, timeout=120,
                               env=workspace.env)
    assert submitted.returncode == 0, submitted.stderr
    [line] = (Path(bundle["run_dir"]) / "slurm-jobs").read_text().splitlines()
    job = line.split("@")[0]
    run_id = bundle["run_id"]

    def over() -> bool:
        workspace.json("ingest", bundle["run_dir"])
        return workspace.json("status", run_id)["status"] != "PENDING"

    wait_for(over, 300, "the hand-submitted run to be accounted for", interval=3)
    status = workspace.json("status", run_id)
    states = {j["benchmark"]: j["state"] for j in status["jobs"]}
    assert states == {"a-hog": "OUT_OF_MEMORY", "b-quiet": "OUT_OF_MEMORY"}, status["jobs"]
    assert status["status"] == "COMPLETED_WITH_FAILURES" and status["coordinator"] is None
    [attempt] = status["attempts"]  # the neighbour never started: no attempt of its own
    assert (attempt["benchmark"], attempt["tier"], attempt["failure_kind"], attempt["job_id"]) == (
        "a-hog", "small", "OOM", f"{job}_0")
    assert attempt["max_rss_bytes"] > 600 * 2**20  # sacct's MaxRSS of the killed task
    workspace.json("reconcile")
    assert count_attempts(workspace, run_id) == 1  # accounted once
    rerun = workspace.json("rerun", run_id, "--failed")  # no --executor: Slurm, where the bundle ran
    assert rerun["states"] == {"COMPLETED": 2}, rerun["pairs"]
    assert workspace.json("runs")[0]["executor"] == "slurm"
