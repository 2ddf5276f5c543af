"""README claims about what a user sees, each exercised once: --dry-run, plan's compact summary and --pairs,
leaderboard CSV, the --set flags layer, pairs grouped by environment, and environments that include what
data and metric plugins declare."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.conftest import commit_all, write


def test_dry_run_plans_and_records_nothing(workspace, example_repo):
    data = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--dry-run")
    assert data["planned"] == 4 and data["run_id"] is None and data["states"] == {}
    assert not list(workspace.state.glob("runs/*")), "a dry run renders nothing"
    assert workspace.rows("SELECT COUNT(*) FROM runs") == [(0,)] and workspace.rows("SELECT COUNT(*) FROM jobs") == [(0,)]
    people = workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--dry-run")
    assert people.returncode == 0 and "dry run: 4 pairs would be scored" in people.stdout


def test_plan_is_a_summary_unless_pairs_are_asked_for(workspace, example_repo):
    summary = workspace.json("plan", "--repo", str(example_repo), "--all")
    assert summary["counts"]["to_run"] == 16 and "to_run" not in summary
    full = workspace.json("plan", "--repo", str(example_repo), "--all", "--pairs")
    assert len(full["to_run"]) == 16 and {p["model"] for p in full["to_run"]} == {
        "logreg", "knn-5", "random-forest", "gaussian-nb"}
    assert full["counts"] == summary["counts"]


def test_leaderboard_csv_has_every_json_row(workspace, example_repo):
    workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg,knn-5",
                   "--benchmarks", "iris-accuracy")
    rows = workspace.json("leaderboard")
    text = workspace.cli("leaderboard", "--format", "csv", check=True).stdout
    table = list(csv.DictReader(io.StringIO(text)))
    assert [(r["model"], r["benchmark"], float(r["score"])) for r in table] == [
        (r["model"], r["benchmark"], r["score"]) for r in rows]
    assert {"commit", "lock_hash", "env_hash", "job_id"} <= set(table[0])


def test_set_is_the_top_layer_of_settings(workspace):
    workspace.env["SCORE_PLUGINS_TIME_MINUTES"] = "30"
    assert workspace.json("config")["time_minutes"] == 30
    assert workspace.json("--set", "time_minutes=45", "config")["time_minutes"] == 45  # flags win
    bad = workspace.cli("--set", "time_minutes=soon", "config")
    assert bad.returncode == 2 and "time_minutes" in bad.stderr and "Traceback" not in bad.stderr
    unknown = workspace.cli("--set", "no_such_setting=1", "config")
    assert unknown.returncode == 2 and "no_such_setting" in unknown.stderr


def test_settings_layers_flags_over_environment_over_site_file(workspace, tmp_path):
    """Each layer overrides only what it sets: defaults < site file < environment < `--set`."""
    assert workspace.json("config")["time_minutes"] == 60  # the package default
    site = tmp_path / "site.toml"
    site.write_text('[score-plugins]\ntime_minutes = 20\nmem = "2G"\n')
    workspace.env["SCORE_PLUGINS_CONFIG"] = str(site)
    assert {k: workspace.json("config")[k] for k in ("time_minutes", "mem")} == {"time_minutes": 20, "mem": "2G"}
    workspace.env["SCORE_PLUGINS_TIME_MINUTES"] = "30"
    assert {k: workspace.json("config")[k] for k in ("time_minutes", "mem")} == {"time_minutes": 30, "mem": "2G"}
    flagged = workspace.json("--set", "time_minutes=45", "config")
    assert (flagged["time_minutes"], flagged["mem"]) == (45, "2G")


def test_pairs_are_grouped_by_environment_and_data_requirements_count(workspace, example_repo):
    """A model with an extra requirement gets its own environment; tasks never mix environments; a data
    plugin's requirement reaches the environment of every benchmark that loads it; each side has its own."""
    write(example_repo, "sklearn_scores/models/knn/requirements.txt", "scikit-learn>=1.3\nsix>=1.16\n")
    write(example_repo, "sklearn_scores/data/sklearn_toy/requirements.txt", "scikit-learn>=1.3\npackaging>=23\n")
    commit_all(example_repo, "knn needs six; the toy data needs packaging")
    workspace.env["SCORE_PLUGINS_PAIRS_PER_TASK"] = "8"
    data = workspace.json("render", "--repo", str(example_repo), "--all", "--models", "logreg,knn-5",
                          "--out", str(workspace.path / "bundle"))
    manifest = json.loads((workspace.path / "bundle" / "manifest.json").read_text())
    envs = {t["index"]: {p["env_hash"] for p in t["pairs"]} for t in manifest["tasks"]}
    assert all(len(e) == 1 for e in envs.values()), envs  # one environment per task
    by_model = {p["model"]: p["env_hash"] for t in manifest["tasks"] for p in t["pairs"]}
    assert by_model["logreg"] != by_model["knn-5"] and data["array_tasks"] == 2  # 4 pairs each, one task each
    for task in manifest["tasks"]:
        model, bench = ((workspace.path / "bundle" / "locks" / f"{task['envs'][side]['env_key']}.txt").read_text()
                        for side in ("model", "benchmark"))
        assert "packaging==" in bench  # from the data plugin every benchmark here loads: the benchmark's side
        assert ("six==" in model) == (task["pairs"][0]["model"] == "knn-5")  # the model's own, on its side only
        assert "six==" not in bench
    # one benchmark environment serves both models
    assert len({t["envs"]["benchmark"]["env_key"] for t in manifest["tasks"]}) == 1


def named_tests_missing(text: str, root: Path) -> list[str]:
    """Each `tests/<file>.py::<test>` that `text` names and that is not a test function of that file (a parametrized
    id `name[...]` counts as its function), and each `tests/<file>.py` named that does not exist."""
    import ast
    import re

    defined: dict[str, set[str] | None] = {}
    missing = []
    for file, name in re.findall(r"tests/([\w/]+\.py)(?:::(\w+))?", text):
        if file not in defined:
            path = root / "tests" / file
            defined[file] = {n.name for n in ast.walk(ast.parse(path.read_text()))
                             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} if path.is_file() else None
        if defined[file] is None or (name and name not in defined[file]):
            missing.append(f"tests/{file}" + (f"::{name}" if name else ""))
    return sorted(set(missing))


def test_every_test_the_docs_name_exists():
    """Fast (issue 39): every test docs/claims.md, the README and docs/ name exists under that name (a renamed test
    left a row naming nothing), and every row of claims.md's table names at least one test."""
    root = Path(__file__).resolve().parents[1]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        assert named_tests_missing(doc.read_text(), root) == [], doc.name
    rows = [line for line in (root / "docs/claims.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| claim ")]
    assert rows and [row for row in rows if "`tests/" not in row] == []
