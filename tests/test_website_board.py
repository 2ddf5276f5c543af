"""The board brain-score.org would show, and ours: the rules of github brain-score/brain-score.web
(benchmarks/sql/mv.sql, benchmarks/views/index.py, leaderboard.py, models.py) with expected values computed by hand
from those lines, against `--rules lab`. Real git repositories, real bundles, result files as the worker writes
them, `ingest`, the leaderboard read back; the export brain-score.org loads; a tree imported from the website's
benchmark-type table."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path

from pipeline.leaderboard.rules import PRESETS, shown, website_text
from pipeline.leaderboard.standings import _pick
from tests.conftest import commit_all, git, write

WEBSITE, LAB = PRESETS["brain-score"], PRESETS["lab"]


def test_two_roundings_by_hand():
    """mv.sql 1076 stores ROUND(x, 3) (Postgres numeric: half away from zero, of the float's 15 digits); index.py
    240 ranks by that text quantized half-up to 0.01; leaderboard.py 419 shows the same. Ours rounds once."""
    assert website_text(0.224525) == ".225" and shown(0.224525, WEBSITE) == 0.23  # .225 -> 0.23
    assert shown(0.224525, LAB) == 0.22
    assert website_text(0.3245) == ".325" and shown(0.3245, WEBSITE) == 0.33 and shown(0.3245, LAB) == 0.32
    assert shown(0.2244, WEBSITE) == 0.22  # .224 -> 0.22: only a third decimal of 5 moves the second up
    assert website_text(1.27) == "1.3" and shown(1.27, WEBSITE) == 1.3 and shown(1.27, LAB) == 1.27  # 1072-1073
    assert website_text(0.0004) == ".000" and shown(0.0004, WEBSITE) == 0.0


def test_highest_raw_score_whatever_its_date():
    """mv.sql 336-341: per model and benchmark instance, a row with a raw score before one without, then the
    highest raw score; its ceiled score is the one shown. Ours: the newest."""
    from datetime import datetime

    older = ("m", "b", 0.70, 0.62, datetime(2026, 1, 1), 1)
    newer = ("m", "b", 0.90, 0.50, datetime(2026, 2, 1), 2)
    nothing = ("m", "b", None, None, datetime(2026, 3, 1), 3)
    assert _pick([older, newer, nothing], WEBSITE.leaf) == older
    assert _pick([older, newer], LAB.leaf) == newer


def test_the_shipped_hierarchy_holds_the_websites_curated_nodes():
    """Nodes brain-score.org keeps in its table that no plugin declares (default.toml says where each comes from):
    Ferguson2024's 14 leaves under Ferguson2024, not straight under behavior_vision (its plugin passes `behavior`);
    the Zerbe2026_fmri shared-pool variants under their dataset node; Scialom2024-top1 under engineering_vision."""
    from pipeline.leaderboard.hierarchy import hierarchy_for, load_hierarchies

    vision = hierarchy_for("brainscore_vision", load_hierarchies())
    ferguson = {f"Ferguson2024{d}-value_delta": "behavior" for d in (
        "circle_line", "color", "convergence", "eighth", "gray_easy", "gray_hard", "half", "juncture", "lle", "llh",
        "quarter", "round_f", "round_v", "tilted_line")}
    declared = {**ferguson, "Zerbe2026_fmri.V1-tau-ridgecv": "V1", "Zerbe2026_fmri.V1-cka": "Zerbe2026_fmri.V1",
                "Zerbe2026_fmri_persubject.V1-tau-ridgecv": "V1",
                "Scialom2024_rgbEngineeringAccuracy": "Scialom2024-top1",
                "Li2026.V1-rdm": "Li2026.V1", "d": "behavior"}
    tree = vision.tree(declared)
    assert tree.children()["Ferguson2024"] == sorted(ferguson) and tree.parents["Ferguson2024"] == "behavior_vision"
    behavior = tree.children()["behavior_vision"]  # one child for the 14, as on the website
    assert "Ferguson2024" in behavior and "d" in behavior and not set(ferguson) & set(behavior)
    zerbe = tree.parents
    assert zerbe["Zerbe2026_fmri.V1-tau-ridgecv"] == "Zerbe2026_fmri.V1" == zerbe["Zerbe2026_fmri.V1-cka"]
    assert zerbe["Zerbe2026_fmri.V1"] == "V1" and zerbe["Zerbe2026_fmri_persubject.V1-tau-ridgecv"] == "V1"
    assert tree.parents["Scialom2024-top1"] == "engineering_vision" and "Scialom2024_rgbEngineeringAccuracy" in \
        tree.engineering  # its raw score counts, as every engineering leaf's (mv.sql 406)
    assert tree.parents["Li2026.V1"] == "V1" and not tree.unattached
    assert vision.rules().preset == "brain-score"


ROOT = "brainscore_vision"
BENCH = '''
from brainscore_vision import benchmark_registry
from brainscore_vision.benchmarks import BenchmarkBase


class Bench(BenchmarkBase):
    def __init__(self):
        super().__init__(identifier={runtime!r}, version=1, parent={parent!r})  # {note}


benchmark_registry[{name!r}] = lambda: Bench()
'''
# name -> (the identifier it runs as, its parent); c runs under the name brain-score.org keys it by
PLUGINS = {"a": ("a", "V1"), "b": ("b", "V1"), "c": ("dicarlo.c", "IT"), "d": ("d", "behavior"),
           "f": ("f", "engineering"), "h": ("h", "IT")}


def make_repo(path: Path, root: str, plugins: dict, models: tuple[str, ...]) -> Path:
    git(path.parent, "init", "--quiet", "-b", "main", str(path))
    write(path, f"{root}/__init__.py", "benchmark_registry = {}\nmodel_registry = {}\n")
    write(path, f"{root}/benchmarks/__init__.py", "from brainscore_core.benchmarks import BenchmarkBase\n")
    for model in models:
        write(path, f"{root}/models/{model}/__init__.py",
              f"from {root} import model_registry\nmodel_registry[{model!r}] = lambda: None\n")
    for name, (runtime, parent) in plugins.items():
        write(path, f"{root}/benchmarks/{name}/__init__.py", textwrap.dedent(BENCH).replace(
            "brainscore_vision", root).format(name=name, runtime=runtime, parent=parent, note="first"))
    commit_all(path, "plugins")
    return path


def ingest(workspace, repo: Path, bundle: Path, scores: dict, hour: int, *narrow: str) -> None:
    """Render the pairs, write each one's result as the worker would (`scores`: model -> benchmark -> (ceiled,
    raw)), ingest them. Results of a later `hour` are newer."""
    workspace.json("render", "--repo", str(repo), "--all", "--out", str(bundle), *narrow)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for minute, pair in enumerate(p for t in manifest["tasks"] for p in t["pairs"]):
        value = scores.get(pair["model"], {}).get(pair["benchmark"])
        if value is None:
            continue
        (bundle / "spool" / f"{pair['key']}.json").write_text(json.dumps({
            "pair_key": pair["key"], "status": "ok", "state": "COMPLETED", "stage": None, "reason": None,
            "started_at": f"2026-01-01T{hour:02d}:{minute:02d}:00+00:00",
            "ended_at": f"2026-01-01T{hour:02d}:{minute:02d}:30+00:00", "attempt": 1, "job_id": "1", "node": "n",
            "score_ceiled": value[0], "score_raw": value[1], "ceiling": None}))
    workspace.json("ingest", str(bundle))


def board(workspace, *args: str) -> dict:
    return {r["model"]: r for r in workspace.json("leaderboard", "--view", "models", *args)}


def test_board_follows_brain_score_org(workspace, tmp_path):
    # x is first scored in the language domain: its model row is language's (brainscore_core stores the domain
    # of the submission that made it, database.py 86-93)
    language = make_repo(tmp_path / "language", "brainscore_language", {"l": ("l", "engineering")}, ("x",))
    ingest(workspace, language, tmp_path / "lb", {"x": {"l": (0.5, 0.5)}}, 0)
    vision = make_repo(tmp_path / "vision", ROOT, PLUGINS, ("m1", "m2", "m3", "x"))
    ingest(workspace, vision, tmp_path / "b1", {
        "m1": {"a": (0.62, 0.62), "b": (0.38, 0.38), "c": (0.40, 0.40), "d": (0.199, 0.199), "f": (0.1, 0.7),
               "h": (0.9, 0.9)},
        "m2": {"a": (0.3, 0.3), "b": (0.3, 0.3), "c": (0.3, 0.3), "d": (0.3, 0.3)},
        "m3": {"f": (0.2, 0.8)},  # engineering only
        "x": {"a": (0.9, 0.9), "b": (0.9, 0.9), "c": (0.9, 0.9), "d": (0.9, 0.9)}}, 1)
    # a's code changes, not its version=: m1 is scored again, lower, later; both scores are of version 1
    write(vision, f"{ROOT}/benchmarks/a/__init__.py", textwrap.dedent(BENCH).format(
        name="a", runtime="a", parent="V1", note="second"))
    commit_all(vision, "a: code change, same version")
    ingest(workspace, vision, tmp_path / "b2", {"m1": {"a": (0.5, 0.5)}}, 2, "--models", "m1", "--benchmarks", "a")
    # nothing is shown until an admin shows it (models.py 112: a new type is hidden; mv.sql 483: it counts in no
    # average), so no model has an average and none is listed (index.py 227-231)
    assert board(workspace) == {}
    workspace.json("benchmarks", "show", "a", "b", "dicarlo.c", "d", "f")  # c by the name it runs as
    workspace.json("models", "private", "m2")
    bad = workspace.cli("models", "private", "nobody")
    assert bad.returncode == 2 and "no model 'nobody'" in bad.stderr and "Traceback" not in bad.stderr

    website = board(workspace)
    # m1: a = 0.62, the highest raw score, not the newest 0.5 (mv.sql 336-341); V1 (0.62 + 0.38) / 2 = 0.50;
    # IT = c = 0.40, h hidden; neural (0.50 + 0.40) / 2 = 0.45; behavior 0.199; average (0.45 + 0.199) / 2 =
    # 0.3245, stored ".325" (mv.sql 1076), shown and ranked 0.33 (index.py 240); engineering f's raw 0.7 (406)
    m1 = website["m1"]["aggregates"]
    assert m1["a"] == 0.62 and m1["V1"] == 0.5 and m1["IT"] == 0.4 and m1["neural_vision"] == 0.45
    assert m1["average_vision"] == 0.3245 and website["m1"]["average"] == 0.33 and m1["engineering_vision"] == 0.7
    assert "dicarlo.c" in m1 and "c" not in m1  # keyed by the identifier it runs as (database.py 358)
    assert "h" in m1 and "h" not in website["m1"]["coverage"] and m1["h"] == 0.9  # shown to the admin, marked:
    assert website["m1"]["coverage"]["total"] == 5  # ... and not counted (a, b, dicarlo.c, d, f)
    # m2 is private: an admin's board lists it, marked, ranked among all listed (index.py 85-87, 107-109)
    assert website["m2"]["public"] is False and website["m2"]["average"] == 0.3
    assert (website["m1"]["rank"], website["m2"]["rank"]) == (1, 2)
    # m3 has no average (engineering only): not listed (index.py 227-231); x is language's model: not on the
    # vision board (mv.sql 1052, index.py 60)
    assert set(website) == {"m1", "m2"}
    public = board(workspace, "--audience", "public")  # index.py 72-75, 82-84: visible types, public models
    assert set(public) == {"m1"} and public["m1"]["rank"] == 1 and "h" not in public["m1"]["aggregates"]

    # our rules for a lab: the newest score (a = 0.5), a new type counts (h), every model with a result is
    # listed, by registry names. m1: V1 (0.5 + 0.38) / 2 = 0.44; IT (0.40 + 0.9) / 2 = 0.65; neural 0.545;
    # average (0.545 + 0.199) / 2 = 0.372 -> 0.37. m2: IT (0.3 + 0) / 2 = 0.15 (h never scored counts 0);
    # neural 0.225; average (0.225 + 0.3) / 2 = 0.2625 -> 0.26. x: IT 0.45, neural 0.675, average 0.7875 -> 0.79.
    lab = board(workspace, "--rules", "lab")
    assert lab["m1"]["aggregates"]["a"] == 0.5 and lab["m1"]["average"] == 0.37 and "c" in lab["m1"]["aggregates"]
    assert (lab["m2"]["average"], lab["x"]["average"]) == (0.26, 0.79)
    assert [(m, lab[m]["rank"]) for m in ("x", "m1", "m2", "m3")] == [("x", 1), ("m1", 2), ("m2", 3), ("m3", None)]

    # shown, h counts: IT (0.40 + 0.9) / 2 = 0.65, neural (0.50 + 0.65) / 2 = 0.575, average (0.575 + 0.199) / 2 =
    # 0.387 -> 0.39
    workspace.json("benchmarks", "show", "h")
    assert board(workspace)["m1"]["average"] == 0.39

    # the page marks the private model and a hidden benchmark
    workspace.json("benchmarks", "hide", "b")
    page = workspace.cli("leaderboard", "--format", "html", check=True).stdout
    assert 'class="private"' in page and '<span class="badge">private</span>' in page
    assert 'data-node="b"' in page and "hidden: counts in no average" in page and "(brain-score rules)" in page
    assert ">c<span" not in page and "c<span class=\"arrow\"" in page  # the website's short name of dicarlo.c

    # the export brain-score.org loads: its score rows, both identifiers, every score in force (both of m1's a)
    out = tmp_path / "scores.json"
    data = workspace.json("export", "brainscore", "--out", str(out))
    rows = [r for r in data["rows"] if r["model"] == "m1" and r["registry_identifier"] in ("a", "c")]
    assert sorted((r["benchmark"], r["version"], r["score_raw"]) for r in rows) == [
        ("a", 1, 0.5), ("a", 1, 0.62), ("dicarlo.c", 1, 0.4)]
    fixture = json.loads(out.read_text())
    assert {o["model"] for o in fixture} == {"benchmarks.score"}
    c_row = next(o["fields"] for o in fixture if o["fields"]["benchmark"] == ["dicarlo.c", 1]
                 and o["fields"]["model"][0] == "m1")
    assert c_row["model"] == ["m1", "author@example.org"] and c_row["score_raw"] == 0.4
    assert set(c_row) == {"benchmark", "model", "score_raw", "score_ceiled", "error", "comment", "start_timestamp",
                          "end_timestamp"}
    full = tmp_path / "all.json"
    workspace.json("export", "brainscore", "--out", str(full), "--rows", "all")
    types = {o["pk"]: o["fields"] for o in json.loads(full.read_text()) if o["model"] == "benchmarks.benchmarktype"}
    assert types["dicarlo.c"]["parent"] == "IT" and types["b"]["visible"] is False and types["IT"]["visible"]

    # a shown benchmark no model has a score for (k: m1's only job was lost to a node failure) counts 0 for every
    # model (mv.sql 366, 496, 508): m1's behavior (0.199 + 0) / 2 = 0.0995; ours leaves it out until scored
    write(vision, f"{ROOT}/benchmarks/k/__init__.py", textwrap.dedent(BENCH).format(
        name="k", runtime="k", parent="behavior", note="new"))
    commit_all(vision, "k")
    bundle = tmp_path / "b3"
    workspace.json("render", "--repo", str(vision), "--all", "--models", "m1", "--benchmarks", "k", "--out",
                   str(bundle))
    [pair] = [p for t in json.loads((bundle / "manifest.json").read_text())["tasks"] for p in t["pairs"]]
    (bundle / "spool" / f"{pair['key']}.json").write_text(json.dumps({
        "pair_key": pair["key"], "status": "error", "state": "NODE_FAIL", "stage": None, "reason": "node died",
        "started_at": "2026-01-01T03:00:00+00:00", "ended_at": "2026-01-01T03:01:00+00:00", "attempt": 1}))
    workspace.json("ingest", str(bundle))
    workspace.json("benchmarks", "show", "k", "b")
    after = board(workspace)
    assert after["m1"]["aggregates"]["behavior_vision"] == 0.0995 and after["m1"]["aggregates"]["k"] is None
    assert board(workspace, "--rules", "lab")["m1"]["aggregates"]["behavior_vision"] == 0.199


def test_a_tree_imported_from_the_websites_table(workspace, tmp_path):
    """`hierarchy import`: the website's fixture shape (benchmarks/fixtures/fixture-benchmarktypes.json) and psql's
    CSV become a hierarchy file; used as the `hierarchy` setting, a leaf hangs where the website has it, whatever
    its plugin passes, and a hidden row is hidden."""
    dump = tmp_path / "types.json"
    dump.write_text(json.dumps([
        {"model": "benchmarks.BenchmarkType", "fields": {"identifier": i, "domain": "vision", "parent": p,
                                                         "visible": v, "order": o}}
        for i, p, v, o in [("average_vision", None, "True", 0), ("engineering_vision", None, "True", 2),
                           ("neural_vision", "average_vision", "True", 0), ("IT", "neural_vision", "True", 3),
                           ("Ferguson2024", "average_vision", "True", 1),
                           ("Ferguson2024color-value_delta", "Ferguson2024", "True", 999),
                           ("MajajHong2015.IT-pls", "IT", "False", 999)]]))
    out = tmp_path / "website.toml"
    data = workspace.json("hierarchy", "import", str(dump), "--out", str(out))
    assert data["domains"]["vision"] == {"types": 7, "nodes": 5, "leaves": 2, "hidden": 1}
    text = out.read_text()
    assert 'root = "average_vision"' in text and 'apart = ["engineering_vision"]' in text
    assert '"Ferguson2024color-value_delta" = "Ferguson2024"' in text and '"MajajHong2015.IT-pls" = false' in text
    from pipeline.leaderboard.hierarchy import hierarchy_for, load_hierarchies

    h = hierarchy_for("brainscore_vision", load_hierarchies(out))
    tree = h.tree({"Ferguson2024color-value_delta": "behavior", "MajajHong2015.IT-pls": "IT"})
    assert tree.parents["Ferguson2024color-value_delta"] == "Ferguson2024"
    assert tree.parents["Ferguson2024"] == "average_vision"  # the website's, over the shipped behavior_vision
    assert h.shown("MajajHong2015.IT-pls") is False and h.rules().preset == "brain-score"
    csv = tmp_path / "types.csv"
    csv.write_text("identifier,domain,reference_id,order,parent_id,visible,owner_id\n"
                   "average_language,language,,0,,t,2\nl-x,language,,999,average_language,f,2\n")
    data = workspace.json("hierarchy", "import", str(csv), "--out", str(out))
    assert data["domains"]["language"] == {"types": 2, "nodes": 1, "leaves": 1, "hidden": 1}
    broken = tmp_path / "broken.csv"
    broken.write_text("identifier,domain,parent_id,visible\nleaf,vision,nowhere,t\n")
    bad = workspace.cli("hierarchy", "import", str(broken), "--out", str(out))
    assert bad.returncode == 2 and "names parent 'nowhere', which is not a vision row" in bad.stderr
    assert "Traceback" not in bad.stderr and "language" in out.read_text()  # the last good file is left as it was
    assert Decimal(website_text(0.5)) == Decimal("0.5")


def test_types_recorded_before_the_upgrade_stay_shown(tmp_path):
    """Migration 0011: a board that counted every type before keeps them; a type recorded afterwards starts as the
    board's rules say (hidden, under brain-score.org's)."""
    from sqlalchemy import create_engine, text

    from db import migrate

    engine = create_engine(f"sqlite:///{tmp_path}/t.db")
    try:
        migrate.upgrade(engine, "0006")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO benchmark_types (identifier, plugin, domain) VALUES ('old', 'p', 'd')"))
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO benchmark_types (identifier, plugin, domain) VALUES ('new', 'p', 'd')"))
            rows = dict(conn.execute(text("SELECT identifier, visible FROM benchmark_types")).all())
    finally:
        engine.dispose()
    assert rows == {"old": 1, "new": None}
