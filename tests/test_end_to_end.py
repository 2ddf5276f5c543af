"""The whole path on the embedded default: real git repository, real job script run by bash,
real uv-built environment, real scikit-learn scoring, SQLite, .eml files in the outbox."""

from __future__ import annotations

import email
import json
from email import policy

from tests.conftest import commit_all, git, write


def test_run_all_scores_every_pair_then_is_idempotent(workspace, example_repo):
    proc = workspace.cli("run", "--repo", str(example_repo), "--all", "--format", "json", check=True)
    result = json.loads(proc.stdout)
    assert result["states"] == {"COMPLETED": 16}
    assert result["failed"] == 0 and result["planned"] == 16

    board = workspace.json("leaderboard")
    assert len(board) == 16
    assert {r["model"] for r in board} == {"logreg", "random-forest", "knn-5", "gaussian-nb"}
    assert {r["benchmark"] for r in board} == {"digits-accuracy", "wine-accuracy", "iris-accuracy",
                                               "breast_cancer-balanced_accuracy"}
    head = git(example_repo, "rev-parse", "HEAD")
    for row in board:
        assert 0.5 < row["score"] <= 1.0
        assert row["commit"] == head
        for key in ("lock_hash", "env_hash", "job_id"):
            assert row[key], key
    # every pair shares one environment: one solved package set, built once
    assert len({r["env_hash"] for r in board}) == 1

    # one message per submitter, parseable, listing that submitter's pairs
    emls = sorted((workspace.state / "outbox").rglob("*.eml"))
    assert len(emls) == 3
    recipients = {}
    for path in emls:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        recipients[str(msg["To"])] = msg.get_body(("plain",)).get_content()
    assert set(recipients) == {"admin@example.org", "ada@example.org", "bob@example.org"}
    assert "gaussian-nb on digits-accuracy" in recipients["ada@example.org"]
    assert "logreg on iris-accuracy" in recipients["bob@example.org"]
    assert "logreg on iris-accuracy" not in recipients["ada@example.org"]

    again = workspace.cli("run", "--repo", str(example_repo), "--all", check=True)
    assert "nothing scored: 16 pair(s) already scored for the same code and environment" in again.stdout
    assert workspace.json("leaderboard") == board

    # one submission row per submitter of the run
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from db.models import Submission, User
    engine = create_engine(f"sqlite:///{workspace.state / 'local.db'}")
    with Session(engine) as s:
        rows = s.execute(select(User.email, Submission.status).join(Submission, Submission.user_id == User.id)).all()
    engine.dispose()
    assert sorted(rows) == [("ada@example.org", "COMPLETED"), ("admin@example.org", "COMPLETED"),
                            ("bob@example.org", "COMPLETED")]

    # a table a person can read
    table = workspace.cli("leaderboard", check=True).stdout
    assert "gaussian-nb" in table and "iris-accuracy" in table

    # the example's tree (parent= in each benchmark): average_sklearn_scores over binary (breast_cancer) and
    # multiclass (digits, iris, wine), each the mean of its children; every model has an average and a rank
    models = workspace.json("leaderboard", "--view", "models")
    scores = {(r["model"], r["benchmark"]): r["score"] for r in board}
    for row in models:
        m, agg = row["model"], row["aggregates"]
        multiclass = sum(scores[(m, b)] for b in ("digits-accuracy", "iris-accuracy", "wine-accuracy")) / 3
        assert abs(agg["multiclass"] - multiclass) < 1e-6 and abs(agg["binary"] - scores[
            (m, "breast_cancer-balanced_accuracy")]) < 1e-6
        assert abs(agg["average_sklearn_scores"] - (agg["binary"] + agg["multiclass"]) / 2) < 1e-6
        assert row["rank"] is not None and row["coverage"]["scored"] == 4
    ranked = sorted(models, key=lambda r: r["rank"])
    assert [r["average"] for r in ranked] == sorted((r["average"] for r in models), reverse=True)
    # the emails the run queued (the orchestrator's own path, end to end) name each submitter's models with their
    # average and rank on the board as it stood after the run
    for row in models:
        line = f"{row['model']}: average_sklearn_scores {row['average']:.2f}, rank {row['rank']} of {len(models)}"
        told = [who for who, text in recipients.items() if f"{row['model']} on " in text]
        assert told and all(line in recipients[who] for who in told), (line, told, recipients)


