"""Planning: which pairs, why, minus what is already scored; filters, --force, unsolvable environments."""

from __future__ import annotations

import email
from email import policy

from tests.conftest import commit_all, write


def keys(plan: dict, section: str = "to_run") -> set[tuple[str, str]]:
    return {(p["model"], p["benchmark"]) for p in plan[section]}


def test_plan_all_then_filters(workspace, example_repo):
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all")
    assert plan["counts"] == {"to_run": 16, "already_scored": 0, "cannot_run": 0, "in_flight": 0, "held": 0}
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
    commit_all(example_repo, "knn with 3 neighbours", author="Lab Admin <admin@example.org>")  # its owner
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


def test_scores_made_under_one_shared_environment_still_count(workspace, example_repo):
    """Scores made before each side had its own environment (their key names one environment, the union of both
    sides) are not re-scored because the scheme changed; `reproduce` re-renders such a score's job as it ran, one
    environment for both sides; a change the old scheme would have re-scored for (a domain dependency, which no
    plugin's code hash covers) still is, per side."""
    import json
    import sqlite3

    from envs.sides import side_hashes
    from pipeline.stages.plan import pair_key

    workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "knn-5", "--benchmarks",
                  "wine-accuracy,iris-accuracy", check=True)
    # the database as the version before the split left it (here both sides lock the same set, which is the union)
    with sqlite3.connect(workspace.state / "local.db") as db:
        rows = db.execute("SELECT s.id, m.identifier, t.identifier, s.model_code_hash, s.benchmark_code_hash, "
                          "s.lock_hash, s.env_hash FROM scores s JOIN models m ON s.model_id = m.id "
                          "JOIN benchmark_instances i ON s.benchmark_instance_id = i.id "
                          "JOIN benchmark_types t ON i.benchmark_type_id = t.id").fetchall()
        assert len(rows) == 2
        for score_id, model, bench, model_hash, bench_hash, lock, env in rows:
            (lock, bench_lock), (env, bench_env) = side_hashes(lock), side_hashes(env)
            assert (lock, env) == (bench_lock, bench_env)
            db.execute("UPDATE scores SET pair_key = ?, lock_hash = ?, env_hash = ? WHERE id = ?",
                       (pair_key(model, bench, model_hash, bench_hash, lock), lock, env, score_id))
        old_keys = dict(db.execute("SELECT id, pair_key FROM scores").fetchall())
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "knn-5")
    assert keys(plan, "already_scored") == {("knn-5", "wine-accuracy"), ("knn-5", "iris-accuracy")}
    assert {p["key"] for p in plan["already_scored"]} == set(old_keys.values())
    assert keys(plan) == {("knn-5", "digits-accuracy"), ("knn-5", "breast_cancer-balanced_accuracy")}
    assert all("+" in p["lock_hash"] for p in plan["to_run"])  # new pairs: per side

    score_id = min(old_keys)
    workspace.json("reproduce", str(score_id), "--out", str(workspace.path / "again"))
    [task] = json.loads((workspace.path / "again" / "manifest.json").read_text())["tasks"]
    assert task["envs"]["model"] == task["envs"]["benchmark"] and task["pairs"][0]["key"] == old_keys[score_id]

    write(example_repo, "requirements.txt", "scikit-learn>=1.3\nsix==1.16.0\n")  # the domain's own dependencies
    commit_all(example_repo, "the domain needs six")
    after = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "knn-5",
                           "--benchmarks", "wine-accuracy,iris-accuracy")
    assert keys(after) == {("knn-5", "wine-accuracy"), ("knn-5", "iris-accuracy")} and after["already_scored"] == []
    assert all("+" in p["lock_hash"] for p in after["to_run"])


def test_each_distinct_requirement_set_is_solved_once_and_the_solves_run_at_the_same_time(tmp_path, monkeypatch):
    """Four pairs whose sides share two distinct requirement sets, planned with `lock_workers = 2`: the real
    `uv pip compile` runs exactly twice (counted by a passthrough wrapper that only logs, as the Slurm tests count
    sacct), the two solves overlap (each waits, up to 10 s, for the other to have started: run one after the
    other, the first would see only itself), and a second plan reads both locks from the cache and runs no solver.
    The index is a folder of one local wheel (uv's find-links, no index): no network. Unconfined (`LockJail("off")`):
    the sandbox is not what this test is about."""
    import shlex

    from envs.lock import LockJail
    from pipeline.config import _default_uv
    from pipeline.stages.plan import make_plan
    from tests.test_outages import tiny_wheel
    from tests.test_units_decisions import catalog, change

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)
    for name, value in (("UV_FIND_LINKS", str(wheels)), ("UV_NO_INDEX", "1"), ("UV_NO_CACHE", "1")):
        monkeypatch.setenv(name, value)
    log = tmp_path / "uv-calls.log"
    log.touch()
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\n# passthrough: logs each call, waits for a second one to have started, runs uv\n"
                  f"log={shlex.quote(str(log))}\n"
                  'echo "start $$" >> "$log"\n'
                  "i=0\n"
                  "while [ \"$(grep -c '^start' \"$log\")\" -lt 2 ] && [ \"$i\" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n"
                  "echo \"saw $(grep -c '^start' \"$log\")\" >> \"$log\"\n"
                  f"exec {shlex.quote(_default_uv())} \"$@\"\n")
    uv.chmod(0o755)
    cat = catalog({"m1": {"requirements": ["tinydep"]}, "m2": {"requirements": ["tinydep"]}},
                  {"b1": {"requirements": ["tinydep==1.0"]}, "b2": {"requirements": ["tinydep==1.0"]}})
    steps: list[tuple[int, int]] = []

    def plan():  # noqa: ANN202
        return make_plan(change(base=None, models=("m1", "m2"), benchmarks=("b1", "b2")), cat,
                         locks_dir=tmp_path / "locks", uv=str(uv), python_version="3.11", scored=lambda keys: set(),
                         lock_workers=2, jail=LockJail(mode="off"), progress=lambda i, n: steps.append((i, n)))

    first = plan()
    assert len(first.to_run) == 4 and not first.cannot_run, first.cannot_run
    assert {side.packages for p in first.to_run for side in (p.lock.model, p.lock.benchmark)} == {("tinydep==1.0",)}
    calls = log.read_text().split("\n")
    assert sum(line.startswith("start") for line in calls) == 2, calls  # once per distinct set, not per pair
    assert [line for line in calls if line.startswith("saw")] == ["saw 2", "saw 2"], calls  # at the same time
    assert steps == [(1, 2), (2, 2)]
    again = plan()
    assert sum(line.startswith("start") for line in log.read_text().split("\n")) == 2  # the cache: no solver ran
    assert [p.key for p in again.to_run] == [p.key for p in first.to_run]
