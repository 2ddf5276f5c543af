"""Spooled results -> database rows, idempotently and in batches.

A result is a plain dict (the worker's spool JSON, see docs/spool.md). Reference
rows (users, models, benchmarks) are created in bulk per batch; scores are
inserted with ON CONFLICT DO NOTHING on the score key, so ingesting the same spool
twice adds nothing; job rows are upserted with their final state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import any_, bindparam, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from db.history import forced_replacements, link_successors
from db.models import BenchmarkInstance, BenchmarkType, Job, Model, Run, Score, User
from db.upsert import copy_new_rows, insert_many

BATCH = 20_000  # results per transaction and per COPY (pipeline.stages.ingest reads the spool in batches of this)
SQLITE_BATCH = 2000  # SQLite's path binds every key of a batch: its batches stay small


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def rows_by_key(session: Session, column: Any, keys: list, *columns: Any) -> list[tuple]:
    """(key, *columns) of the rows whose `column` is one of `keys`: on Postgres one statement with the keys as
    one array parameter (compiled once, whatever their number), elsewhere one `IN` per 900 keys."""
    if not keys:
        return []
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam("keys", keys, type_=ARRAY(column.type))
        return [tuple(row) for row in session.execute(select(column, *columns).where(column == any_(array)))]
    found: list[tuple] = []
    for i in range(0, len(keys), 900):
        found += [tuple(row) for row in session.execute(select(column, *columns).where(column.in_(keys[i:i + 900])))]
    return found


def ensure_rows(session: Session, model: Any, key: str, rows: dict[Any, dict]) -> dict[Any, int]:
    """Insert the missing rows of a table keyed by a unique column; return key -> id for all of them."""
    if not rows:
        return {}
    column = getattr(model, key)
    keys = list(rows)
    found: dict[Any, int] = dict(rows_by_key(session, column, keys, model.id))
    missing = [rows[k] for k in keys if k not in found]
    if missing:
        insert_many(session, model, missing)
        found.update(rows_by_key(session, column, [k for k in keys if k not in found], model.id))
    return found


def _instances(session: Session, pairs: set[tuple[int, str]], ceilings: dict[tuple[int, str], float | None],
               versions: dict[tuple[int, str], int | None] | None = None) -> dict[tuple[int, str], int]:
    if not pairs:
        return {}
    cols = (BenchmarkInstance.benchmark_type_id, BenchmarkInstance.version)
    wanted = list(pairs)

    def lookup() -> dict[tuple[int, str], int]:
        out = {}
        for i in range(0, len(wanted), 400):
            rows = session.execute(select(*cols, BenchmarkInstance.id).where(tuple_(*cols).in_(wanted[i:i + 400])))
            out.update({(t, v): id_ for t, v, id_ in rows})
        return out

    found = lookup()
    versions = versions or {}
    missing = [{"benchmark_type_id": t, "version": v, "ceiling": ceilings.get((t, v)),
                "declared_version": versions.get((t, v))} for t, v in wanted if (t, v) not in found]
    if missing:
        insert_many(session, BenchmarkInstance, missing)
        found = lookup()
    return found


def ingest_results(session: Session, results: Iterable[dict], batch: int = BATCH) -> dict[str, int]:
    """Write results in batches of `batch` (at most SQLITE_BATCH on SQLite), in the caller's transaction.

    Returns counts: scores inserted, duplicates skipped, failures recorded.
    """
    counts = {"scores": 0, "duplicates": 0, "failures": 0}
    if session.get_bind().dialect.name != "postgresql":
        batch = min(batch, SQLITE_BATCH)
    chunk: list[dict] = []
    for result in results:
        chunk.append(result)
        if len(chunk) >= batch:
            _ingest_batch(session, chunk, counts)
            chunk = []
    if chunk:
        _ingest_batch(session, chunk, counts)
    return counts


def _number(value: object) -> float | None:
    """A finite float, or None: a spool value is data, never trusted to be the right type."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _record_moves(session: Session, model: Any, plugins: dict[str, tuple[str, int | None]]) -> None:
    """A plugin moved to another folder (allowed only when the old one is gone): its row follows it.
    One read (per 900 ids on SQLite) finds the rows that moved (almost always none); only those are updated."""
    wanted = {identifier: moved for identifier, moved in plugins.items() if moved[0]}
    recorded: dict[str, str] = dict(rows_by_key(session, model.identifier, list(wanted), model.plugin))
    for identifier, (plugin, owner) in wanted.items():
        if recorded.get(identifier, plugin) != plugin:
            session.execute(update(model).where(model.identifier == identifier).values(plugin=plugin, owner_id=owner))


