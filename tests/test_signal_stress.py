"""Every stop signal ends the coordinator, every time: SIGTERM, SIGHUP and SIGINT at random moments of real runs.

Each run is a real `score-plugins run` on the local executor (own state folder and SQLite database, one shared
environment root, so the one environment of tiny plugins without requirements is built once; the lock of the
empty requirement set is solved offline by uv in every run, so every run passes through locking), mailing its
submitter through a real SMTP server that answers slowly (so a signal can land while mailing). The moments are
drawn with a seeded generator: for each run a signal, a phase and a moment within it (the test watches the run's
folder and database to see the phase begin; the seed is printed, `SCORE_PLUGINS_STRESS_SEED` replays the draws);
runs go several at a time. Each coordinator must end within seconds, exit as the signal says (or
as the run ended, when the signal came after the end), leave its run CANCELLED (or in its real end state), and
leave no task or pair process behind. A coordinator that does not end is dumped (its threads' Python stacks,
py-spy when installed, else /proc) before it is killed, so a hang explains itself.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import CLI, commit_all, write
from tests.test_repair import terminal_signals
from tests.services import SmtpServer

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
RUNS = int(os.environ.get("SCORE_PLUGINS_STRESS_RUNS", "54"))  # one signal each: at least 50
PARALLEL = int(os.environ.get("SCORE_PLUGINS_STRESS_PARALLEL", "4"))
SMTP_DELAY = 1.0  # the SMTP server answers each message after this long: a window for signals while mailing
ENDS_WITHIN = 30.0  # seconds from the signal to the coordinator's exit (a loaded 2-core CI machine; seen: < 5)
BENCHMARKS = ("tiny-b0", "tiny-b1", "tiny-b2")
PHASES = ("start", "locking", "submitting", "watching", "ingesting", "mailing", "after the end")


def tiny_plugins(repo: Path) -> None:
    """A model and three benchmarks without requirements (one empty environment), each pair about a second."""
    write(repo, "sklearn_scores/models/tiny/__init__.py",
          "from sklearn_scores import model_registry\n\nmodel_registry['tiny-model'] = lambda: object()\n")
    for index, name in enumerate(BENCHMARKS):
        write(repo, f"sklearn_scores/benchmarks/tiny_{index}/__init__.py",
              "import time\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
              f"    def __call__(self, model):\n        time.sleep({0.3 + 0.4 * index})\n        return 0.5\n\n"
              f"benchmark_registry['{name}'] = Bench\n")
    commit_all(repo, "tiny plugins", author="Tiny Submitter <tiny@example.org>")


@dataclass
class Shot:
    """One run and the signal sent to it."""

    number: int
    signum: int
    delay: float  # after its target phase began
    state: Path
    target: str = "start"  # the phase it is aimed at (PHASES)
    sent: bool = False  # False when the run had ended before its moment came
    started_at: float = 0.0
    proc: subprocess.Popen | None = None
    reader: threading.Thread | None = None  # drains the coordinator's output and notes the moment it ends
    out: str = ""
    err: str = ""
    sent_at: float = 0.0
    phase: str = ""
    ended_at: float | None = None
    notes: list[str] = field(default_factory=list)


def phase_of(shot: Shot) -> str:
    """Where the run was when the signal went out, from what it had recorded (read-only)."""
    if shot.ended_at is not None or shot.proc.returncode is not None:
        return "after the end"
    db = shot.state / "local.db"
    if not db.exists():
        return "start"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            runs = conn.execute("SELECT status FROM runs").fetchall()
            jobs = conn.execute("SELECT state FROM jobs").fetchall()
    except sqlite3.Error:
        return "start"
    if not runs:
        return "locking" if (shot.state / "locks").exists() else "start"
    status = runs[0][0]
    if status == "PENDING":
        return "submitting"
    if status == "RUNNING":
        ended = sum(s in ("COMPLETED", "FAILED") for (s,) in jobs)
        return "ingesting" if ended else "watching"
    return "mailing"


def fire(shot: Shot) -> None:
    """Send the shot's signal once its run has reached its target phase (or a later one), `delay` seconds in."""
    while shot.ended_at is None and PHASES.index(phase_of(shot)) < PHASES.index(shot.target):
        time.sleep(0.05)
    time.sleep(shot.delay)
    shot.phase = phase_of(shot)
    shot.sent_at = time.monotonic()
    if shot.ended_at is None:
        shot.proc.send_signal(shot.signum)
        shot.sent = True


