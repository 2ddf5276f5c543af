"""SIGTERM (Jenkins' Abort, a build timeout, `timeout`) and SIGHUP (a closed SSH session) handled like Ctrl-C:
the run's tasks stopped, its rows CANCELLED with the signal named, the submitters told, exit 143 / 129; a
second signal still leaves a run that `reconcile` closes as cancelled."""

from __future__ import annotations

import email
import email.policy
import json
import signal
import subprocess

import pytest

from tests.conftest import CLI, commit_all, wait_for
from tests.test_repair import start_two_slow_pairs
from tests.test_slurm import add_benchmark


def _outbox_subjects(workspace) -> list[str]:  # noqa: ANN001
    return [str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"])
            for p in workspace.state.glob("outbox/**/*.eml")]


def _no_task_left(workspace) -> None:  # noqa: ANN001
    leftovers = subprocess.run(["pgrep", "-f", str(workspace.state / "runs")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "no task of the run is left running"


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_and_sighup_cancel_a_local_run_like_ctrl_c(workspace, example_repo, signum, code, name):
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    result = json.loads(out)
    assert result["interrupted"] and result["stopped_by"] == name and result["states"] == {"CANCELLED": 2}
    assert all(p["reason"].startswith(f"stopped by {name}") for p in result["pairs"]), result["pairs"]
    assert result["emails"], "the submitters are told"
    subjects = _outbox_subjects(workspace)
    assert subjects and all("cancelled by an administrator" in s and "failed" not in s for s in subjects), subjects
    _no_task_left(workspace)
    status = workspace.json("status")
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}
    assert workspace.json("reconcile") == {}


def test_ctrl_c_records_the_run_cancelled_with_an_honest_subject(workspace, example_repo):
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert workspace.json("status")["status"] == "CANCELLED"
    subjects = _outbox_subjects(workspace)
    assert subjects and all("cancelled by an administrator" in s for s in subjects), subjects


def test_a_second_sigterm_leaves_a_run_that_reconcile_closes_as_cancelled(workspace, example_repo):
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    run_id = workspace.json("status")["run_id"]
    proc.send_signal(signal.SIGTERM)
    for line in proc.stderr:  # the cancel is recorded: now the second signal (Jenkins' follow-up kill)
        if "cancelling run" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    wait_for(lambda: workspace.json("reconcile") == {}, 120, "reconcile to close the run")
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}, status
    assert all("SIGTERM" in j["reason"] for j in status["jobs"]), status["jobs"]
    _no_task_left(workspace)


def test_two_quick_sigterms_still_leave_a_cancelled_run(workspace, example_repo):
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    run_id = workspace.json("status")["run_id"]
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    workspace.json("reconcile")
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}, status
    _no_task_left(workspace)


def test_sigterm_cancels_a_slurm_run(slurm_cluster, workspace, example_repo):
    add_benchmark(example_repo, "sleepy", "sleepy", "import time\ntime.sleep(600)\nreturn 0.5")
    commit_all(example_repo, "a benchmark that takes ten minutes")
    workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "1"
    proc = subprocess.Popen([str(CLI), "run", "--repo", str(example_repo), "--base", "HEAD~1", "--executor", "slurm",
                             "--models", "logreg,knn-5", "--format", "json"], cwd=workspace.path, env=workspace.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = ""

    def running() -> int:
        out = subprocess.run(["squeue", "-h", "-r", "-n", f"score-{run_id}", "-o", "%i"],
                             capture_output=True, text=True).stdout
        return len(out.split())

    try:
        [(run_id,)] = wait_for(lambda: workspace.rows("SELECT id FROM runs WHERE status = 'RUNNING'"), 120,
                               "the run to be submitted")
        wait_for(lambda: running() == 2, 180, "both array tasks on Slurm")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        wait_for(lambda: running() == 0, 60, "Slurm to stop the tasks")
    finally:
        proc.kill()
        proc.wait()
        if run_id:
            subprocess.run(["scancel", "-n", f"score-{run_id}"], check=False)
    result = json.loads(out)
    assert result["stopped_by"] == "SIGTERM" and result["states"] == {"CANCELLED": 2}, result
    assert result["emails"]
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}