def test_base_head_run_scores_only_what_the_change_implies(workspace, example_repo):
    """HEAD~2..HEAD~1 adds a model: it is scored on the three benchmarks that exist then."""
    result = json.loads(workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~2", "--head", "HEAD~1",
                                      "--format", "json", check=True).stdout)
    assert result["states"] == {"COMPLETED": 3}
    assert {(p["model"], p["benchmark"]) for p in result["pairs"]} == {
        ("gaussian-nb", "digits-accuracy"), ("gaussian-nb", "wine-accuracy"),
        ("gaussian-nb", "breast_cancer-balanced_accuracy")}
    # the next commit adds a benchmark: every model at HEAD is scored on it
    result = json.loads(workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--head", "HEAD",
                                      "--format", "json", check=True).stdout)
    assert {(p["model"], p["benchmark"]) for p in result["pairs"]} == {
        (m, "iris-accuracy") for m in ("logreg", "random-forest", "knn-5", "gaussian-nb")}
    status = workspace.json("status")
    assert status["counts"] == {"COMPLETED": 4}


def test_a_broken_plugin_fails_alone_with_its_stage_and_log(workspace, example_repo):
    """A benchmark that returns NaN and a model that raises on import: each is a clear failure row;
    the good pairs of the same run are scored, and the submitter's email says what went wrong."""
    write(example_repo, "sklearn_scores/models/broken_import/__init__.py",
          "from sklearn_scores import model_registry\n"
          "raise RuntimeError('this model cannot be imported')\n"
          "model_registry['broken-import'] = lambda: None\n")
    write(example_repo, "sklearn_scores/models/broken_import/requirements.txt", "scikit-learn>=1.3\n")
    write(example_repo, "sklearn_scores/benchmarks/nan_bench/__init__.py",
          "from sklearn_scores import benchmark_registry\n\n"
          "class NanBenchmark:\n"
          "    def __call__(self, model):\n"
          "        print('about to return NaN')\n"
          "        return float('nan')\n\n"
          "benchmark_registry['nan-bench'] = NanBenchmark\n")
    write(example_repo, "sklearn_scores/benchmarks/nan_bench/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "Add two broken plugins", author="Eve Mallory <eve@example.org>")

    proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 1, proc.stderr  # the run finished, some pairs failed
    result = json.loads(proc.stdout)
    by_pair = {(p["model"], p["benchmark"]): p for p in result["pairs"]}
    # broken-import x 5 benchmarks, 4 good models x nan-bench
    assert len(by_pair) == 5 + 4
    imp = by_pair[("broken-import", "digits-accuracy")]
    assert imp["state"] == "FAILED" and imp["stage"] == "import"
    assert "this model cannot be imported" in imp["reason"]
    nan = by_pair[("logreg", "nan-bench")]
    assert nan["state"] == "FAILED" and nan["stage"] == "score"
    assert "nan" in nan["reason"].lower()
    assert workspace.json("leaderboard") == []  # nothing fake was recorded as a score

    eve = [p for p in (workspace.state / "outbox").rglob("*.eml")
           if "eve@example.org" in str(email.message_from_bytes(p.read_bytes(), policy=policy.default)["To"])]
    assert len(eve) == 1
    body = email.message_from_bytes(eve[0].read_bytes(), policy=policy.default).get_body(("plain",)).get_content()
    assert "broken-import on digits-accuracy: FAILED during import" in body
    assert "this model cannot be imported" in body
    assert "about to return NaN" in body  # the log tail reaches the submitter