def _ingest_batch(session: Session, results: list[dict], counts: dict[str, int]) -> None:
    emails = {}
    for r in results:
        for owner in (r.get("model_owner"), r.get("benchmark_owner")):
            if owner:
                emails[owner] = {"email": owner, "display_name": ""}
    users = ensure_rows(session, User, "email", emails)
    # each model's and benchmark's newest result in the batch speaks for it (thousands of results, few plugins)
    by_model = {r["model"]: r for r in results}
    by_type = {r["benchmark"]: r for r in results}
    models = ensure_rows(session, Model, "identifier", {
        m: {"identifier": m, "plugin": r.get("model_plugin", ""), "domain": r.get("domain", ""),
            "owner_id": users.get(r.get("model_owner")), "public": True} for m, r in by_model.items()})
    types = ensure_rows(session, BenchmarkType, "identifier", {
        b: {"identifier": b, "plugin": r.get("benchmark_plugin", ""), "domain": r.get("domain", ""),
            "owner_id": users.get(r.get("benchmark_owner"))} for b, r in by_type.items()})
    _record_moves(session, Model, {m: (r.get("model_plugin", ""), users.get(r.get("model_owner")))
                                   for m, r in by_model.items()})
    _record_moves(session, BenchmarkType, {b: (r.get("benchmark_plugin", ""), users.get(r.get("benchmark_owner")))
                                           for b, r in by_type.items()})
    ok = [r for r in results if r.get("status") == "ok"]
    run_ids = {r["run_id"] for r in results if r.get("run_id")}
    known = set(session.scalars(select(Run.id).where(Run.id.in_(run_ids)))) if run_ids else set()
    _record_tree(session, results)
    ceilings = {(types[r["benchmark"]], r["benchmark_code_hash"]): r.get("ceiling") for r in ok}
    versions = {(types[r["benchmark"]], r["benchmark_code_hash"]): r.get("benchmark_version") for r in ok}
    instances = _instances(session, set(ceilings), ceilings, versions)

    if ok and session.get_bind().dialect.name == "postgresql":  # COPY: within 2x of Postgres's floor
        _copy_scores(session, ok, models, types, instances, known, counts)
    elif ok:
        score_rows = [_score_row(r, models, types, instances, known) for r in ok]
        existing = _existing_score_keys(session, [row["pair_key"] for row in score_rows])
        fresh = [row for row in score_rows
                 if (row["model_id"], row["benchmark_instance_id"], row["pair_key"]) not in existing]
        forced = forced_replacements(session, [
            row for row in score_rows if (row["model_id"], row["benchmark_instance_id"], row["pair_key"]) in existing])
        fresh += forced  # a forced re-score is the score in force; the one it replaces is kept in history
        if fresh:  # ON CONFLICT still guards against a concurrent ingest of the same spool
            insert_many(session, Score, fresh, conflict=SCORE_KEY)
            link_successors(session, forced)
        counts["scores"] += len(fresh)
        counts["duplicates"] += len(score_rows) - len(fresh)
    counts["failures"] += len(results) - len(ok)

    job_rows = [_job_row(r) for r in results if r.get("run_id") in known]  # e.g. a reproduced job has no run
    # `attempt` is not overwritten: the coordinator counts its resubmissions (the ledger's `retried`); a job
    # only knows Slurm's own requeues, and a retried task's result would say 1 again.
    insert_many(session, Job, job_rows, conflict=["run_id", "pair_key"], update=[
        "state", "stage", "reason", "slurm_job_id", "array_index", "node", "log_path", "log_tail", "score",
        "started_at", "ended_at"])
    session.flush()


SCORE_KEY = ["model_id", "benchmark_instance_id", "pair_key"]
COPY_COLUMNS = ["model_id", "benchmark_instance_id", "pair_key", "run_id", "score_raw", "score_ceiled", "error",
                "comment", "start_timestamp", "end_timestamp", "commit", "model_code_hash", "benchmark_code_hash",
                "lock_hash", "env_hash", "executor", "job_id", "array_index", "node", "elapsed_seconds",
                "max_rss_bytes"]


def _score_row(r: dict, models: dict, types: dict, instances: dict, known: set) -> dict:
    """The scores row of one successful result (ids resolved, text as the columns hold it)."""
    return {
        "model_id": models[r["model"]],
        "benchmark_instance_id": instances[(types[r["benchmark"]], r["benchmark_code_hash"])],
        "pair_key": r["pair_key"], "run_id": r.get("run_id") if r.get("run_id") in known else None,
        "score_raw": r.get("score_raw"), "score_ceiled": r.get("score_ceiled"), "error": _number(r.get("error")),
        "comment": r.get("comment"),
        "start_timestamp": _ts(r.get("started_at")), "end_timestamp": _ts(r.get("ended_at")),
        "commit": r["commit"], "model_code_hash": r["model_code_hash"],
        "benchmark_code_hash": r["benchmark_code_hash"], "lock_hash": r["lock_hash"], "env_hash": r["env_hash"],
        "executor": r.get("executor", ""), "job_id": str(r.get("job_id") or ""),
        "array_index": r.get("array_index"), "node": r.get("node") or "",
        "elapsed_seconds": r.get("elapsed_seconds"), "max_rss_bytes": r.get("max_rss_bytes"),
    }


