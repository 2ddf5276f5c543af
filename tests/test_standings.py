"""Brain-Score's aggregates, ranks and coverage through `leaderboard --view models`: a real git repository
whose benchmarks declare their parents (`parent=` in the constructor, read statically), a real bundle
rendered by `render`, result files as the worker writes them, `ingest`, and the leaderboard read back from
SQLite and from Postgres. The scores are the issue's tree example (Brain-Score's own numbers)."""

from __future__ import annotations

import email
import json
import re
import shutil
import subprocess
import textwrap
from email import policy
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


def ingest_scores(workspace, repo: Path, bundle: Path, scores: dict, *extra: str, narrow: tuple = ()) -> None:
    workspace.json("render", "--repo", str(repo), "--all", "--out", str(bundle), *extra, *narrow)
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
    # brain-score.org's rules (the default for vision): a new benchmark type is hidden until an admin shows it
    assert workspace.json("leaderboard", "--view", "models", *extra) == []
    workspace.json("benchmarks", "show", "--all", *extra)
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
    assert "unattached: g: parent=compute_parent(): compute_parent is not defined by name in __init__.py" in table
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


def test_backfill_takes_exactly_what_the_leaderboard_misses(workspace, tmp_path):
    """Never scored, lost to the infrastructure, or scored on an older version: taken. Scored on the latest
    version, or failed in the plugin (X): not taken. `render --backfill` and `run --backfill` take the same."""
    repo = make_repo(tmp_path / "vision")
    scores = {m: dict(v) for m, v in SCORES.items()}
    ingest_scores(workspace, repo, tmp_path / "bundle", scores)
    workspace.json("benchmarks", "show", "--all")  # brain-score.org's rules: shown by an admin
    # m2 x c: its job was lost to a node failure
    bundle = tmp_path / "bundle2"
    workspace.json("render", "--repo", str(repo), "--all", "--models", "m2", "--benchmarks", "c", "--out",
                   str(bundle))
    [pair] = [p for t in json.loads((bundle / "manifest.json").read_text())["tasks"] for p in t["pairs"]]
    (bundle / "spool" / f"{pair['key']}.json").write_text(json.dumps({
        "pair_key": pair["key"], "status": "error", "state": "NODE_FAIL", "stage": None, "reason": "node died",
        "started_at": "2026-01-01T01:00:00+00:00", "ended_at": "2026-01-01T01:01:00+00:00", "attempt": 1}))
    workspace.json("ingest", str(bundle))
    # benchmark a moves to version 3: m1's score of version 2 no longer counts
    write(repo, f"{ROOT}/benchmarks/a/__init__.py", textwrap.dedent(BENCHMARK).format(name="a", version=3,
                                                                                     parent="'V1'"))
    commit_all(repo, "a: version 3")
    plan = workspace.json("plan", "--repo", str(repo), "--backfill", "--pairs")
    taken = {(p["model"], p["benchmark"]): p["reasons"][0] for p in plan["to_run"]}
    expected = {("m1", "a"), ("m1", "b"),
                ("m2", "a"), ("m2", "c"), ("m2", "d"), ("m2", "e"), ("m2", "f"), ("m2", "g"),
                ("m3", "a"), ("m3", "b"), ("m3", "f"), ("m3", "g")}
    assert set(taken) == expected, sorted(set(taken) ^ expected)
    assert taken[("m1", "a")] == "scored on version 2 only, the latest is 3"
    assert taken[("m2", "c")].startswith("its last job ended NODE_FAIL") and taken[("m1", "b")] == "never scored"
    # run and render take exactly those pairs
    out = tmp_path / "backfill-bundle"
    workspace.json("render", "--repo", str(repo), "--backfill", "--out", str(out))
    rendered = {(p["model"], p["benchmark"]) for t in json.loads((out / "manifest.json").read_text())["tasks"]
                for p in t["pairs"]}
    assert rendered == expected
    dry = workspace.json("run", "--repo", str(repo), "--backfill", "--dry-run")
    assert dry["planned"] == len(expected)
    narrowed = workspace.json("plan", "--repo", str(repo), "--backfill", "--models", "m1", "--pairs")
    assert {(p["model"], p["benchmark"]) for p in narrowed["to_run"]} == {("m1", "a"), ("m1", "b")}
    bad = workspace.cli("plan", "--repo", str(repo), "--backfill", "--base", "HEAD~1")
    assert bad.returncode == 2 and "--backfill takes every plugin" in bad.stderr and "Traceback" not in bad.stderr
    # once a score of version 3 is recorded, only version 3 counts: m1's score of version 2 is gone from the board
    before = {r["model"]: r for r in workspace.json("leaderboard", "--view", "models")}
    assert before["m1"]["aggregates"]["a"] == 0.6
    ingest_scores(workspace, repo, tmp_path / "v3", {"m2": {"a": (0.8, 0.8)}}, narrow=("--models", "m2",
                                                                                     "--benchmarks", "a"))
    board = {r["model"]: r for r in workspace.json("leaderboard", "--view", "models")}
    assert board["m1"]["aggregates"]["a"] is None and board["m1"]["aggregates"]["V1"] is None
    assert board["m2"]["aggregates"]["a"] == 0.8
    # each submitter's email names their model's aggregate and rank after the run, and what is still missing
    emails = mails_after_run(workspace, tmp_path)
    text = emails["author@example.org"]
    # now: m1 0.225 (its a is of version 2), m3 0.225, m2 0.2125: shown and ranked half-up, ties share rank 1
    assert "m1: average_vision 0.23, rank 1 of 3" in text and "m3: average_vision 0.23, rank 1 of 3" in text
    assert "m2: average_vision 0.21, rank 3 of 3" in text
    assert "4 of 7 benchmarks scored, 1 failed (e)" in text and "still missing (2): a, b" in text


