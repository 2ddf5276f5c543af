"""Brain-Score's aggregates, ranks and coverage through `leaderboard --view models`: a real git repository
whose benchmarks declare their parents (`parent=` in the constructor, read statically), a real bundle
rendered by `render`, result files as the worker writes them, `ingest`, and the leaderboard read back from
SQLite and from Postgres. The scores are the issue's tree example (Brain-Score's own numbers)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import commit_all, git, write

ROOT = "brainscore_vision"

BENCHMARK = '''
from brainscore_vision import benchmark_registry


class _Base:
    def __init__(self, identifier, version, parent=None, ceiling_func=None):
        self.identifier, self.version, self.parent = identifier, version, parent


class Bench(_Base):
    def __init__(self):
        super().__init__(identifier={name!r}, version={version}, parent={parent})


benchmark_registry[{name!r}] = lambda: Bench()
'''

PARENTS = {"a": "'V1'", "b": "'V1'", "c": "'IT'", "d": "'behavior'", "e": "'behavior_vision'", "f": "'engineering'",
           "g": "compute_parent()"}  # g: cannot be read statically


def make_repo(path: Path) -> Path:
    git(path.parent, "init", "--quiet", "-b", "main", str(path))
    write(path, f"{ROOT}/__init__.py", "benchmark_registry = {}\nmodel_registry = {}\n")
    for model in ("m1", "m2", "m3"):
        write(path, f"{ROOT}/models/{model}/__init__.py",
              f"from brainscore_vision import model_registry\nmodel_registry[{model!r}] = lambda: None\n")
    for name, parent in PARENTS.items():
        write(path, f"{ROOT}/benchmarks/{name}/__init__.py",
              textwrap.dedent(BENCHMARK).format(name=name, version=2 if name == "a" else 1, parent=parent))
    commit_all(path, "models and benchmarks")
    return path


# model -> benchmark -> (ceiled, raw) or "X" (the pair failed in the plugin)
SCORES = {
    "m1": {"a": (0.6, 0.6), "c": (0.4, 0.4), "d": (0.5, 0.5), "e": "X", "f": (0.3, 0.7), "g": (0.9, 0.9)},
    "m2": {"b": (0.9, 0.9)},
    "m3": {"c": (0.4, 0.4), "d": (0.5, 0.5), "e": "X"},
}


def ingest_scores(workspace, repo: Path, bundle: Path, scores: dict, *extra: str) -> None:
    workspace.json("render", "--repo", str(repo), "--all", "--out", str(bundle), *extra)
    manifest = json.loads((bundle / "manifest.json").read_text())
    minute = 0
    for pair in (p for t in manifest["tasks"] for p in t["pairs"]):
        value = scores.get(pair["model"], {}).get(pair["benchmark"])
        if value is None:
            continue
        minute += 1
        result = {"pair_key": pair["key"], "status": "ok", "state": "COMPLETED", "stage": None, "reason": None,
                  "started_at": f"2026-01-01T00:{minute:02d}:00+00:00",
                  "ended_at": f"2026-01-01T00:{minute:02d}:30+00:00", "attempt": 1, "job_id": "1", "node": "n"}
        if value == "X":
            result.update(status="error", state="FAILED", stage="score", reason="the benchmark raised")
        else:
            result.update(score_ceiled=value[0], score_raw=value[1], ceiling=None)
        (bundle / "spool" / f"{pair['key']}.json").write_text(json.dumps(result))
    workspace.json("ingest", str(bundle), *extra)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_models_view_gives_brain_scores_numbers(workspace, tmp_path, database, request):
    extra: tuple[str, ...] = ()
    if database == "postgres":
        workspace.env["SCORE_PLUGINS_DB_TEST"] = request.getfixturevalue("pg_url")
        extra = ("--profile", "test")
    repo = make_repo(tmp_path / "vision")
    ingest_scores(workspace, repo, tmp_path / "bundle", SCORES, *extra)
    board = {r["model"]: r for r in workspace.json("leaderboard", "--view", "models", *extra)}
    m1 = board["m1"]["aggregates"]
    assert (m1["a"], m1["b"], m1["e"]) == (0.6, None, "X")  # a number, never scored, failed
    assert (m1["V1"], m1["IT"], m1["neural_vision"], m1["behavior_vision"]) == (0.3, 0.4, 0.35, 0.25)
    assert m1["average_vision"] == 0.3 and m1["engineering_vision"] == 0.7  # raw, shown apart
    assert m1["g"] == 0.9 and "V2" not in m1  # unattached: shown, not averaged; an empty level is left out
    assert board["m1"]["coverage"] == {"scored": 5, "failed": 1, "never_scored": 1, "total": 7}
    m3 = board["m3"]["aggregates"]
    assert m3["V1"] is None and m3["neural_vision"] == 0.2  # a whole region never scored counts as 0
    m2 = board["m2"]["aggregates"]
    assert m2["average_vision"] == 0.1125 and board["m2"]["average"] == 0.11
    assert [(m, board[m]["rank"]) for m in ("m1", "m3", "m2")] == [("m1", 1), ("m3", 2), ("m2", 3)]
    # the parents were read from the plugins, the unreadable one says why
    table = workspace.cli("leaderboard", "--view", "models", *extra, check=True).stdout
    assert "unattached: g: parent=compute_parent() is computed" in table
    csv = workspace.cli("leaderboard", "--view", "models", "--format", "csv", *extra, check=True).stdout
    assert csv.splitlines()[0].startswith("model,domain,rank,average,coverage_scored")
    # the default view is unchanged: one row per score, with its provenance
    rows = workspace.json("leaderboard", *extra)
    assert len(rows) == 8 and {"model", "benchmark", "score", "commit", "lock_hash", "env_hash",
                               "job_id"} <= set(rows[0])
    if database == "sqlite":  # the page once (the numbers behind it are the same on both databases)
        page = tmp_path / "leaderboard.html"
        page.write_text(workspace.cli("leaderboard", "--format", "html", check=True).stdout)
        check_page_in_chromium(page, tmp_path)


def dump(page: Path, tmp_path: Path, script: str = "") -> str:
    """The page's DOM after its own scripts ran in headless Chromium, and then `script` (real clicks)."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by scripts/test (Debian package chromium)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
    return subprocess.run([chromium, *flags, "--dump-dom", clicked.as_uri()], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def cell(dom: str, model: str, node: str) -> tuple[str, str]:
    """(class, text) of a model's cell in a node's column."""
    row = re.search(rf'<tr data-model="{model}">(.*?)</tr>', dom, re.S).group(1)
    found = re.search(rf'<td class="([^"]*)" data-node="{re.escape(node)}"[^>]*>([^<]*)</td>', row)
    return found.group(1), found.group(2)


def check_page_in_chromium(page: Path, tmp_path: Path) -> None:
    dom = dump(page, tmp_path)
    order = re.findall(r'<tr data-model="([^"]+)"', dom)
    assert order == ["m1", "m3", "m2"]  # by rank
    # the tree: levels and leaves as columns under their parent; deeper levels start collapsed
    assert cell(dom, "m1", "average_vision") == ("score", "0.30")
    assert cell(dom, "m1", "neural_vision") == ("score", "0.35")
    assert cell(dom, "m1", "V1")[0] == "score hidden"
    # X and empty are told apart
    assert cell(dom, "m1", "e") == ("failed hidden", "X") and cell(dom, "m1", "b") == ("empty hidden", "")
    assert cell(dom, "m3", "V1") == ("empty hidden", "")
    # opening neural_vision shows its regions, not yet their benchmarks
    toggle = "document.querySelector('th[data-node=\"neural_vision\"] button.toggle').click();"
    opened = dump(page, tmp_path, toggle)
    assert cell(opened, "m1", "V1") == ("score", "0.30") and cell(opened, "m1", "a")[0] == "score hidden"
    closed = dump(page, tmp_path, toggle * 2)
    assert cell(closed, "m1", "V1")[0] == "score hidden"
    # sorting by the average follows the ranks; the arrow says which way
    head = "document.querySelector('table.board th[data-node=\"average_vision\"]').click();"
    by_average = dump(page, tmp_path, head)
    assert re.findall(r'<tr data-model="([^"]+)"', by_average) == ["m1", "m3", "m2"]
    assert 'aria-sort="descending"' in by_average
    again = dump(page, tmp_path, head * 2)
    assert re.findall(r'<tr data-model="([^"]+)"', again) == ["m2", "m3", "m1"] and 'aria-sort="ascending"' in again
    # X sorts after every number in both directions, an empty cell after X
    behavior = "document.querySelector('table.board th[data-node=\"e\"]').click();"
    for clicks in (1, 2):
        rows = re.findall(r'<tr data-model="([^"]+)"', dump(page, tmp_path, behavior * clicks))
        assert rows[-1] == "m2", rows  # m2 never scored e; m1 and m3 failed it