def _iso(value: Any) -> Any:
    """A timestamp for COPY: checked like `_ts`, but an ISO text goes as it is (Postgres parses it)."""
    if not value:
        return None
    if isinstance(value, str):
        datetime.fromisoformat(value)  # a malformed timestamp fails here, as `_ts` would, not in the database
    return value


def _copy_scores(session: Session, ok: list[dict], models: dict, types: dict, instances: dict, known: set,
                 counts: dict[str, int]) -> None:
    """Postgres: the successful results' scores with one COPY (db.upsert.copy_new_rows), each row a tuple built
    straight from the result; the few whose key was already there go through the forced re-score check."""
    rows = []
    for r in ok:
        run_id = r.get("run_id")
        rows.append((models[r["model"]], instances[(types[r["benchmark"]], r["benchmark_code_hash"])],
                     r["pair_key"], run_id if run_id in known else None, r.get("score_raw"), r.get("score_ceiled"),
                     _number(r.get("error")), r.get("comment"), _iso(r.get("started_at")), _iso(r.get("ended_at")),
                     r["commit"], r["model_code_hash"], r["benchmark_code_hash"], r["lock_hash"], r["env_hash"],
                     r.get("executor", ""), str(r.get("job_id") or ""), r.get("array_index"), r.get("node") or "",
                     r.get("elapsed_seconds"), r.get("max_rss_bytes")))
    skipped = copy_new_rows(session, Score, COPY_COLUMNS, rows, SCORE_KEY)
    forced = forced_replacements(session, [_score_row(ok[i], models, types, instances, known) for i in skipped])
    if forced:  # a forced re-score is the score in force; the one it replaces is kept in history
        insert_many(session, Score, forced, conflict=SCORE_KEY)
        link_successors(session, forced)
    counts["scores"] += len(rows) - len(skipped) + len(forced)
    counts["duplicates"] += len(skipped) - len(forced)


def _record_tree(session: Session, results: list[dict]) -> None:
    """Each benchmark type's parent as the newest manifest declares it (results of older bundles, which name
    no parent, leave it as it is). One read for the batch; only the rows that changed are written."""
    declared = {r["benchmark"]: (r.get("benchmark_parent"), r.get("parent_note"), r.get("benchmark_runtime_id"))
                for r in results if "benchmark_parent" in r}
    if not declared:
        return
    recorded: dict[str, tuple] = {k: (p, n, i) for k, p, n, i in rows_by_key(
        session, BenchmarkType.identifier, list(declared), BenchmarkType.parent, BenchmarkType.parent_note,
        BenchmarkType.runtime_identifier)}
    for identifier, (parent, note, runtime) in declared.items():
        if recorded.get(identifier) != (parent, note, runtime):
            session.execute(update(BenchmarkType).where(BenchmarkType.identifier == identifier)
                            .values(parent=parent, parent_note=note, runtime_identifier=runtime))


def _existing_score_keys(session: Session, keys: list[str]) -> set[tuple[int, int, str]]:
    found: set[tuple[int, int, str]] = set()
    cols = (Score.model_id, Score.benchmark_instance_id, Score.pair_key)
    for i in range(0, len(keys), 5000):
        found.update(tuple(row) for row in session.execute(select(*cols).where(Score.pair_key.in_(keys[i:i + 5000]))))
    return found


def _job_row(r: dict) -> dict:
    return {
        "run_id": r["run_id"], "pair_key": r["pair_key"], "model": r["model"], "benchmark": r["benchmark"],
        "submitters": r.get("submitters", []),
        "state": r.get("state") or ("COMPLETED" if r.get("status") == "ok" else "FAILED"),
        "stage": r.get("stage"), "reason": r.get("reason"),
        "slurm_job_id": str(r.get("job_id") or "") or None, "array_index": r.get("array_index"),
        "node": r.get("node"), "attempt": r.get("attempt") or 1, "log_path": r.get("log_path"),
        "log_tail": r.get("log_tail"), "score": r.get("score_ceiled"),
        "started_at": _ts(r.get("started_at")), "ended_at": _ts(r.get("ended_at")),
    }