def mails_after_run(workspace, tmp_path: Path) -> dict[str, str]:
    """The messages a run of m1, m2 and m3 queues (plain text, by recipient), with the database as it is."""
    from db.models import Job, Run
    from pipeline.database import open_database
    from pipeline.stages.notifications import queue_run_messages
    from pipeline.leaderboard.standings import standing_of, standings

    db = open_database("local", workspace.state)
    try:
        board = standing_of(standings(db))
    finally:
        db.close()
    run = Run(id="run-x", head_commit="c" * 40, domain=ROOT, executor="local")
    jobs = [Job(model=m, benchmark="a", state="COMPLETED", score=0.5, submitters=["author@example.org"])
            for m in ("m1", "m2", "m3")]
    paths, problems = queue_run_messages(run, jobs, profile="local", outbox_dir=tmp_path / "outbox",
                                         sender="sp@example.org", standings=board)
    assert not problems, problems
    found = {}
    for path in paths:
        msg = email.message_from_bytes(Path(path).read_bytes(), policy=policy.default)
        found[str(msg["To"])] = msg.get_body(("plain",)).get_content()
    return found


def test_standings_in_an_email_are_literal_text():
    """A model id is data: the text part shows it as it is, the HTML part escapes it."""
    from notify.compose import PairOutcome, RunReport, compose

    name = "<b>x</b>{{ 7*7 }}"
    standing = {"model": name, "node": "average_vision", "average": 0.195, "rank": 1, "ranked": 2,
                "coverage": {"scored": 1, "failed": 0, "never_scored": 1, "total": 2}, "never_scored": ["<i>b"],
                "failed": []}
    report = RunReport("run-1", "a" * 40, "vision", "test", [PairOutcome(name, "a", "COMPLETED", 0.5)],
                       standings=[standing])
    msg = compose(report, "ada@example.org", "sp@example.org")
    text, html = msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()
    assert f"{name}: average_vision 0.20, rank 1 of 2" in text and "still missing (1): <i>b" in text
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;{{ 7*7 }}" in html and "&lt;i&gt;b" in html


REGIONS = '''
from brainscore_vision import benchmark_registry


def _Region(region, access):
    return NeuralBenchmark(identifier=f'Data.{region}-pls', version=3, parent=region, bibtex=None)


def DataV4():
    return _Region(region='V4', access='private')


def DataIT():
    return _Region('IT', 'private')


def Loop():
    for region in load_regions():
        yield NeuralBenchmark(identifier=region, version=1, parent=f'Loop.{region}')


benchmark_registry['Data.V4-pls'] = DataV4
benchmark_registry['Data.IT-pls'] = DataIT
'''


