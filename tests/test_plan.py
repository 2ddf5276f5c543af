"""Planning: which pairs, why, minus what is already scored; filters, --force, unsolvable environments."""

from __future__ import annotations

import email
from email import policy

from tests.conftest import commit_all, write


def keys(plan: dict, section: str = "to_run") -> set[tuple[str, str]]:
    return {(p["model"], p["benchmark"]) for p in plan[section]}


def test_plan_all_then_filters(workspace, example_repo):
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all")
    assert plan["counts"] == {"to_run": 16, "already_scored": 0, "cannot_run": 0, "in_flight": 0}
    pair = next(p for p in plan["to_run"] if p["model"] == "logreg" and p["benchmark"] == "iris-accuracy")
    assert pair["reasons"] == ["every model (--all)", "every benchmark (--all)"]
    assert pair["lock_hash"] and pair["env_hash"] and len(pair["key"]) == 32
    assert pair["submitters"] == ["admin@example.org", "bob@example.org"]

    only = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "knn-5,logreg",
                          "--benchmarks", "wine-accuracy")
    assert keys(only) == {("knn-5", "wine-accuracy"), ("logreg", "wine-accuracy")}

    change = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "gaussian-nb")
    assert keys(change) == {("gaussian-nb", "iris-accuracy")}


def test_plan_skips_what_is_scored_unless_forced(workspace, example_repo):
    workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "knn-5", "--benchmarks",
                  "wine-accuracy,iris-accuracy", check=True)
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "knn-5")
    assert keys(plan, "already_scored") == {("knn-5", "wine-accuracy"), ("knn-5", "iris-accuracy")}
    assert keys(plan) == {("knn-5", "digits-accuracy"), ("knn-5", "breast_cancer-balanced_accuracy")}
    forced = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "knn-5", "--force")
    assert len(forced["to_run"]) == 4 and forced["already_scored"] == []

    # changing the model's code changes its key: every benchmark is planned again
    path = example_repo / "sklearn_scores/models/knn/__init__.py"
    path.write_text(path.read_text().replace("n_neighbors=5", "n_neighbors=3"))
    commit_all(example_repo, "knn with 3 neighbours")
    after = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1")
    assert keys(after) == {("knn-5", b) for b in ("digits-accuracy", "wine-accuracy", "iris-accuracy",
                                                  "breast_cancer-balanced_accuracy")}


def test_unknown_identifier_and_missing_mode_are_usage_errors(workspace, example_repo):
    proc = workspace.cli("plan", "--repo", str(example_repo), "--all", "--models", "no-such-model")
    assert proc.returncode == 2 and "unknown model identifier(s)" in proc.stderr and "no-such-model" in proc.stderr
    proc = workspace.cli("plan", "--repo", str(example_repo))
    assert proc.returncode == 2 and "--base" in proc.stderr


def test_unsolvable_requirements_cannot_run_and_are_recorded(workspace, example_repo):
    write(example_repo, "sklearn_scores/models/impossible/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['impossible'] = lambda: None\n")
    write(example_repo, "sklearn_scores/models/impossible/requirements.txt",
          "scikit-learn>=1.3\nscikit-learn<1.0\n")
    commit_all(example_repo, "a model whose requirements contradict each other", author="Ivy <ivy@example.org>")
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1")
    assert plan["to_run"] == [] and len(plan["cannot_run"]) == 4
    assert "cannot solve" in plan["cannot_run"][0]["problem"]
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", expect=1)
    assert result["states"] == {"FAILED": 4}
    assert all(p["stage"] == "env_build" for p in result["pairs"])
    to = {str(email.message_from_bytes(p.read_bytes(), policy=policy.default)["To"])
          for p in (workspace.state / "outbox").rglob("*.eml")}
    # the new model's unsolvable requirements are its submitter's news: the benchmarks' owners are not mailed
    assert to == {"ivy@example.org"}
