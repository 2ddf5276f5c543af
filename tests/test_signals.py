"""SIGTERM (Jenkins' Abort, a build timeout, `timeout`) and SIGHUP (a closed SSH session) handled like Ctrl-C:
the run's tasks stopped, its rows CANCELLED with the signal named, the submitters told, exit 143 / 129; a
second signal still leaves a run that `reconcile` closes as cancelled."""

from __future__ import annotations

import email
import email.policy
import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import CLI, commit_all, wait_for
from tests.test_repair import start_two_slow_pairs
from tests.test_slurm import add_benchmark


def _outbox_subjects(workspace) -> list[str]:  # noqa: ANN001
    return [str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"])
            for p in workspace.state.glob("outbox/**/*.eml")]


def _sides_running(workspace, proc: subprocess.Popen) -> None:  # noqa: ANN001
    """Wait until both pairs' two sides run (each side's sandbox launcher, a session of its own): a stop from here
    on must end them too, not only the tasks' job scripts."""
    pattern = f"{workspace.state / 'runs'}/.*/job/netns.py"

    def four() -> bool:
        assert proc.poll() is None, "the run ended before its pairs' sides started"
        return len(subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()) >= 4

    wait_for(four, 300, "both pairs' sides to run")


def _no_task_left(workspace) -> None:  # noqa: ANN001
    leftovers = subprocess.run(["pgrep", "-f", str(workspace.state / "runs")], capture_output=True, text=True)
    pids = [int(pid) for pid in leftovers.stdout.split()]
    for pid in pids:  # this test's own processes: ended (with their process groups: a side's sandbox) before failing
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                break
            except (ProcessLookupError, PermissionError):
                continue
    assert pids == [], "no task of the run is left running"


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_and_sighup_cancel_a_local_run_like_ctrl_c(workspace, example_repo, signum, code, name):
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    _sides_running(workspace, proc)
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


def _await_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """The coordinator's stderr lines up to the one holding `text`; fails if the stream ends or `timeout` passes
    first (a readiness signal that never comes is a failure, never a fall-through)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)
            if text in line:
                return
        lines.put(None)  # the stream ended without it

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {text!r} within {timeout:.0f} s; stderr so far:\n{''.join(seen)}") from None
        if line is None:
            raise AssertionError(f"stderr ended without {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return seen


def _open_rows(workspace, run_id: str) -> tuple[str, list[str]]:  # noqa: ANN001
    [(status,)] = workspace.rows("SELECT status FROM runs WHERE id = ?", run_id)
    return status, sorted(state for (state,) in workspace.rows("SELECT state FROM jobs WHERE run_id = ?", run_id))


def test_a_second_sigterm_leaves_a_run_that_reconcile_closes_as_cancelled(workspace, example_repo):
    """SIGTERM, then (once the cancel is recorded: "cancelling run") a second SIGTERM, as Jenkins sends when the
    first takes long: the second-signal handler stops the coordinator at once (143, no result written, the run's
    rows still open), and `reconcile` finds the run to close, stops what is left and closes it CANCELLED with the
    first signal's reason."""
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    run_id = workspace.json("status")["run_id"]
    _sides_running(workspace, proc)
    proc.send_signal(signal.SIGTERM)
    _await_line(proc, f"SIGTERM: cancelling run {run_id}")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out == "" and "interrupted: stopped by SIGTERM" in err, (out, err)  # at once: no result was written
    assert _open_rows(workspace, run_id) == ("RUNNING", ["RUNNING", "RUNNING"])  # left for reconcile
    assert workspace.json("reconcile") == {run_id: {"CANCELLED": 2}}  # it had the run to close
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}, status
    assert all(j["reason"].startswith("stopped by SIGTERM") for j in status["jobs"]), status["jobs"]
    assert workspace.json("reconcile") == {}
    _no_task_left(workspace)


def test_two_quick_sigterms_still_leave_a_cancelled_run(workspace, example_repo):
    """Two SIGTERMs sent back to back. Almost always they arrive before the cancel is recorded (often as one: the
    kernel merges a pending signal): the first signal's cancel runs to its end, the run closed by its coordinator
    with the result written, nothing left for `reconcile`. Should the second land after the cancel was recorded,
    it stops the coordinator at once and `reconcile` closes the run. Which path ran is read from what the
    coordinator wrote, and each is held to its own outcome."""
    proc, _ = start_two_slow_pairs(workspace, example_repo)
    run_id = workspace.json("status")["run_id"]
    _sides_running(workspace, proc)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    if out:  # the first signal's path: its cancel ended and the coordinator wrote the run's result
        result = json.loads(out)
        assert result["interrupted"] and result["stopped_by"] == "SIGTERM" and result["states"] == {"CANCELLED": 2}
        assert _open_rows(workspace, run_id) == ("CANCELLED", ["CANCELLED", "CANCELLED"])
        assert workspace.json("reconcile") == {}, "the coordinator closed everything itself"
    else:  # the second-signal path: stopped at once, the rows left for reconcile
        assert "interrupted: stopped by SIGTERM" in err, err
        assert _open_rows(workspace, run_id) == ("RUNNING", ["RUNNING", "RUNNING"])
        assert workspace.json("reconcile") == {run_id: {"CANCELLED": 2}}
    status = workspace.json("status", run_id)
    assert status["status"] == "CANCELLED" and status["counts"] == {"CANCELLED": 2}, status
    assert all(j["reason"].startswith("stopped by SIGTERM") for j in status["jobs"]), status["jobs"]
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
        [(run_id,)] = wait_for(lambda: workspace.rows("SELECT id FROM runs WHERE status = 'RUNNING'", missing_ok=True), 120,
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


def test_without_the_sandbox_a_stopped_run_leaves_no_side_running(workspace, example_repo):
    """With `sandbox = "off"` (an explicit setting) no launcher dies with its parent: the pair's two sides are
    plain processes leading sessions of their own, out of reach of a signal to their task's process group. The
    worker ends them itself when its task is stopped (`stop_sides_on_signals`)."""
    workspace.env["SCORE_PLUGINS_SANDBOX"] = "off"
    proc, _ = start_two_slow_pairs(workspace, example_repo)

    def sides() -> list[str]:  # the sides' interpreters run the launcher with the run's code folder
        out = subprocess.run(["pgrep", "-af", str(workspace.state / "runs")], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if " -s -c " in line]

    wait_for(lambda: len(sides()) >= 4, 300, "both pairs' sides to run")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert json.loads(out)["states"] == {"CANCELLED": 2}
    _no_task_left(workspace)