GEIRHOS_AND_ALLEN = {
    "geirhos/__init__.py": """
from brainscore_vision import benchmark_registry
from . import benchmark

benchmark_registry['Gcolour-top1'] = getattr(benchmark, "GcolourAccuracy")
benchmark_registry['Gcolour-error_consistency'] = getattr(benchmark, "GcolourErrorConsistency")
""",
    "geirhos/benchmark.py": """
class _ErrorConsistency(BenchmarkBase):
    def __init__(self, dataset):
        super(_ErrorConsistency, self).__init__(identifier=f'G{dataset}-error_consistency', version=1,
                                                parent='G')


class _Accuracy(BenchmarkBase):
    def __init__(self, dataset):
        super(_Accuracy, self).__init__(identifier=f'G{dataset}-top1', version=1, parent='G-top1')
""",
    "allen/__init__.py": """
from brainscore_vision import benchmark_registry
from .benchmark import Allen

benchmark_registry['A.V4-ridge'] = lambda: Allen('V4')
benchmark_registry['A4.IT-ridge'] = lambda: Allen('IT', dataset_prefix='A4')
""",
    "gym/__init__.py": """
from brainscore_vision import benchmark_registry
from .benchmark import Single

benchmark_registry['gym-a'] = lambda: Single(identifier='a')
""",
    "gym/benchmark.py": """
class Collection(BenchmarkBase):
    def __init__(self, suites):
        super(Collection, self).__init__(identifier='Gym', version=1, parent='engineering')
        self.subs = [Single(identifier=name) for name in suites]


class Single(BenchmarkBase):
    def __init__(self, identifier):
        super(Single, self).__init__(identifier=f'gym-{identifier}', version=1, parent='Gym')
""",
    "allen/benchmark.py": """
def Allen(region, dataset_prefix='A'):
    return TrainTestNeuralBenchmark(identifier=f'{dataset_prefix}.{region}-ridge', version=1, parent=region)
""",
}


def test_tree_command_reads_parents_statically(tmp_path, workspace):
    """`tree`: each benchmark's parent= and version= read with ast (no plugin runs), several values told apart by
    the identifier, a computed one listed as unreadable with its reason, and the leaves per parent."""
    repo = make_repo(tmp_path / "vision")
    write(repo, f"{ROOT}/benchmarks/regions/__init__.py", REGIONS)
    write(repo, f"{ROOT}/benchmarks/loop/__init__.py", REGIONS.replace("'Data.", "'Loopy.").replace(
        "return _Region(", "return Loop(") + "benchmark_registry['Loopy.x'] = Loop\n")
    write(repo, f"{ROOT}/benchmarks/none/__init__.py", BENCHMARK.format(name="n", version=1, parent=None))
    for path, text in GEIRHOS_AND_ALLEN.items():
        write(repo, f"{ROOT}/benchmarks/{path}", text)
    commit_all(repo, "more benchmarks")
    data = workspace.json("tree", "--repo", str(repo))
    rows = {r["benchmark"]: r for r in data["benchmarks"]}
    assert (rows["Data.V4-pls"]["parent"], rows["Data.IT-pls"]["parent"]) == ("V4", "IT")
    assert rows["Data.V4-pls"]["version"] == 3 and rows["a"]["version"] == 2
    assert rows["d"]["parent"] == "behavior" and rows["d"]["attached_to"] == "behavior_vision"  # in its domain
    assert rows["g"]["parent"] is None and rows["g"]["unreadable"] == (
        "parent=compute_parent(): compute_parent is not defined by name in __init__.py")
    assert rows["Loopy.x"]["parent"] is None and rows["Loopy.x"]["unreadable"] == "Loop() yields its benchmarks"
    # an unreadable parent is a warning of `detect` too, once per plugin; a plugin that passes none is quiet
    change = workspace.cli("detect", "--repo", str(repo), "--base", "HEAD~1", "--format", "json", check=True)
    warned = [i for i in json.loads(change.stdout)["issues"] if "leaderboard parent" in i["message"]]
    assert sorted(i["file"] for i in warned) == [f"{ROOT}/benchmarks/{p}/__init__.py" for p in ("g", "loop")]
    assert rows["Loopy.IT-pls"]["parent"] == "IT"  # parent=region, and the identifier f'Loopy.{region}-pls'
    assert rows["n"]["parent"] is None and rows["n"]["unreadable"] is None  # parent=None: declared none
    # two constructors, each with its own identifier pattern and parent (geirhos2021's shape)
    assert (rows["Gcolour-top1"]["parent"], rows["Gcolour-error_consistency"]["parent"]) == ("G-top1", "G")
    # parent=region, called from another file: the identifier says which region (allen2022_fmri's shape)
    assert (rows["A.V4-ridge"]["parent"], rows["A4.IT-ridge"]["parent"]) == ("V4", "IT")
    # an __init__'s identifier parameter comes from its class's callers, not from super().__init__ (syntaxgym)
    assert rows["gym-a"]["parent"] == "Gym"
    assert data["leaves_per_parent"]["V1"] == 2 and data["leaves_per_parent"]["IT"] == 4
    assert data["leaves_per_parent"]["(unattached)"] == 3  # g, n, Loopy.x
    assert data["leaves_per_parent"]["G"] == data["leaves_per_parent"]["G-top1"] == 1  # nodes no level places:
    assert data["unattached_nodes"] == {"G": "'G' is not a level of the vision hierarchy",
                                        "G-top1": "'G-top1' is not a level of the vision hierarchy",
                                        "Gym": "'Gym' is not a level of the vision hierarchy"}
    text = workspace.cli("tree", "--repo", str(repo), check=True).stdout
    assert "g: unreadable: parent=compute_parent(): compute_parent is not" in text and "V1: 2 benchmark(s)" in text
    # the hierarchy setting: a TOML file merged over the shipped levels places what they do not
    override = tmp_path / "levels.toml"
    override.write_text('[vision.parents]\nG = "behavior_vision"\n"G-top1" = "engineering_vision"\n')
    placed = workspace.json("--set", f"hierarchy={override}", "tree", "--repo", str(repo))
    assert set(placed["unattached_nodes"]) == {"Gym"}
    assert {r["benchmark"]: r["attached_to"] for r in placed["benchmarks"]}["Gcolour-top1"] == "G-top1"
    override.write_text("[vision]\nroot = 3\n")
    bad = workspace.cli("--set", f"hierarchy={override}", "tree", "--repo", str(repo))
    assert bad.returncode == 2 and "root (text)" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


