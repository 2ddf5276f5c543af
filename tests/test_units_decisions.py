"""Pure tests of the code that decides what is correct: the checks ingest applies to a spool file, the spool's
index, ids. No service, no subprocess: these are also the runner of the mutation testing (scripts/mutation)."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.stages.spoolindex import INDEX, SpoolIndex
from pipeline.job.spool import SPOOL_INDEX, announce


def test_spool_index_gives_each_new_name_once_and_waits_for_whole_lines(tmp_path: Path):
    assert SPOOL_INDEX == INDEX  # the worker writes what the coordinator reads
    index = SpoolIndex(tmp_path)
    assert index.new_names() == []  # no result yet: no index file
    announce(tmp_path, "a" * 32 + ".json")
    announce(tmp_path, "b" * 32 + ".json")
    assert index.new_names() == ["a" * 32 + ".json", "b" * 32 + ".json"]
    assert index.new_names() == []  # nothing new: nothing again
    with open(tmp_path / INDEX, "ab") as f:  # a line being written: not given until its newline arrives
        f.write(b"c" * 32)
    assert index.new_names() == []
    with open(tmp_path / INDEX, "ab") as f:
        f.write(b".json\n../escape.json\nnot a name\n" + b"d" * 32 + b".json\n")
    assert index.new_names() == ["c" * 32 + ".json", "d" * 32 + ".json"]  # only names of files in the spool
    assert index.offset == os.path.getsize(tmp_path / INDEX)


def test_announce_never_fails_the_pair(tmp_path: Path, capsys):
    """The result file is already safe when its name is announced: an index that cannot be written (no spool
    folder, the index a folder) raises nothing, is said on stderr with its reason, and changes nothing; the next
    announce to a good spool appends its line as usual."""
    missing = tmp_path / "no-such-folder"
    assert announce(missing, "a.json") is None and not missing.exists()
    assert capsys.readouterr().err == (f"[score-plugins] cannot announce a.json in the spool index: [Errno 2] No "
                                       f"such file or directory: '{missing / SPOOL_INDEX}'\n")
    spool = tmp_path / "spool"
    (spool / SPOOL_INDEX).mkdir(parents=True)  # something else holds the index's name
    assert announce(spool, "b.json") is None
    assert "cannot announce b.json in the spool index: [Errno 21] Is a directory" in capsys.readouterr().err
    assert os.listdir(spool / SPOOL_INDEX) == []
    good = tmp_path / "good"
    good.mkdir()
    announce(good, "c.json")
    announce(good, "d.json")
    assert (good / SPOOL_INDEX).read_text() == "c.json\nd.json\n" and capsys.readouterr().err == ""


# --- what ingest accepts from a spool file (pipeline/stages/ingest.check_result) -------------------------------------

import math  # noqa: E402

import pytest  # noqa: E402

from pipeline.stages.ingest import RejectedResult, _rejected, check_result  # noqa: E402
from pipeline.job.manifest import Manifest  # noqa: E402
from pipeline.job.score_reader import read_score  # noqa: E402
from pipeline.job.spool import StageError  # noqa: E402

PAIR = {"key": "k" * 32, "model": "m", "benchmark": "b", "model_plugin": "mp", "benchmark_plugin": "bp",
        "model_code_hash": "mh", "benchmark_code_hash": "bh", "lock_hash": "lh", "env_hash": "eh",
        "submitters": ["s@example.org"], "model_owner": "o@example.org", "benchmark_owner": None}
MANIFEST = Manifest(run_id="run-1", commit="c" * 40, domain_root="dom", executor="slurm", code_dir="/c",
                    spool_dir="/s", log_dir="/l", worker="/w", env_root="/e", env_mode="cached", env_backend="uv",
                    state_dir="/st", created_at="2026-01-01T00:00:00+00:00", tasks=[])


def good(**changes) -> dict:
    data = {"pair_key": PAIR["key"], "model": "forged", "status": "ok", "state": "COMPLETED", "stage": None,
            "score_ceiled": 0.5, "score_raw": 0.25, "ceiling": 0.5, "error": 0.01, "elapsed_seconds": 2.5,
            "max_rss_bytes": 2**30, "array_index": 3, "attempt": 1, "job_id": "77", "node": "n1", "executor": None,
            "reason": None, "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:01:00"}
    data.update(changes)
    return data


def test_a_good_result_takes_its_identity_from_the_manifest():
    result = check_result(good(), PAIR, MANIFEST)
    assert {k: result[k] for k in ("model", "benchmark", "model_plugin", "benchmark_code_hash", "submitters",
                                   "model_owner", "benchmark_owner")} == {
        "model": "m", "benchmark": "b", "model_plugin": "mp", "benchmark_code_hash": "bh",
        "submitters": ["s@example.org"], "model_owner": "o@example.org", "benchmark_owner": None}
    assert (result["run_id"], result["commit"], result["domain"], result["pair_key"]) == \
        ("run-1", "c" * 40, "dom", PAIR["key"])
    assert (result["status"], result["state"], result["stage"]) == ("ok", "COMPLETED", None)
    assert (result["score_ceiled"], result["score_raw"], result["ceiling"], result["error"]) == (0.5, 0.25, 0.5, 0.01)
    assert (result["elapsed_seconds"], result["max_rss_bytes"], result["array_index"], result["attempt"]) == \
        (2.5, 2**30, 3, 1)
    assert result["executor"] == "slurm"  # the manifest's, when the file names none
    assert check_result(good(executor="local"), PAIR, MANIFEST)["executor"] == "local"
    assert (result["job_id"], result["node"], result["reason"]) == ("77", "n1", None)
    assert result["started_at"] == "2026-01-01T00:00:00+00:00"
    assert result["ended_at"] == "2026-01-01T00:01:00+00:00"  # a naive time is UTC
    error = check_result(good(status="error", state="FAILED", stage="score", reason="boom", score_ceiled="x"),
                         PAIR, MANIFEST)
    assert error["reason"] == "boom" and "score_ceiled" not in error  # an error's score fields are not read
    for stage in ("env_build", "import", "score", "persist"):
        assert check_result(good(status="error", state="FAILED", stage=stage), PAIR, MANIFEST)["stage"] == stage
    for state in ("TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL"):
        assert check_result(good(status="error", state=state, stage="score"), PAIR, MANIFEST)["state"] == state


@pytest.mark.parametrize(("changes", "reason"), [
    ({"pair_key": "x" * 32}, "its pair key does not match its file name"),
    ({"status": "maybe"}, "status is neither ok nor error"),
    ({"state": "FAILED"}, "state 'FAILED' does not fit status 'ok'"),
    ({"status": "error", "state": "COMPLETED"}, "state 'COMPLETED' does not fit status 'error'"),
    ({"state": "RUNNING"}, "state 'RUNNING' does not fit status 'ok'"),
    ({"stage": "x" * 100}, "stage is not one of the pipeline's stages"),
    ({"score_ceiled": "0.9"}, "score is not a finite number"),
    ({"score_ceiled": True}, "score is not a finite number"),
    ({"score_ceiled": None}, "score is not a finite number"),
    ({"score_ceiled": math.inf}, "score is not a finite number"),
    ({"score_ceiled": 1.5}, "score 1.5 is out of range"),
    ({"score_ceiled": -0.1}, "score -0.1 is out of range"),
    ({"score_raw": None}, "raw score is not a finite number"),
    ({"ceiling": -1}, "ceiling -1 is out of range"),
    ({"ceiling": 0}, "ceiling is 0"),
    ({"error": "e"}, "error is not a finite number"),
    ({"elapsed_seconds": -1}, "elapsed_seconds -1 is out of range"),
    ({"max_rss_bytes": 1.5}, "max_rss_bytes is not a whole number in range"),
    ({"max_rss_bytes": -1}, "max_rss_bytes is not a whole number in range"),
    ({"max_rss_bytes": 2**62 + 1}, "max_rss_bytes is not a whole number in range"),
    ({"array_index": True}, "array_index is not a whole number in range"),
    ({"array_index": 10**7 + 1}, "array_index is not a whole number in range"),
    ({"attempt": 1001}, "attempt is not a whole number in range"),
    ({"reason": ["list"]}, "reason is not text"),
    ({"node": {"a": 1}}, "node is not text"),
    ({"started_at": 5}, "started_at is not a timestamp"),
    ({"started_at": "yesterday"}, "started_at is not a timestamp"),
    ({"started_at": "2026-01-01T00:00:00" + " " * 60}, "started_at is not a timestamp"),
    ({"ended_at": "2099-01-01T00:00:00+00:00"}, "ended_at 2099-01-01T00:00:00+00:00 is in the future"),
])
def test_each_bad_field_is_refused_with_its_reason(changes, reason):
    with pytest.raises(RejectedResult) as refused:
        check_result(good(**changes), PAIR, MANIFEST)
    assert str(refused.value) == reason


def test_bounds_are_inclusive_and_text_is_capped():
    edge = good(score_ceiled=1, ceiling=None, error=None, max_rss_bytes=2**62, array_index=10**7, attempt=1000,
                elapsed_seconds=0, reason="r" * 5000, log_tail="t" * 9000, node=7, started_at=None)
    result = check_result(edge, PAIR, MANIFEST)
    assert (result["score_ceiled"], result["ceiling"], result["error"], result["started_at"]) == (1.0, None, None, None)
    assert len(result["reason"]) == 4000 and len(result["log_tail"]) == 8000 and result["node"] == "7"
    assert check_result(good(score_ceiled=0), PAIR, MANIFEST)["score_ceiled"] == 0.0
    assert check_result(good(ceiling=0.001), PAIR, MANIFEST)["ceiling"] == 0.001
    assert check_result(good(array_index=0, attempt=0, max_rss_bytes=0), PAIR, MANIFEST)["attempt"] == 0
    soon = "2026-01-01T00:00:00+00:00"
    assert check_result(good(ended_at=soon), PAIR, MANIFEST)["ended_at"] == soon
    with pytest.raises(RejectedResult):
        check_result("not a dict", PAIR, MANIFEST)


def test_a_rejected_file_becomes_a_failed_persist_row():
    row = _rejected(PAIR, MANIFEST, "why")
    assert (row["status"], row["state"], row["stage"], row["executor"]) == ("error", "FAILED", "persist", "slurm")
    assert row["reason"] == "its result file was rejected and quarantined: why"
    assert (row["model"], row["run_id"], row["pair_key"]) == ("m", "run-1", PAIR["key"])


# --- the score a benchmark returned (pipeline/job/score_reader.read_score) ----------------------------------------------

class Score(float):
    """A float with Brain-Score's `attrs` (what brainscore-core's Score looks like to read_score)."""

    def __new__(cls, value: float, **attrs):
        self = super().__new__(cls, value)
        self.attrs = attrs
        return self


def test_read_score_follows_brain_score_semantics():
    assert read_score(0.5) == {"score_ceiled": 0.5, "score_raw": 0.5, "ceiling": None, "error": None,
                               "raw_values": None}
    assert read_score(0.5, benchmark_ceiling=0.8)["ceiling"] == 0.8  # recorded, never divides again
    got = read_score(Score(0.4, raw=0.3, ceiling=0.75, error=0.02), benchmark_ceiling=0.9)
    assert (got["score_ceiled"], got["score_raw"], got["ceiling"], got["error"]) == (0.4, 0.3, 0.75, 0.02)
    assert read_score(1 + 1e-10)["score_ceiled"] == 1.0 and read_score(-1e-10)["score_ceiled"] == 0.0
    assert read_score(1)["score_ceiled"] == 1.0 and read_score(0)["score_ceiled"] == 0.0


@pytest.mark.parametrize(("value", "ceiling", "reason"), [
    (None, None, "benchmark returned NoneType 'None', not a number or a Score"),
    ("0.5", None, "benchmark returned str '0.5', not a number or a Score"),
    ([0.5], None, "benchmark returned list '[0.5]', not a number or a Score"),
    (1.01, None, "score 1.01 is outside [0, 1]"),
    (-0.01, None, "score -0.01 is outside [0, 1]"),
    (0.5, 0, "benchmark ceiling 0.0 is not a positive number"),
    (0.5, -2, "benchmark ceiling -2.0 is not a positive number"),
])
def test_read_score_refuses_what_is_not_a_score(value, ceiling, reason):
    with pytest.raises(StageError) as refused:
        read_score(value, benchmark_ceiling=ceiling)
    assert refused.value.stage == "score" and refused.value.reason == reason


def test_refusals_name_what_is_wrong_and_the_future_has_an_hours_grace():
    from datetime import datetime, timedelta, timezone

    with pytest.raises(RejectedResult, match="^not a JSON object$"):
        check_result(["a list"], PAIR, MANIFEST)
    with pytest.raises(RejectedResult) as refused:
        check_result(good(state="S" * 100), PAIR, MANIFEST)
    assert str(refused.value) == f"state {'S' * 40!r} does not fit status 'ok'"  # the state text is capped
    soon = (datetime.now(timezone.utc) + timedelta(minutes=30)).isoformat()  # clocks differ a little
    assert check_result(good(ended_at=soon), PAIR, MANIFEST)["ended_at"] == soon
    later = (datetime.now(timezone.utc) + timedelta(minutes=90)).isoformat()
    with pytest.raises(RejectedResult, match="is in the future"):
        check_result(good(ended_at=later), PAIR, MANIFEST)


def test_a_rejected_row_keeps_the_run_and_is_stamped_now():
    from datetime import datetime, timedelta, timezone

    row = _rejected(PAIR, MANIFEST, "why")
    assert (row["commit"], row["domain"], row["run_id"]) == ("c" * 40, "dom", "run-1")
    for key in ("started_at", "ended_at"):
        when = datetime.fromisoformat(row[key])
        assert when.tzinfo is not None and abs(when - datetime.now(timezone.utc)) < timedelta(minutes=5)


# --- what the planner decides (pipeline/stages/plan.py): keys, candidate pairs, the split of a plan -------------------

import hashlib  # noqa: E402

from envs.lock import EnvSpec  # noqa: E402
from pipeline.stages.detect import Change  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.stages.plan import candidate_pairs, make_plan, pair_key  # noqa: E402
from pipeline.catalog.plugins import Catalog, Plugin  # noqa: E402


def test_pair_key_hashes_every_field_in_its_place():
    expected = hashlib.sha256("m\0b\0mh\0bh\0lh".encode()).hexdigest()[:32]
    assert pair_key("m", "b", "mh", "bh", "lh") == expected
    fields = ["m", "b", "mh", "bh", "lh"]
    keys = {pair_key(*fields)}
    for i in range(5):  # each field counts, and so does its place
        changed = list(fields)
        changed[i] += "x"
        keys.add(pair_key(*changed))
    keys.add(pair_key("b", "m", "mh", "bh", "lh"))
    keys.add(pair_key("m", "b", "bh", "mh", "lh"))
    assert len(keys) == 8


def catalog(models: dict[str, dict], benchmarks: dict[str, dict]) -> Catalog:
    """A catalog as load_catalog builds it, its plugins given as facts (no git): one id per folder."""
    plugins = {}
    for kind, specs in (("models", models), ("benchmarks", benchmarks)):
        for name, facts in specs.items():
            plugins[(kind, name)] = Plugin(kind, name, f"dom/{kind}/{name}", f"tree-{name}", identifiers=[name],
                                           owner=f"{name}@example.org", **facts)
    return Catalog(Path("/nowhere"), "c" * 40, "dom", plugins, [])


def change(base: str | None = "b" * 40, models: tuple = (), benchmarks: tuple = (), rescore: dict | None = None,
           changed: dict | None = None) -> Change:
    return Change(True, changed or {}, [], False, list(models), list(benchmarks), True, base=base,
                  rescore_benchmarks=rescore or {})


def test_candidate_pairs_follow_the_change_and_the_filters():
    cat = catalog({"m1": {}, "m2": {}, "m3": {}}, {"b1": {}, "b2": {}, "b3": {}})
    got = candidate_pairs(change(models=("m1",), rescore={"b2": ["uses changed data plugin d"]}), cat)
    assert list(got.items()) == [
        (("m1", "b1"), ("new or changed model m1",)),
        (("m1", "b2"), ("new or changed model m1", "uses changed data plugin d")),
        (("m1", "b3"), ("new or changed model m1",)),
        (("m2", "b2"), ("uses changed data plugin d",)), (("m3", "b2"), ("uses changed data plugin d",))]
    new_bench = candidate_pairs(change(benchmarks=("b3",), rescore={"b3": ["also re-scored"]}), cat)
    assert new_bench == {(m, "b3"): ("new or changed benchmark b3", "also re-scored") for m in ("m1", "m2", "m3")}
    everything = candidate_pairs(change(base=None, models=("m1", "m2", "m3"), benchmarks=("b1", "b2", "b3")), cat)
    assert len(everything) == 9 and set(everything.values()) == {("every model (--all)", "every benchmark (--all)")}
    assert list(everything)[:4] == [("m1", "b1"), ("m1", "b2"), ("m1", "b3"), ("m2", "b1")]
    assert candidate_pairs(change(), cat, models=["m2"], benchmarks=["b1", "b3"]) == {  # filters alone
        ("m2", "b1"): ("requested",), ("m2", "b3"): ("requested",)}
    assert list(candidate_pairs(change(), cat, benchmarks=["b2"])) == [("m1", "b2"), ("m2", "b2"), ("m3", "b2")]
    narrowed = candidate_pairs(change(models=("m1",), rescore={"b2": ["r"]}), cat, models=["m1", "m2"],
                               benchmarks=["b2", "b3"])
    assert narrowed == {("m1", "b2"): ("new or changed model m1", "r"), ("m1", "b3"): ("new or changed model m1",),
                        ("m2", "b2"): ("r",)}
    assert candidate_pairs(change(), cat) == {}  # nothing changed, nothing asked
    assert candidate_pairs(change(models=("m1",)), cat, benchmarks=["b1"]) == {
        ("m1", "b1"): ("new or changed model m1",)}
    for kwargs, words in (({"models": ["m1", "nope"]}, "unknown model identifier(s) at cccccccccccc: nope"),
                          ({"benchmarks": ["zz", "b1", "aa"]}, "unknown benchmark identifier(s) at cccccccccccc: aa, zz")):
        with pytest.raises(BadInput) as caught:
            candidate_pairs(change(), cat, **kwargs)
        assert str(caught.value) == words


def cached_lock(locks: Path, requirements: tuple[str, ...]) -> None:
    """A lock already solved (what `uv pip compile` left in the cache): planning reads it, runs nothing."""
    locks.mkdir(exist_ok=True)
    spec = EnvSpec(requirements, "3.11", "uv")
    (locks / f"{spec.spec_hash}.txt").write_text("".join(f"{r} \\\n    --hash=sha256:{'0' * 64}\n"
                                                         for r in requirements))


def test_a_plan_splits_scored_in_flight_runnable_and_unsolvable_pairs(tmp_path: Path):
    cat = catalog({"m1": {"requirements": ["numpy==1.0"]}, "m2": {"requirements": ["numpy==1.0"]},
                   "m3": {"requirements": ["numpy==1.0"]}, "bad": {"requirements": ["-e ./local"]}},
                  {"b1": {"parents": {"b1": "V4"}, "versions": {"b1": 2}},
                   "b2": {"parent_problems": {"b2": "parent= is computed"}, "setup_dynamic": "setup.py runs code"}})
    cached_lock(tmp_path, ("numpy==1.0",))  # the models' side
    cached_lock(tmp_path, ())  # the benchmarks' side: nothing of the models' requirements
    what = change(base=None, models=("m1", "m2", "m3", "bad"), benchmarks=("b1", "b2"))
    seen: dict[str, list] = {}

    def scored(keys: list[str]) -> set[str]:
        seen["scored"] = keys
        return {keys[0]}

    def in_flight(keys: list[str]) -> dict[str, str]:
        seen["in_flight"] = keys
        return {keys[0]: "run-x"}

    plan = make_plan(what, cat, locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11", scored=scored,
                     in_flight=in_flight)
    hashes = {name: cat.code_hash(cat.plugins[(kind, name)]) for kind, names in
              (("models", ("m1", "m2", "m3", "bad")), ("benchmarks", ("b1", "b2"))) for name in names}
    lock_hash = plan.already_scored[0].lock.lock_hash

    def key(m: str, b: str, lock: str = lock_hash) -> str:
        return pair_key(m, b, hashes[m], hashes[b], lock)

    runnable = [(m, b) for m in ("m1", "m2", "m3") for b in ("b1", "b2")]
    assert seen["scored"] == [key(m, b) for m, b in runnable]  # every runnable pair asked once, in order
    assert [(p.model, p.benchmark) for p in plan.already_scored] == [("m1", "b1")]
    assert seen["in_flight"] == [key(m, b) for m, b in runnable[1:]]
    assert plan.in_flight == {key("m1", "b2"): "run-x"}
    assert [(p.model, p.benchmark, p.key) for p in plan.to_run] == [(m, b, key(m, b)) for m, b in runnable[2:]]
    assert [(p.model, p.benchmark, p.key, p.lock) for p in plan.cannot_run] == [
        ("bad", b, key("bad", b, "unsolved"), None) for b in ("b1", "b2")]
    assert all("-e ./local" in p.problem for p in plan.cannot_run)
    bad = plan.cannot_run[0]
    assert (bad.model_plugin, bad.benchmark_plugin, bad.model_code_hash, bad.benchmark_code_hash, bad.reasons,
            bad.model_owner, bad.benchmark_owner) == ("bad", "b1", hashes["bad"], hashes["b1"],
                                                      ("every model (--all)", "every benchmark (--all)"),
                                                      "bad@example.org", "")  # the model's side cannot be built
    assert (plan.commit, plan.domain_root) == ("c" * 40, "dom")
    first, second = plan.to_run[0], plan.to_run[1]  # m2 x b1, m2 x b2
    assert (first.model_plugin, first.benchmark_plugin, first.model_owner, first.benchmark_owner) == \
        ("m2", "b1", "m2@example.org", "b1@example.org")
    assert (first.model_code_hash, first.benchmark_code_hash) == (hashes["m2"], hashes["b1"])
    assert first.reasons == ("every model (--all)", "every benchmark (--all)")
    assert (first.folders, first.model_folders, first.setup_in_job) == (
        ("models/m2", "benchmarks/b1"), ("models/m2",), ())
    assert (first.benchmark_parent, first.benchmark_version, first.parent_note) == ("V4", 2, None)
    assert (second.benchmark_parent, second.benchmark_version, second.parent_note) == \
        (None, None, "parent= is computed")
    assert second.setup_in_job == ("benchmarks/b2",) and (first.tier, first.tier_why, first.problem) == ("", "", None)
    assert first.lock.model.packages == ("numpy==1.0",) and first.lock.lock_hash == lock_hash
    assert first.lock.benchmark.packages == () and first.lock.benchmark is second.lock.benchmark  # one for all
    assert lock_hash == f"{first.lock.model.lock_hash}+{first.lock.benchmark.lock_hash}"

    forced = make_plan(what, cat, locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11", scored=scored,
                       in_flight=in_flight, force=True)  # neither asked: everything runnable runs
    assert [(p.model, p.benchmark) for p in forced.to_run] == runnable and forced.already_scored == []
    assert forced.in_flight == {} and len(forced.cannot_run) == 2
    fresh = make_plan(what, cat, locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11",
                      scored=lambda keys: set())
    assert [(p.model, p.benchmark) for p in fresh.to_run] == runnable and fresh.already_scored == []


def test_each_side_has_its_own_lock_and_a_score_made_under_one_shared_environment_still_counts(tmp_path: Path):
    """A pair's two sides are locked apart (a model's requirement is not in the benchmark's lock). A pair not scored
    under its per-side key is kept when the database has a score of the old form (one environment, the union) for
    the same ids and code, and that union locks to the lock its key names; the union is locked only for such pairs."""
    from envs.sides import PairEnvs

    cat = catalog({"m1": {"requirements": ["numpy==1.0"]}, "m2": {"requirements": ["numpy==2.0"]}},
                  {"b1": {"requirements": ["scipy==2.0"]}, "b2": {"requirements": ["scipy==2.0"]}})
    for reqs in (("numpy==1.0",), ("numpy==2.0",), ("scipy==2.0",), ("numpy==1.0", "scipy==2.0")):
        cached_lock(tmp_path, reqs)  # not the union of m2's side and the benchmarks': locking it would fail here
    what = change(base=None, models=("m1", "m2"), benchmarks=("b1", "b2"))
    common = dict(locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11")
    shared = make_plan(what, cat, scored=lambda keys: set(), models=["m1"], shared=True, **common)
    union = shared.to_run[0].lock
    assert union.shared and union.model is union.benchmark and union.model.packages == ("numpy==1.0", "scipy==2.0")
    assert "+" not in union.lock_hash and shared.to_run[0].key == pair_key(
        "m1", "b1", shared.to_run[0].model_code_hash, shared.to_run[0].benchmark_code_hash, union.lock_hash)
    fresh = make_plan(what, cat, scored=lambda keys: set(), **common)
    by_pair = {(p.model, p.benchmark): p for p in fresh.to_run}
    assert by_pair[("m1", "b1")].lock.model.packages == ("numpy==1.0",)
    assert by_pair[("m1", "b1")].lock.benchmark.packages == ("scipy==2.0",)  # nothing of the model's
    assert by_pair[("m1", "b1")].lock.benchmark is by_pair[("m2", "b2")].lock.benchmark  # one for every model
    old_key = shared.to_run[0].key  # (m1, b1) scored before the split
    database = {old_key, by_pair[("m2", "b2")].key}  # and (m2, b2) already per side
    asked: list = []

    def legacy(ids: list) -> set:
        asked.append(sorted(ids))
        return {i for i in ids if i[:2] in (("m1", "b1"), ("m1", "b2"))}  # (m1, b2): another union, not this one

    plan = make_plan(what, cat, scored=lambda keys: database & set(keys), legacy=legacy, **common)
    assert sorted((p.model, p.benchmark) for p in plan.already_scored) == [("m1", "b1"), ("m2", "b2")]
    assert sorted((p.model, p.benchmark) for p in plan.to_run) == [("m1", "b2"), ("m2", "b1")]
    kept = next(p for p in plan.already_scored if p.model == "m1")
    assert kept.key == old_key and isinstance(kept.lock, PairEnvs) and kept.lock.shared
    assert [[i[:2] for i in ids] for ids in asked] == [[("m1", "b1"), ("m1", "b2"), ("m2", "b1")]]
    assert not list(tmp_path.glob("*.failed"))  # (m2, b1) had no old score: its union was never locked
    assert all("+" in p.lock.lock_hash for p in plan.to_run)
    forced = make_plan(what, cat, scored=lambda keys: database, legacy=legacy, force=True, **common)
    assert len(forced.to_run) == 4 and len(asked) == 1  # --force asks nothing


def test_who_hears_of_an_environment_that_cannot_be_built():
    cat = catalog({"m1": {"requirements": ["-e ./x"]}, "m2": {"requirements": ["-e ./x"]}},
                  {"b1": {}, "b2": {"conda_specs": ["numpy"], "env_problem": "environment.yml: not a mapping"}})
    plan = make_plan(change(models=("m1",), rescore={"b1": ["r"], "b2": ["r"]},
                            changed={"models": ["m1"], "benchmarks": ["b2"]}),
                     cat, locks_dir=Path("/nowhere"), uv="uv-is-not-run", python_version="3.11",
                     scored=lambda keys: set())
    owners = {(p.model, p.benchmark): (p.model_owner, p.benchmark_owner, p.problem) for p in plan.cannot_run}
    assert plan.to_run == [] and set(owners) == {("m1", "b1"), ("m1", "b2"), ("m2", "b1"), ("m2", "b2")}
    assert owners[("m1", "b1")][:2] == ("m1@example.org", "")  # the changed model's submitter
    assert owners[("m2", "b2")] == ("", "b2@example.org", "environment.yml: not a mapping")  # the conda side
    assert owners[("m2", "b1")][:2] == ("m2@example.org", "b1@example.org")  # nothing changed: both hear
    assert "-e ./x" in owners[("m1", "b1")][2]


# --- the ledger (pipeline/stages/ledger.py): every transition of a run and its pairs, on SQLite -----------------------

from sqlalchemy import select as _select  # noqa: E402

from db.models import Job, Run, Submission, User  # noqa: E402
from db.states import RunStatus, State  # noqa: E402
from pipeline.stages import ledger  # noqa: E402
from pipeline.stages.bundle import Bundle  # noqa: E402
from pipeline.database import open_database  # noqa: E402
from pipeline.executors.base import TaskState  # noqa: E402
from pipeline.stages.plan import Plan, PlannedPair  # noqa: E402
from pipeline.admin.repair import cancel_run  # noqa: E402
from pipeline.config import load_settings  # noqa: E402

INFO = ledger.RunInfo(repo="r", head="h" * 40, domain="dom", executor="local", base="b" * 40, jenkins_build="7",
                      build_url="http://ci/7", sandbox="bwrap")


def planned(key: str, model: str = "m", problem: str | None = None) -> PlannedPair:
    return PlannedPair(model, f"b-{key}", model, "bp", "mh", "bh", f"{model}@example.org", "b@example.org",
                       ("r",), key=key, problem=problem)


def jobs(db, run_id: str) -> dict[str, Job]:  # noqa: ANN001
    with db.sessions() as s:
        return {j.pair_key: j for j in s.scalars(_select(Job).where(Job.run_id == run_id))}


def run_row(db, run_id: str) -> Run | None:  # noqa: ANN001
    with db.sessions() as s:
        return s.get(Run, run_id)


def test_the_ledger_claims_each_pair_once_and_records_every_transition(tmp_path: Path):
    db = open_database("local", tmp_path)
    try:
        plan = Plan("c" * 40, "dom", to_run=[planned("k1"), planned("k2", "n"), planned("k3")],
                    cannot_run=[planned("k9", problem="does not solve")])
        assert ledger.open_run(db, "run-a", plan, INFO) == {}
        run = run_row(db, "run-a")
        assert run.run_dir == "" and run.ended_at is None
        assert (run.status, run.repo, run.base_commit, run.head_commit, run.domain, run.executor, run.jenkins_build,
                run.build_url, run.sandbox) == ("PENDING", "r", "b" * 40, "h" * 40, "dom", "local", "7",
                                                 "http://ci/7", "bwrap")
        rows = jobs(db, "run-a")
        assert {k: (j.state, j.attempt, j.model, j.benchmark, j.submitters) for k, j in rows.items()} == {
            "k1": ("PENDING", 1, "m", "b-k1", ["b@example.org", "m@example.org"]),
            "k2": ("PENDING", 1, "n", "b-k2", ["b@example.org", "n@example.org"]),
            "k3": ("PENDING", 1, "m", "b-k3", ["b@example.org", "m@example.org"]),
            "k9": ("FAILED", 1, "m", "b-k9", ["b@example.org", "m@example.org"])}
        assert (rows["k9"].stage, rows["k9"].reason) == ("env_build", "does not solve")
        assert rows["k9"].started_at is not None and rows["k9"].ended_at is not None and rows["k1"].ended_at is None

        ledger.open_run(db, "run-z", Plan("c" * 40, "dom", cannot_run=[planned("k2", problem="x")]), INFO)
        other = Plan("c" * 40, "dom", to_run=[planned("k2"), planned("k4")])  # k2 is run-a's: not claimed twice
        assert ledger.open_run(db, "run-b", other, INFO) == {"k2": "run-a"}
        assert set(jobs(db, "run-b")) == {"k4"}
        rendered = ledger.open_run(db, "run-r", Plan("c" * 40, "dom", to_run=[planned("k1"), planned("k3")]),
                                   INFO, state=State.RENDERED)  # a hand-submitted bundle records, claims nothing
        assert rendered == {} and jobs(db, "run-r")["k1"].state == "RENDERED"
        # a bystander: another run's open pair, which no transition of run-a may touch
        assert ledger.open_run(db, "run-x", Plan("c" * 40, "dom", to_run=[planned("kx")]), INFO) == {}
        ledger.submitted(db, "run-x", "JX")
        ledger.drop_run(db, "run-b")
        assert run_row(db, "run-b") is None and jobs(db, "run-b") == {}

        manifest = Manifest(run_id="run-a", commit="c" * 40, domain_root="dom", executor="local", code_dir="/c",
                            spool_dir="/s", log_dir="/l", worker="/w", env_root="/e", env_mode="cached",
                            env_backend="uv", state_dir="/st", created_at="2026-01-01T00:00:00+00:00",
                            tasks=[{"index": 0, "pairs": [{"key": "k1"}, {"key": "k2"}]},
                                   {"index": 1, "pairs": [{"key": "k3"}]}])
        bundle = Bundle("run-a", tmp_path / "run-a", tmp_path / "job.sh", tmp_path / "manifest.json", manifest,
                        "local")
        ledger.record_bundle(db, bundle)
        assert run_row(db, "run-a").run_dir == str(tmp_path / "run-a")
        assert {k: j.array_index for k, j in jobs(db, "run-a").items()} == {"k1": 0, "k2": 0, "k3": 1, "k9": None}

        ledger.submitted(db, "run-a", "J1")
        assert run_row(db, "run-a").status == "RUNNING"
        assert {k: j.slurm_job_id for k, j in jobs(db, "run-a").items()} == {"k1": "J1", "k2": "J1", "k3": "J1",
                                                                             "k9": None}
        ledger.running(db, "run-a", ["k1", "k9"], node="n1")
        rows = jobs(db, "run-a")
        assert (rows["k1"].state, rows["k1"].node) == ("RUNNING", "n1") and rows["k1"].started_at is not None
        assert rows["k9"].state == "FAILED" and rows["k2"].state == "PENDING" and rows["k2"].node is None
        ledger.running(db, "run-a", ["k3"])
        assert jobs(db, "run-a")["k3"].node is None  # no node named: none recorded, not ''
        ledger.retried(db, "run-a", ["k3"], "J2", 2)
        rows = jobs(db, "run-a")
        assert (rows["k3"].state, rows["k3"].slurm_job_id, rows["k3"].attempt) == ("PENDING", "J2", 2)
        assert (rows["k1"].attempt, rows["k1"].slurm_job_id) == (1, "J1")
        assert ledger.open_job_ids(db, "run-a") == {"J1", "J2"}
        # a rendered run not closed yet is reconciled too: its hand-submitted jobs may have been killed
        assert [r.id for r in ledger.open_runs(db)] == ["run-a", "run-r", "run-x"]

        (bundle.log_dir).mkdir(parents=True)
        (bundle.log_dir / "task-1.out").write_text("line one\nkilled: out of memory\n")
        changed = ledger.close_unfinished(db, bundle, {0: TaskState(0, State.RUNNING),
                                                       1: TaskState(1, State.OUT_OF_MEMORY, reason="")})
        assert changed == {"RUNNING": 1, "OUT_OF_MEMORY": 1}  # k1 was RUNNING already: not a change
        rows = jobs(db, "run-a")
        assert (rows["k1"].state, rows["k2"].state, rows["k1"].ended_at) == ("RUNNING", "RUNNING", None)
        assert (rows["k3"].state, rows["k3"].reason, rows["k3"].array_index) == \
            ("OUT_OF_MEMORY", "array task 1 ended as OUT_OF_MEMORY", 1)
        assert rows["k3"].log_path == str(bundle.log_dir / "task-1.out") and "out of memory" in rows["k3"].log_tail
        assert rows["k3"].ended_at is not None
        assert ledger.open_job_ids(db, "run-a") == {"J1"}  # k3 (J2) is closed now

        with db.sessions() as s, s.begin():  # k2's result arrived (ingest's write)
            s.get(Job, rows["k2"].id).state = State.COMPLETED
        assert ledger.close_unfinished(db, bundle, {0: TaskState(0, State.COMPLETED)}) == {"LOST": 1}
        rows = jobs(db, "run-a")
        assert (rows["k1"].state, rows["k1"].reason) == \
            ("LOST", "its task finished without writing a result for this pair")
        assert rows["k1"].log_path is None and rows["k2"].state == "COMPLETED"
        assert ledger.unfinished_pairs(db, "run-a") == [("m", "b-k1"), ("m", "b-k3"), ("m", "b-k9")]
        assert ledger.reconciled(db, "run-a") is True and run_row(db, "run-a").status == "RECONCILED"
        assert ledger.reconciled(db, "run-a") is False  # once
        bystander, rendered_rows = jobs(db, "run-x")["kx"], jobs(db, "run-r")
        assert (bystander.state, bystander.slurm_job_id, bystander.attempt, bystander.array_index,
                bystander.reason) == ("PENDING", "JX", 1, None, None)
        assert [(j.state, j.attempt, j.array_index, j.slurm_job_id) for j in rendered_rows.values()] == \
            [("RENDERED", 1, None, None)] * 2
        assert ledger.get_run(db, "run-a").id == "run-a"

        done, pairs = ledger.finish(db, "run-a", "build-7")
        assert done.status == RunStatus.COMPLETED_WITH_FAILURES and done.ended_at is not None and len(pairs) == 4
        with db.sessions() as s:
            heard = {email: (status, build) for email, status, build in s.execute(
                _select(User.email, Submission.status, Submission.jenkins_build)
                .join(Submission, Submission.user_id == User.id).where(Submission.run_id == "run-a"))}
        with db.sessions() as s:
            names = set(s.scalars(_select(User.display_name)))
            times = set(s.execute(_select(Submission.created_at, Submission.ended_at)
                                  .where(Submission.run_id == "run-a")))
        assert names == {""} and times == {(run_row(db, "run-a").created_at, t[1]) for t in times}
        assert all(t[1] is not None for t in times)
        assert heard == {"b@example.org": ("COMPLETED_WITH_FAILURES", "build-7"),
                         "m@example.org": ("COMPLETED_WITH_FAILURES", "build-7"),
                         "n@example.org": ("COMPLETED", "build-7")}  # n's only pair completed
        assert ledger.finish(db, "run-a", "build-8", cancelled="stopped")[0].status == RunStatus.CANCELLED
        with db.sessions() as s:
            assert set(s.scalars(_select(Submission.status).where(Submission.run_id == "run-a"))) == {
                "CANCELLED", "COMPLETED"}  # one row per submitter, updated

        assert ledger.open_run(db, "run-c", Plan("c" * 40, "dom", to_run=[planned("k5"), planned("k6"),
                                                                          planned("k4")]), INFO) == {}
        with db.sessions() as s, s.begin():
            s.get(Job, jobs(db, "run-c")["k6"].id).state = State.COMPLETED
        assert ledger.cancelled(db, "run-c", "cancelled by an admin") == 2
        rows = jobs(db, "run-c")
        assert (rows["k5"].state, rows["k5"].reason, rows["k6"].state, rows["k4"].state) == \
            ("CANCELLED", "cancelled by an admin", "COMPLETED", "CANCELLED")
        assert run_row(db, "run-c").status == "CANCELLED" and ledger.get_run(db, "nope") is None
        assert ledger.finish(db, "run-c", None)[0].status == RunStatus.COMPLETED_WITH_FAILURES
        ledger.open_run(db, "run-d", Plan("c" * 40, "dom", to_run=[planned("k1"), planned("k7")]), INFO)
        assert ledger.reconciled(db, "run-d") is False  # a pair still open
        ledger.close_unfinished(db, Bundle("run-d", tmp_path / "d", tmp_path / "j", tmp_path / "m", manifest,
                                           "local"), {0: TaskState(0, State.RUNNING)}, cancelled="run cancelled")
        assert {k: (j.state, j.reason) for k, j in jobs(db, "run-d").items()} == {
            "k1": ("CANCELLED", "run cancelled"), "k7": ("CANCELLED", "run cancelled")}  # running, or unknown
        ledger.open_run(db, "run-e", Plan("c" * 40, "dom", to_run=[planned("k8"), planned("k11")]), INFO)
        assert ledger.close_unfinished(db, Bundle("run-e", tmp_path / "e", tmp_path / "j", tmp_path / "m",
                                                  manifest, "local"), {}) == {"LOST": 2}
        assert jobs(db, "run-e")["k8"].reason == "the executor has no record of its task"
        assert jobs(db, "run-x")["kx"].state == "PENDING"  # still the bystander's
        ledger.open_run(db, "run-g", Plan("c" * 40, "dom", to_run=[planned("k1"), planned("k2")]), INFO)
        assert ledger.close_unfinished(db, Bundle("run-g", tmp_path / "g", tmp_path / "j", tmp_path / "m", manifest,
                                                  "local"), {0: TaskState(0, State.RUNNING)}) == {"RUNNING": 2}
        assert ledger.finish(db, "run-e", None)[0].status == RunStatus.COMPLETED_WITH_FAILURES
        ok = Plan("c" * 40, "dom", to_run=[planned("k10")])
        ledger.open_run(db, "run-f", ok, INFO)
        with db.sessions() as s, s.begin():
            s.get(Job, jobs(db, "run-f")["k10"].id).state = State.COMPLETED
        assert ledger.finish(db, "run-f", None)[0].status == RunStatus.COMPLETED
    finally:
        db.close()


def test_a_cancel_counts_the_pairs_it_stopped_even_when_the_runs_coordinator_recorded_them_first(tmp_path: Path):
    """`score-plugins cancel` of a live run races the run's own coordinator, which sees the stopped tasks end
    and may close their rows before the cancel does: the count is of the pairs open when the cancel began
    that are CANCELLED now, whoever closed them (a result that arrived, or another run's rows, are not)."""
    db = open_database("local", tmp_path)
    try:
        ledger.open_run(db, "run-c", Plan("c" * 40, "dom", to_run=[planned(k) for k in ("k1", "k2", "k3", "k4")]),
                        INFO)
        ledger.open_run(db, "run-o", Plan("c" * 40, "dom", to_run=[planned("ko")]), INFO)
        ledger.cancelled(db, "run-o", "another run's cancel")
        rows = jobs(db, "run-c")
        with db.sessions() as s, s.begin():
            s.get(Job, rows["k4"].id).state = State.COMPLETED  # finished before the cancel began
        among = ledger.open_pair_ids(db, "run-c")
        assert among == {rows[k].id for k in ("k1", "k2", "k3")}
        with db.sessions() as s, s.begin():  # meanwhile: the coordinator recorded one stopped task, one result came
            s.get(Job, rows["k1"].id).state = State.CANCELLED
            s.get(Job, rows["k2"].id).state = State.COMPLETED
        assert ledger.cancelled(db, "run-c", "cancelled by an admin", among=among) == 2  # k1 and k3
        assert {k: j.state for k, j in jobs(db, "run-c").items()} == {
            "k1": "CANCELLED", "k2": "COMPLETED", "k3": "CANCELLED", "k4": "COMPLETED"}
        assert jobs(db, "run-c")["k3"].reason == "cancelled by an admin"
        assert ledger.cancelled(db, "run-c", "again", among=among) == 2  # the same cancel, repeated
        assert ledger.cancelled(db, "run-c", "again") == 0  # nothing was open
        # a run that is over keeps its record: `cancel` of it stops nothing and changes nothing
        ledger.open_run(db, "run-f", Plan("c" * 40, "dom", to_run=[planned("kf")]), INFO)
        with db.sessions() as s, s.begin():
            s.get(Job, jobs(db, "run-f")["kf"].id).state = State.COMPLETED
        assert ledger.finish(db, "run-f", None)[0].status == RunStatus.COMPLETED
        assert cancel_run(load_settings(environ={}), db, "run-f") == 0
        assert ledger.cancelled(db, "run-f", "late") == 0
        assert run_row(db, "run-f").status == RunStatus.COMPLETED and jobs(db, "run-f")["kf"].state == "COMPLETED"
    finally:
        db.close()


def test_each_set_gets_its_cached_lock_or_its_reason_with_progress_serially_and_threaded_and_conda_requests_are_checked(
        tmp_path: Path):
    """Fast, no solver runs (the locks are planted in the cache): `solve_all`'s serial and threaded paths give each
    set its lock or the reason it has none, and count progress. That each distinct set is solved once and the
    solves run at the same time is seen with the real uv in tests/test_plan.py."""
    from pipeline.stages.plan import conda_request, solve_all, solve_conda_all

    cached_lock(tmp_path, ("numpy==1.0",))
    cached_lock(tmp_path, ("scipy==2.0",))
    sets = [("numpy==1.0",), ("-e ./x",), ("scipy==2.0",)]
    for workers in (1, 3):
        steps: list[tuple[int, int]] = []
        solved = solve_all(sets, locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11", backend="uv",
                           url_schemes=("git+https",), workers=workers, progress=lambda i, n: steps.append((i, n)))
        assert list(solved) == sets if workers == 1 else set(solved) == set(sets)
        assert solved[("numpy==1.0",)].packages == ("numpy==1.0",)
        assert solved[("scipy==2.0",)].packages == ("scipy==2.0",) and solved[("scipy==2.0",)].spec.backend == "uv"
        assert isinstance(solved[("-e ./x",)], str) and "-e ./x" in solved[("-e ./x",)]
        assert steps == [(1, 3), (2, 3), (3, 3)]
    refused = solve_all([("pkg @ git+ssh://host/repo",)], locks_dir=tmp_path, uv="uv-is-not-run",
                        python_version="3.11", backend="uv", url_schemes=("git+https",))
    assert "git+ssh" in refused[("pkg @ git+ssh://host/repo",)]

    cat = catalog({"m": {"conda_channels": ["bioconda"], "conda_specs": ["numpy >=1"]}},
                  {"b": {"conda_specs": ["scipy"]}})
    m, b = cat.plugins[("models", "m")], cat.plugins[("benchmarks", "b")]
    assert conda_request(cat, (m, b), ("six==1.0",), "3.10", ("conda-forge",), ("git+https",)) == (
        ["bioconda"], ["numpy >=1", "python 3.10.*", "scipy"], ("six==1.0",))
    assert conda_request(cat, (b,), (), "3.10", ("conda-forge", "x"), ("git+https",)) == (
        ["conda-forge", "x"], ["python 3.10.*", "scipy"], ())  # no channel declared: the setting's
    assert "-e ./x" in conda_request(cat, (m, b), ("-e ./x",), "3.10", ("conda-forge",), ("git+https",))
    assert "not a version" in conda_request(cat, (m, b), (), "three", ("conda-forge",), ("git+https",))
    cat.domain_requires_python = ">=3.9,<3.13"
    assert conda_request(cat, (b,), (), "3.10", ("conda-forge",), ("git+https",))[1] == ["python <3.13,>=3.9",
                                                                                          "scipy"]
    steps = []
    done = solve_conda_all({"a": "environment.yml: broken", "b": "no channel"}, locks_dir=tmp_path,
                           conda_backend="rattler", rattler_python="/nowhere", uv="uv-is-not-run", workers=2,
                           progress=lambda i, n: steps.append((i, n)))
    assert done == {"a": "environment.yml: broken", "b": "no channel"} and steps == [(1, 2), (2, 2)]


def test_a_plan_speaks_json_in_full_and_in_summary_and_narrows_to_named_pairs(tmp_path: Path):
    cat = catalog({"m1": {"requirements": ["numpy==1.0"]}, "bad": {"requirements": ["-e ./x"]}},
                  {"b1": {}, "b2": {}})
    cached_lock(tmp_path, ("numpy==1.0",))
    cached_lock(tmp_path, ())
    plan = make_plan(change(base=None, models=("m1", "bad"), benchmarks=("b1", "b2")), cat, locks_dir=tmp_path,
                     uv="uv-is-not-run", python_version="3.11", scored=lambda keys: {keys[0]},
                     in_flight=lambda keys: {})
    plan.to_run[0].tier, plan.to_run[0].tier_why = "small", "declared"
    summary = plan.to_json(pairs=False)
    problem = plan.cannot_run[0].problem
    assert summary == {"commit": "c" * 40, "domain_root": "dom",
                       "counts": {"to_run": 1, "already_scored": 1, "cannot_run": 2, "in_flight": 0, "held": 0},
                       "environments": 2, "environments_by_side": {"model": 1, "benchmark": 1},
                       "cannot_run_reasons": {problem: 2}, "held_reasons": {}, "infrastructure_failures": 0, "tiers": {"small": 1},
                       "in_flight": {}}
    full = plan.to_json()
    assert {k: full[k] for k in summary} == summary
    [pair] = full["to_run"]
    lock = plan.to_run[0].lock
    assert pair == {"model": "m1", "benchmark": "b2", "key": plan.to_run[0].key,
                    "reasons": ["every model (--all)", "every benchmark (--all)"], "model_plugin": "m1",
                    "benchmark_plugin": "b2", "model_code_hash": plan.to_run[0].model_code_hash,
                    "benchmark_code_hash": plan.to_run[0].benchmark_code_hash, "lock_hash": lock.lock_hash,
                    "env_hash": lock.env_hash, "submitters": ["b2@example.org", "m1@example.org"], "problem": None,
                    "outage": False, "tier": "small", "tier_why": "declared"}
    assert [p["benchmark"] for p in full["already_scored"]] == ["b1"]
    assert [(p["model"], p["lock_hash"], p["env_hash"], p["tier"], p["tier_why"]) for p in full["cannot_run"]] == \
        [("bad", None, None, None, None)] * 2
    assert PlannedPair("m", "b", "m", "b", "", "", "x@o", "x@o", ()).submitters == ["x@o"]
    assert PlannedPair("m", "b", "m", "b", "", "", "", "", ()).submitters == []
    narrow = plan.only({("m1", "b1"), ("bad", "b2")})
    assert ([p.benchmark for p in narrow.already_scored], narrow.to_run, [p.benchmark for p in narrow.cannot_run]) \
        == (["b1"], [], ["b2"])
    assert narrow.commit == plan.commit and len(plan.cannot_run) == 2  # the plan itself is unchanged
    assert plan.only({("m1", "b2")}).already_scored == [] and len(plan.only({("m1", "b2")}).to_run) == 1


def test_conda_pairs_and_uv_pairs_each_take_their_own_path(tmp_path: Path):
    cat = catalog({"m": {"requirements": ["numpy==1.0"]}, "g": {"requirements": ["pkg @ git+https://example.org/r"]}},
                  {"b_uv": {}, "b_conda": {"conda_specs": ["scipy"]}})
    cached_lock(tmp_path, ("numpy==1.0",))
    cached_lock(tmp_path, ())
    steps: list[tuple[int, int]] = []
    common = dict(locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11", scored=lambda keys: set(),
                  conda_backend="none-here", lock_workers=2, progress=lambda i, n: steps.append((i, n)))
    plan = make_plan(change(base=None, models=("m", "g"), benchmarks=("b_uv", "b_conda")), cat,
                     url_schemes=(), **common)
    assert [(p.model, p.benchmark) for p in plan.to_run] == [("m", "b_uv")]  # uv, its cached lock
    why = {(p.model, p.benchmark): p.problem for p in plan.cannot_run}
    assert set(why) == {("g", "b_uv"), ("g", "b_conda"), ("m", "b_conda")}
    assert "conda backend must be one of" in why[("m", "b_conda")]  # conda: the (unknown) conda backend's
    assert "git+https" in why[("g", "b_uv")] and "git+https" in why[("g", "b_conda")]  # no URL scheme allowed
    assert "conda backend must be one of" in why[("g", "b_conda")]  # both sides cannot: both reasons
    assert steps == [(1, 3), (2, 3), (3, 3), (1, 1)]  # each side's uv set (m, g, b_uv), then the conda request
    specs_only = catalog({"mc": {"conda_specs": ["numpy"]}}, {"b_uv": {}})  # a model's specs, no channel: conda
    model_conda = make_plan(change(base=None, models=("mc",), benchmarks=("b_uv",)), specs_only, **common)
    assert model_conda.to_run == [] and "conda backend must be one of" in model_conda.cannot_run[0].problem
    plain = catalog({"m": {"requirements": ["numpy==1.0"]}}, {"b_uv": {}})  # nothing declares conda
    every = make_plan(change(base=None, models=("m",), benchmarks=("b_uv",)), plain, backend="conda", **common)
    assert every.to_run == [] and "conda backend must be one of" in every.cannot_run[0].problem
    narrowed = make_plan(change(base=None, models=("m", "g"), benchmarks=("b_uv", "b_conda")), cat,
                         models=["m"], benchmarks=["b_uv"], **common)
    assert [(p.model, p.benchmark) for p in narrowed.to_run + narrowed.cannot_run] == [("m", "b_uv")]


def test_read_score_names_which_number_is_wrong_and_keeps_the_exact_bounds():
    def reason(value, ceiling=None) -> str:  # noqa: ANN001
        with pytest.raises(StageError) as refused:
            read_score(value, benchmark_ceiling=ceiling)
        assert refused.value.stage == "score"
        return refused.value.reason

    assert reason(float("nan")) == "the score the benchmark returned is nan, not a finite number"
    assert reason(True) == "the score the benchmark returned is bool 'True', not a number"
    assert reason(Score(0.5, raw="r" * 100)) == f"the score's attrs['raw'] is str {'r' * 80!r}, not a number"
    assert reason(Score(0.5, raw=float("-inf"))) == "the score's attrs['raw'] is -inf, not a finite number"
    assert reason(0.5, float("inf")) == "the benchmark ceiling is inf, not a finite number"
    assert reason(Score(0.5, ceiling="c")) == "the benchmark ceiling is str 'c', not a number"
    assert reason("s" * 100) == f"benchmark returned str {'s' * 80!r}, not a number or a Score"
    assert read_score(-1e-9)["score_ceiled"] == 0.0 and read_score(1 + 1e-9)["score_ceiled"] == 1.0  # inclusive
    for bad_error in ("bad", float("nan"), True):  # an error bar is informative: a bad one is dropped
        assert read_score(Score(0.5, error=bad_error))["error"] is None
    assert read_score(Score(0.5, raw=0.25))["raw_values"] is None  # a scalar raw has no values to keep


def test_planning_pauses_the_cycle_collector_and_leaves_the_process_as_it_found_it(tmp_path: Path):
    """make_plan turns cyclic GC off while it allocates, then on again with its objects out of the youngest
    generation (else the first allocation after it walks them all); objects the process froze itself (gc.freeze,
    before a fork) stay frozen; a caller that turned GC off keeps it off."""
    import gc

    models = [f"m{i}" for i in range(40)]
    cat = catalog({m: {"requirements": ["numpy==1.0"]} for m in models}, {f"b{i}": {} for i in range(10)})
    cached_lock(tmp_path, ("numpy==1.0",))
    cached_lock(tmp_path, ())
    what = change(base=None, models=tuple(models), benchmarks=tuple(f"b{i}" for i in range(10)))
    common = dict(locks_dir=tmp_path, uv="uv-is-not-run", python_version="3.11")
    collector_on: list[bool] = []

    def scored(keys: list[str]) -> set[str]:
        collector_on.append(gc.isenabled())
        return {keys[0]}

    passes: list[int] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            passes.append(info["generation"])

    frozen_by_runner = gc.get_freeze_count()  # a runner may freeze its objects before forking us (mutmut does)
    gc.unfreeze()  # start from a process that froze nothing; the runner's freeze is restored below
    gc.collect()
    gc.callbacks.append(watch)
    try:
        plan = make_plan(what, cat, scored=scored, **common)
        allocations = [[] for _ in range(50)]  # the next allocations start no pass over the 400 pairs' objects
        after = list(passes)
    finally:
        gc.callbacks.remove(watch)
        if frozen_by_runner:
            gc.freeze()
    assert after == [] and len(allocations) == 50 and collector_on == [False] and gc.isenabled()
    assert len(plan.to_run) == 399 and [(p.model, p.benchmark) for p in plan.already_scored] == [("m0", "b0")]
    gc.disable()
    try:
        make_plan(what, cat, scored=lambda keys: set(), **common)
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        make_plan(what, cat, scored=lambda keys: set(), **common)
        assert gc.get_freeze_count() > frozen // 2 > 0 and gc.isenabled()  # not thawed (a few may be freed)
    finally:
        if not frozen_by_runner:
            gc.unfreeze()


def test_scored_keys_reads_the_column_or_probes_by_cardinality(tmp_path: Path):
    """db.queries.scored_keys on SQLite: the subset of the keys already scored, whether it reads the whole key
    column (the keys at least half the table) or probes with the keys; the answer holds the caller's strings."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from db import migrate
    from db.ingest import ingest_results
    from db.models import Run
    from db.queries import scored_keys

    engine = create_engine(f"sqlite:///{tmp_path}/scores.db")
    migrate.upgrade(engine)
    with Session(engine) as s, s.begin():
        s.add(Run(id="r", head_commit="c" * 40, domain="dom", executor="none"))
    with Session(engine) as s, s.begin():
        ingest_results(s, [{"pair_key": f"k{i}", "run_id": None, "model": f"m{i}", "benchmark": "b", "status": "ok",
                            "score_raw": 0.5, "score_ceiled": 0.5, "ceiling": 1.0, "commit": "c" * 40,
                            "model_code_hash": "mh", "benchmark_code_hash": "bh", "lock_hash": "lh",
                            "env_hash": "eh"} for i in range(4)])
    with Session(engine) as s:
        many = ["".join(["k", "1"]), "k3", "x1", "x2"]  # 4 rows, 4 keys: the column is read
        found = scored_keys(s, many)
        assert found == {"k1", "k3"} and all(any(f is k for k in many) for f in found)
        assert scored_keys(s, ["k2"]) == {"k2"} and scored_keys(s, ["x"]) == set()  # 4 rows > 2 keys: probed
        assert scored_keys(s, ["k0", "k0", "x"]) == {"k0"} and scored_keys(s, []) == set()
    engine.dispose()