def dump_stacks(pid: int) -> str:
    """What a hung coordinator is doing: py-spy's dump of every thread when it is installed, else the kernel's."""
    spy = shutil.which("py-spy") or next((p for p in ("/tmp/pyspy/bin/py-spy",) if Path(p).exists()), None)
    if spy:
        return subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    lines = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            lines.append(f"thread {task.name}: {(task / 'wchan').read_text()}\n{(task / 'stack').read_text()}")
        except OSError:
            pass
    return "\n".join(lines)


def leftovers(state: Path) -> list[str]:
    """Processes that name the run's folder: its tasks, builders, workers and pairs."""
    out = subprocess.run(["pgrep", "-af", str(state / "runs")], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def start(shot: Shot, repo: Path, env: dict[str, str]) -> None:
    shot.state.mkdir(parents=True)
    shot.started_at = time.monotonic()
    shot.proc = subprocess.Popen(
        [str(CLI), "run", "--repo", str(repo), "--all", "--models", "tiny-model", "--benchmarks",
         ",".join(BENCHMARKS), "--format", "json"], cwd=shot.state.parent,
        env={**env, "SCORE_PLUGINS_STATE_DIR": str(shot.state)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=terminal_signals)

    def read() -> None:
        shot.out, shot.err = shot.proc.communicate()
        shot.ended_at = time.monotonic()

    shot.reader = threading.Thread(target=read, daemon=True)
    shot.reader.start()


def finish(shot: Shot) -> tuple[int, dict | None, str]:
    """Wait for the coordinator (ENDS_WITHIN seconds after its signal); dump and kill it if it does not end."""
    shot.reader.join(timeout=max(1.0, shot.sent_at + ENDS_WITHIN - time.monotonic()))
    if shot.reader.is_alive():
        stacks = dump_stacks(shot.proc.pid)
        shot.proc.kill()
        shot.reader.join()
        raise AssertionError(f"run {shot.number}: the coordinator had not ended {ENDS_WITHIN:.0f} s after "
                             f"{signal.Signals(shot.signum).name} sent {shot.sent_at - shot.started_at:.2f} s in ({shot.phase}); "
                             f"its stacks:\n{stacks}\nstderr:\n{shot.err[-3000:]}")
    try:
        result = json.loads(shot.out)
    except ValueError:
        result = None
    return shot.proc.returncode, result, shot.err


def check(shot: Shot, code: int, result: dict | None, err: str) -> str:
    """The run's record and exit agree with when the signal landed; nothing of it runs on."""
    rows, jobs = [], []
    if (shot.state / "local.db").exists():
        with sqlite3.connect(f"file:{shot.state / 'local.db'}?mode=ro", uri=True) as conn:
            try:
                rows = conn.execute("SELECT status FROM runs").fetchall()
                jobs = conn.execute("SELECT state FROM jobs").fetchall()
            except sqlite3.OperationalError:  # stopped while the schema was being made
                rows, jobs = [], []
    where = f"run {shot.number} ({signal.Signals(shot.signum).name} at {shot.sent_at - shot.started_at:.2f} s, {shot.phase})"
    assert not leftovers(shot.state), f"{where}: left running: {leftovers(shot.state)}"
    if code == 0:  # the signal came as the coordinator was exiting, the run over: its real end state
        assert rows == [("COMPLETED",)] and result and result["states"] == {"COMPLETED": 3}, (where, rows, err)
        # a signal that was lost (ignored) would let the run go on for seconds: mailing alone takes SMTP_DELAY
        assert shot.phase == "after the end" or shot.ended_at - shot.sent_at < SMTP_DELAY * 0.8, \
            f"{where}: the signal was ignored: the run went on and ended well {shot.ended_at - shot.sent_at:.2f} s later"

        return "completed before the signal"
    # 128 + the signal, from the first line of the command to its last (pipeline.admin.signals.stop_from_start)
    if not rows and code != 0:  # before a run was recorded: nothing started, nothing to record; before the
        return "stopped before a run was recorded"  # interpreter reaches our first line its own defaults apply
    if code == -shot.signum:  # landed while the interpreter was exiting (it restores the default actions then)
        assert rows == [("COMPLETED",)] and result and result["states"] == {"COMPLETED": 3}, \
            f"{where}: killed by the signal before the end\n{err[-3000:]}"
        return "completed, killed while exiting"
    assert code == 128 + shot.signum, f"{where}: exit {code}\n{err[-3000:]}"
    open_states = {"PENDING", "RUNNING"}
    assert not any(s in open_states for (s,) in jobs), f"{where}: pairs left open: {jobs}"
    if rows:
        status = rows[0][0]
        # stopped before the run was recorded: no run; after: CANCELLED (a finished run keeps its end state)
        assert status in ("CANCELLED", "COMPLETED"), f"{where}: run recorded {status}\n{err[-3000:]}"
        return f"run {status.lower()}"
    return "stopped before a run was recorded"


def test_stop_signals_at_random_moments_always_end_the_coordinator(workspace, example_repo, tmp_path, capsys):
    seed = int(os.environ.get("SCORE_PLUGINS_STRESS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"stress seed {seed} (SCORE_PLUGINS_STRESS_SEED={seed} replays it)")
    rng = random.Random(seed)
    tiny_plugins(example_repo)
    smtp = SmtpServer(tmp_path / "smtp", delay=SMTP_DELAY)
    env = {**workspace.env, "SCORE_PLUGINS_PAIRS_PER_TASK": "1", "SCORE_PLUGINS_LOCAL_WORKERS": "2",
           "SCORE_PLUGINS_SMTP_URL": smtp.url()}
    env.pop("SCORE_PLUGINS_STATE_DIR", None)
    try:
        shots: list[Shot] = []

        def new_shot(n: int) -> Shot:  # the seed decides each run's signal, its phase and the moment within it
            target = rng.choice(PHASES[:-1])
            return Shot(n, rng.choice(SIGNALS), rng.uniform(0.0, 3.0 if target == "start" else 1.0),
                        tmp_path / f"run-{n}" / ".score-plugins", target=target)

        outcomes: dict[str, int] = {}
        phases: dict[str, int] = {}
        slowest = 0.0
        # RUNS runs at least, then more until RUNS - 4 signals were sent: a run can end before the moment its signal
        # was aimed at (the faster the machine, the more often), and such a run tests nothing
        while len(shots) < RUNS or (sum(s.sent for s in shots) < RUNS - 4 and len(shots) < 3 * RUNS):
            batch = [new_shot(len(shots) + i) for i in range(PARALLEL)]
            shots.extend(batch)
            triggers = []
            for shot in batch:
                start(shot, example_repo, env)
                triggers.append(threading.Thread(target=fire, args=(shot,), daemon=True))
                triggers[-1].start()
            for trigger in triggers:
                trigger.join(timeout=600)
            for shot in batch:
                code, result, err = finish(shot)
                outcome = check(shot, code, result, err)
                slowest = max(slowest, shot.ended_at - shot.sent_at) if shot.phase != "after the end" else slowest
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                phases[shot.phase] = phases.get(shot.phase, 0) + 1
                print(f"run {shot.number}: {signal.Signals(shot.signum).name} aimed at {shot.target} "
                      f"+{shot.delay:.2f} s, sent {shot.sent_at - shot.started_at:.2f} s in ({shot.phase}): "
                      f"exit {code}, {outcome}, ended {shot.ended_at - shot.sent_at:.2f} s later")
        print(f"{sum(s.sent for s in shots)} signals sent; phases {phases}; outcomes {outcomes}; slowest end {slowest:.2f} s after its signal")
        sent = [s for s in shots if s.sent]
        assert len({s.signum for s in sent}) == 3 and len(sent) >= RUNS - 4, f"{len(sent)} signals sent"
    finally:
        smtp.stop()