FLAT = {"n": "'neural'", "h": "'behavior_vision'", "e": "'engineering_vision'"}
FLAT_SCORES = {"p": {"n": (0.33, 0.33), "h": (0.53, 0.53), "e": (0.1, 0.63)},
               "q": {"n": (0.28, 0.28), "h": (0.11, 0.11)},
               "r": {"n": (0.2, 0.2), "h": (0.2, 0.2)}}


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_models_view_averages_and_ranks_like_brain_score(workspace, tmp_path, database, request):
    """The issue's other examples through the command: neural 0.33 and behavior 0.53 give 0.43 (engineering 0.63
    raw, not counted); 0.28 and 0.11 give 0.195, shown and ranked as 0.20, level with a model at 0.20."""
    extra: tuple[str, ...] = ()
    if database == "postgres":
        workspace.env["SCORE_PLUGINS_DB_TEST"] = request.getfixturevalue("pg_url")
        extra = ("--profile", "test")
    repo = tmp_path / "flat"
    git(tmp_path, "init", "--quiet", "-b", "main", str(repo))
    write(repo, f"{ROOT}/__init__.py", "benchmark_registry = {}\nmodel_registry = {}\n")
    for model in FLAT_SCORES:
        write(repo, f"{ROOT}/models/{model}/__init__.py",
              f"from brainscore_vision import model_registry\nmodel_registry[{model!r}] = lambda: None\n")
    for name, parent in FLAT.items():
        write(repo, f"{ROOT}/benchmarks/{name}/__init__.py",
              textwrap.dedent(BENCHMARK).format(name=name, version=1, parent=parent))
    commit_all(repo, "flat benchmarks")
    ingest_scores(workspace, repo, tmp_path / "bundle", FLAT_SCORES, *extra)
    workspace.json("benchmarks", "show", "n", "h", "e", *extra)
    board = {r["model"]: r for r in workspace.json("leaderboard", "--view", "models", *extra)}
    p, q = board["p"]["aggregates"], board["q"]["aggregates"]
    assert (p["neural_vision"], p["behavior_vision"], p["average_vision"]) == (0.33, 0.53, 0.43)
    assert p["engineering_vision"] == 0.63 and board["p"]["average"] == 0.43
    assert q["average_vision"] == 0.195 and board["q"]["average"] == 0.2 == board["r"]["average"]
    assert [board[m]["rank"] for m in "pqr"] == [1, 2, 2]
