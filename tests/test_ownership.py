"""Plugins have owners (issue 35, finding 6): a change to a plugin folder by someone who is not among its owners is
held, not scored, until an administrator approves it. Real git repositories with several authors; a pull request
from a fork merged by a bot; real runs, database and outbox."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import commit_all, git, write

KNN = "sklearn_scores/models/knn/__init__.py"
MALLORY = "Mallory <mallory@example.org>"


def emails(workspace) -> list:
    from email import message_from_bytes, policy

    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in (workspace.state / "outbox").rglob("*.eml")]


def held_emails(workspace) -> list:
    return [m for m in emails(workspace) if m["Subject"].startswith("[score-plugins] held for approval: a change to")]


def test_a_change_to_another_submitters_plugin_is_held_until_an_administrator_approves_it(workspace, example_repo):
    """knn-5 (models/knn, by admin@example.org) is scored; Mallory's commit changes models/knn: its pair is held,
    not scored (on the old code the new code replaced knn-5's score), with the reason in run JSON, plan and
    status; the owner, Mallory and the administrator are told once; `approve` records who and when, and
    `rerun --failed` then scores it. The owner's own change and a maintainer's are not held."""
    workspace.env["SCORE_PLUGINS_ADMIN_EMAIL"] = "ops@example.org"
    narrow = ("--models", "knn-5", "--benchmarks", "iris-accuracy")
    first = workspace.json("run", "--repo", str(example_repo), "--all", *narrow)
    assert first["states"] == {"COMPLETED": 1}
    board = {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")}
    path = example_repo / KNN
    path.write_text(path.read_text().replace("n_neighbors=5", "n_neighbors=1"))
    commit_all(example_repo, "a faster knn", author=MALLORY)

    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)
    [pair] = result["pairs"]
    assert pair["state"] == "HELD" and result["states"] == {"HELD": 1} and result["failed"] == 0, result
    assert "sklearn_scores/models/knn: commit" in pair["reason"] and "by mallory@example.org changes models/knn" \
        in pair["reason"] and "score-plugins approve 1" in pair["reason"], pair["reason"]
    assert {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")} == board
    status = workspace.json("status", result["run_id"])
    assert [(j["state"], j["reason"]) for j in status["jobs"]] == [("HELD", pair["reason"])]
    assert workspace.rows("SELECT plugin_type, plugin, author, owners, approved_at FROM plugin_holds") == [
        ("models", "knn", "mallory@example.org", '["admin@example.org"]', None)]
    told = held_emails(workspace)
    assert sorted(str(m["To"]) for m in told) == ["admin@example.org", "mallory@example.org", "ops@example.org"]
    assert all("score-plugins approve 1 --by NAME" in m.get_content() for m in told)
    reports = [m for m in emails(workspace) if m["Subject"].startswith(f"[score-plugins] run {result['run_id']}")]
    assert sorted(str(m["To"]) for m in reports) == ["admin@example.org", "bob@example.org"]  # the pair's owners
    assert all(m["Subject"].endswith("1 of 1 held for approval") for m in reports)  # held, not failed

    # the same change again: still held, recorded once, nobody told twice; plan shows it without recording
    again = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)
    assert again["states"] == {"HELD": 1} and len(held_emails(workspace)) == 3
    plan = workspace.json("plan", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)
    assert plan["counts"]["held"] == 1 and plan["counts"]["to_run"] == 0
    assert workspace.rows("SELECT count(*) FROM plugin_holds") == [(1,)]
    [hold] = workspace.json("holds")
    assert (hold["id"], hold["author"], hold["owners"]) == (1, "mallory@example.org", ["admin@example.org"])

    approved = workspace.json("approve", "1", "--by", "ops", "--reason", "reviewed the diff")
    assert approved[0]["approved_by"] == "ops" and approved[0]["approved_at"] and not approved[0]["owner_added"]
    assert workspace.json("holds") == []
    assert workspace.rows("SELECT approved_by, approval_note FROM plugin_holds") == [("ops", "reviewed the diff")]
    proc = workspace.cli("approve", "7", "--by", "ops")
    assert proc.returncode == 2 and "no held change with id 7" in proc.stderr
    rerun = workspace.json("rerun", result["run_id"], "--failed")
    assert rerun["states"] == {"COMPLETED": 1}, rerun
    after = {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")}
    assert after[("knn-5", "iris-accuracy")][1] != board[("knn-5", "iris-accuracy")][1]  # the approved code's

    # the owner and a maintainer change it freely; Mallory is still not an owner (approved without --owner)
    path.write_text(path.read_text().replace("n_neighbors=1", "n_neighbors=3"))
    commit_all(example_repo, "knn with 3 neighbours", author="Lab Admin <admin@example.org>")
    plan = workspace.json("plan", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)
    assert (plan["counts"]["held"], plan["counts"]["to_run"]) == (0, 1)
    path.write_text(path.read_text().replace("n_neighbors=3", "n_neighbors=4"))
    commit_all(example_repo, "knn with 4 neighbours", author="Core Team <core@example.org>")
    assert workspace.json("plan", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)["counts"]["held"] == 1
    workspace.env["SCORE_PLUGINS_PLUGIN_MAINTAINERS"] = "CORE@example.org"
    assert workspace.json("plan", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)["counts"]["held"] == 0
    path.write_text(path.read_text().replace("n_neighbors=4", "n_neighbors=2"))
    commit_all(example_repo, "knn with 2 neighbours", author=MALLORY)
    assert workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)["states"] == {"HELD": 1}

    # a folder deleted by one change (recorded, its owners told), its id registered anew by a later one: the
    # database remembers whose id it was, and the deletion made Mallory no owner of it
    git(example_repo, "rm", "--quiet", "-r", "sklearn_scores/models/knn")
    commit_all(example_repo, "retire knn", author=MALLORY)
    workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1")
    [deleted] = [h for h in workspace.json("holds") if "deletes models/knn" in h["reason"]]
    assert deleted["author"] == "mallory@example.org" and deleted["owners"] == ["admin@example.org"]  # + maintainers
    write(example_repo, "sklearn_scores/models/mine/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.dummy import DummyClassifier\n\n"
          "model_registry['knn-5'] = lambda: DummyClassifier()\n")
    commit_all(example_repo, "knn-5 is mine now", author=MALLORY)
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1", *narrow)
    [pair] = plan["held"]
    assert "by mallory@example.org registers model id 'knn-5' of models/knn in models/mine" in pair["problem"]


def held(plan: dict) -> dict[str, str]:
    return {f"{p['model']} on {p['benchmark']}": p["problem"] for p in plan["held"]}


def test_a_fork_merged_by_a_bot_moves_and_re_registrations_count_as_changes(workspace, example_repo):
    """A pull request from a fork, merged by an automerge bot (a merge commit of its own): Carol creates a model
    (its first commit's author owns it) and Dave edits it; Mallory moves models/random_forest to a folder of her
    own. Held: Dave's edit and Mallory's move, never the bot. Then a folder that re-registers knn-5 after
    deleting models/knn (no rename git can see) is held as a change to models/knn."""
    base = git(example_repo, "rev-parse", "HEAD")
    git(example_repo, "checkout", "--quiet", "-b", "fork")
    write(example_repo, "sklearn_scores/models/carols/__init__.py",
          "from sklearn.tree import DecisionTreeClassifier\nfrom sklearn_scores import model_registry\n\n"
          "model_registry['carols-tree'] = lambda: DecisionTreeClassifier(max_depth=3)\n")
    write(example_repo, "sklearn_scores/models/carols/requirements.txt", "scikit-learn>=1.3\n")
    carols = commit_all(example_repo, "Carol's new model", author="Carol <carol@example.org>")
    path = example_repo / "sklearn_scores/models/carols/__init__.py"
    path.write_text(path.read_text().replace("max_depth=3", "max_depth=4"))
    commit_all(example_repo, "Dave tunes Carol's model", author="Dave <dave@example.org>")
    git(example_repo, "mv", "sklearn_scores/models/random_forest", "sklearn_scores/models/forest_fast")
    moved = example_repo / "sklearn_scores/models/forest_fast/__init__.py"
    moved.write_text(moved.read_text() + "\n# faster\n")
    commit_all(example_repo, "a faster forest", author=MALLORY)
    git(example_repo, "checkout", "--quiet", "main")
    git(example_repo, "merge", "--quiet", "--no-ff", "--no-edit", "fork", author="automerge[bot] <bot@example.org>")
    forest_id = "random-forest"

    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", base, "--head", "HEAD",
                          "--benchmarks", "iris-accuracy")
    reasons = held(plan)
    assert set(reasons) == {"carols-tree on iris-accuracy", f"{forest_id} on iris-accuracy"}, reasons
    assert "by dave@example.org changes models/carols" in reasons["carols-tree on iris-accuracy"]
    assert "by mallory@example.org moves models/random_forest to models/forest_fast" in \
        reasons[f"{forest_id} on iris-accuracy"]
    assert all("bot@example.org" not in r and "`run` records it" in r for r in reasons.values()), reasons
    assert plan["counts"]["to_run"] == 0 and workspace.rows("SELECT count(*) FROM plugin_holds") == [(0,)]
    # Carol's commit alone: the author of a new plugin's first commit owns it
    alone = workspace.json("plan", "--repo", str(example_repo), "--base", base, "--head", carols,
                           "--benchmarks", "iris-accuracy")
    assert (alone["counts"]["held"], alone["counts"]["to_run"]) == (0, 1)

    # re-registration: models/knn deleted, knn-5 registered anew elsewhere (nothing git sees as a rename)
    git(example_repo, "rm", "--quiet", "-r", "sklearn_scores/models/knn")
    write(example_repo, "sklearn_scores/models/nearest/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.dummy import DummyClassifier\n\n"
          "model_registry['knn-5'] = lambda: DummyClassifier(strategy='most_frequent')\n")
    commit_all(example_repo, "knn-5, reimplemented", author=MALLORY)
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1",
                          "--benchmarks", "iris-accuracy")
    assert "by mallory@example.org registers model id 'knn-5' of models/knn in models/nearest" in \
        held(plan)["knn-5 on iris-accuracy"], held(plan)


def test_authorship_is_read_from_git_bounded(tmp_path):
    """History is read with one bounded git call: past the commit bound it refuses (the caller holds), an author
    email is cut by git itself, paths are literal (a folder named with glob characters matches only itself)."""
    from pipeline.catalog import owners

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    for i in range(3):
        write(repo, "root/models/a*/f.txt", f"{i}\n")
        commit_all(repo, f"commit {i}", author=f"Author {i} <A{i}@Example.org>")
    write(repo, "root/models/ab/f.txt", "x\n")
    commit_all(repo, "a folder the glob a* would match", author=f"Long <{'x' * 400}@example.org>")
    head = git(repo, "rev-parse", "HEAD")
    history = owners.commits(repo, [head], ["root/models/a*"])
    assert [c.author for c in history] == ["a0@example.org", "a1@example.org", "a2@example.org"]
    with pytest.raises(owners.HistoryUnreadable, match="more than 2 commits"):
        owners.commits(repo, [head], ["root/models/a*"], limit=2)
    [long] = owners.commits(repo, [head], ["root/models/ab"])
    assert len(long.author) <= owners.EMAIL_CAP
    assert json.dumps(owners.authors(history, {history[0].sha}), default=sorted) == \
        '["a1@example.org", "a2@example.org"]'


def test_a_held_folder_holds_every_pair_that_reaches_it_and_the_notice_is_literal(tmp_path):
    """Fast: the pairs whose model or benchmark reaches a held folder (itself, or through a data plugin) move to
    `held` with the reason and how to approve it; the others stay to run. The hold notice shows git text
    literally (ESC, NUL, a right-to-left override escaped)."""
    from notify.hold_notice import HeldChange, compose_hold_notice
    from pipeline.inert import inert
    from pipeline.catalog.plugins import Plugin
    from pipeline.stages.ownership import Found, _hold_pairs
    from pipeline.stages.plan import make_plan
    from tests.test_units_decisions import cached_lock, catalog, change

    cat = catalog({"m1": {"requirements": ["numpy==1.0"]}, "m2": {"requirements": ["numpy==1.0"]}},
                  {"b1": {"uses": {"models": set(), "benchmarks": set(), "data": {"d"}, "metrics": set()}}, "b2": {}})
    cat.plugins[("data", "d")] = Plugin("data", "d", "dom/data/d", "tree-d")
    cached_lock(tmp_path, ("numpy==1.0",))  # the models' side
    cached_lock(tmp_path, ())  # the benchmarks' side
    plan = make_plan(change(base=None, models=("m1", "m2"), benchmarks=("b1", "b2")), cat, locks_dir=tmp_path,
                     uv="uv-is-not-run", python_version="3.11", scored=lambda keys: set())
    assert len(plan.to_run) == 4
    _hold_pairs(plan, cat, {("data", "d"): [Found("data", "d", "c" * 40, "eve@example.org", ["o@example.org"],
                                                  "commit cccc by eve@example.org changes data/d", id=3)],
                            ("models", "m2"): [Found("models", "m2", "a" * 40, "eve@example.org", [], "moves it")]})
    assert [(p.model, p.benchmark) for p in plan.to_run] == [("m1", "b2")]
    reasons = {(p.model, p.benchmark): p.problem for p in plan.held}
    assert set(reasons) == {("m1", "b1"), ("m2", "b1"), ("m2", "b2")}
    assert reasons[("m1", "b1")] == ("held, not scored: dom/data/d: commit cccc by eve@example.org changes data/d; "
                                     "an administrator approves it with `score-plugins approve 3`")
    assert reasons[("m2", "b2")].endswith("`run` records it for an administrator's approval")
    assert "(and 1 more held change(s))" in reasons[("m2", "b1")] and plan.to_json()["counts"]["held"] == 3

    assert inert("a\x1b]0;title\x07\x00\u202eb") == "a\\x1b]0;title\\x07\\x00\\u202eb"
    message = compose_hold_notice([HeldChange(3, "dom/data/d", "c" * 40, "eve\x1b[2J@example.org", "why\u202e")],
                                  "o@example.org", "score-plugins@localhost")
    body = message.get_content()
    assert "\x1b" not in body and "\u202e" not in body and "eve\\x1b[2J@example.org" in body
    assert "score-plugins approve 3 --by NAME" in body and "o@example.org" not in body.split("Hold:")[0]


def test_a_commit_by_a_non_owner_is_found_and_the_owners_own_are_not(example_repo):
    """Fast (issue 39, the breakage harness's guard of ownership): of one change, Mallory's commit to models/knn
    (owned by admin@example.org, who made it) is found with its author, owners and reason; the owner's own commit
    to the same folder and Mallory's commits to the plugin she creates in the change are not."""
    from pipeline.stages.detect import detect
    from pipeline.stages.ownership import find

    base = git(example_repo, "rev-parse", "HEAD")
    path = example_repo / KNN
    path.write_text(path.read_text().replace("n_neighbors=5", "n_neighbors=2"))
    commit_all(example_repo, "the owner's knn", author="Lab Admin <admin@example.org>")
    path.write_text(path.read_text().replace("n_neighbors=2", "n_neighbors=1"))
    mallorys = commit_all(example_repo, "Mallory's knn", author=MALLORY)
    for n in (1, 2):
        write(example_repo, "sklearn_scores/models/new_one/__init__.py",
              f"from sklearn_scores import model_registry\nfrom sklearn.svm import SVC\n# {n}\n\n"
              "model_registry['new-one'] = SVC\n")
        commit_all(example_repo, f"Mallory's own model, {n}", author=MALLORY)
    change, catalog = detect(example_repo, base, "HEAD")
    [found] = find(catalog, change, {}, set(), {})
    assert (found.plugin_type, found.plugin, found.commit, found.author, found.owners) == (
        "models", "knn", mallorys, "mallory@example.org", ["admin@example.org"])
    assert found.reason == (f"commit {mallorys[:12]} by mallory@example.org changes models/knn; that author is not "
                            "among its owners")
    assert find(catalog, change, {}, {"mallory@example.org"}, {}) == []  # a maintainer changes any plugin


def test_a_history_past_its_bound_holds_its_folder_and_the_rest_of_the_change_goes_on(example_repo, monkeypatch):
    """Fast: a folder whose history cannot be read within its bound (here 1 commit) is held, fail closed, with the
    reason; another folder of the same change is judged as usual."""
    from pipeline.catalog import owners
    from pipeline.stages.detect import detect
    from pipeline.stages.ownership import find

    base = git(example_repo, "rev-parse", "HEAD")
    path = example_repo / KNN
    for n in (2, 3):
        path.write_text(path.read_text().replace("n_neighbors=5" if n == 2 else "n_neighbors=2", f"n_neighbors={n}"))
        commit_all(example_repo, f"knn with {n}", author="Lab Admin <admin@example.org>")
    write(example_repo, "sklearn_scores/models/new_one/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.svm import SVC\n\nmodel_registry['new-one'] = SVC\n")
    commit_all(example_repo, "a new model", author=MALLORY)
    change, catalog = detect(example_repo, base, "HEAD")
    assert find(catalog, change, {}, set(), {}) == []  # the owner's two commits and Mallory's own new plugin
    monkeypatch.setattr(owners, "MAX_COMMITS", 1)
    [held] = find(catalog, change, {}, set(), {})
    assert (held.plugin, held.commit, held.author) == ("knn", catalog.commit, "(unknown)")
    assert held.reason.startswith("the history of models/knn cannot be read within its bounds") and \
        "more than 1 commits" in held.reason


def test_a_folder_registering_another_folders_data_id_is_refused_and_the_victim_is_not_re_scored(
        workspace, example_repo):
    """Hostile review round 2, F3: Mallory's new data/aaa_iris registers `iris`, the id data/sklearn_toy (the
    administrator's) registers and iris-accuracy loads. On the old code nothing stopped it: iris-accuracy was
    re-scored for every model "uses changed data plugin aaa_iris", with aaa_iris among its members (and imported
    first, in name order, by the domain's loader). Now her folder is refused the id by name, with the reason; the
    victim keeps its members, is not re-scored, and its score stays. Two folders registering one new id in the
    same change are both refused (not "first in name order wins")."""
    narrow = ("--models", "knn-5", "--benchmarks", "iris-accuracy")
    first = workspace.json("run", "--repo", str(example_repo), "--all", *narrow)
    assert first["states"] == {"COMPLETED": 1}
    board = {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")}
    write(example_repo, "sklearn_scores/data/aaa_iris/__init__.py",
          "from sklearn_scores import data_registry\n\n"
          "data_registry['iris'] = lambda: ([[0.0] * 4] * 150, [0] * 150)\n"
          "data_registry['aaa-own'] = lambda: ([[0.0] * 4] * 150, [0] * 150)\n")
    write(example_repo, "sklearn_scores/data/aaa_iris/requirements.txt", "evil-package-never-installed==9.9\n")
    commit_all(example_repo, "better iris data", author=MALLORY)

    detected = workspace.json("detect", "--repo", str(example_repo), "--base", "HEAD~1", expect=2)
    [issue] = [i for i in detected["issues"] if i["severity"] == "error"]
    assert issue["file"] == "sklearn_scores/data/aaa_iris/__init__.py", issue
    assert "data id 'iris' is already registered by sklearn_scores/data/sklearn_toy" in issue["message"], issue
    assert detected["rescore_benchmarks"] == {} and not detected["run_score"], detected
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", *narrow, expect=2)
    assert plan["counts"]["to_run"] == 0 and plan["counts"]["already_scored"] == 1, plan["counts"]  # same members

    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", expect=2)
    assert result["pairs"] == [] and not result["states"], result
    assert {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")} == board

    # one new id registered by two new folders in one change: both refused, by name
    for folder in ("moons_a", "moons_b"):
        write(example_repo, f"sklearn_scores/data/{folder}/__init__.py",
              "from sklearn import datasets\nfrom sklearn_scores import data_registry\n\n"
              "data_registry['moons'] = lambda: datasets.make_moons(random_state=0)\n")
    commit_all(example_repo, "moons, twice", author="Carol <carol@example.org>")
    detected = workspace.json("detect", "--repo", str(example_repo), "--base", "HEAD~1", expect=2)
    errors = {i["file"]: i["message"] for i in detected["issues"] if i["severity"] == "error"}
    assert set(errors) == {f"sklearn_scores/data/moons_{x}/__init__.py" for x in "ab"}, errors
    assert all("data id 'moons' is registered by" in m and "refused in each of them" in m for m in errors.values())
