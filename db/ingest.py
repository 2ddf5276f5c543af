"""Spooled results -> database rows, idempotently and in batches.

A result is a plain dict (the worker's spool JSON, see docs/spool.md). Reference
rows (users, models, benchmarks) are created in bulk per batch; scores are
inserted with ON CONFLICT DO NOTHING on the score key, so ingesting the same spool
twice adds nothing; job rows are upserted with their final state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from db.history import forced_replacements, link_successors
from db.models import BenchmarkInstance, BenchmarkType, Job, Model, Run, Score, User
from db.upsert import copy_new_rows, insert_many

BATCH = 2000


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def ensure_rows(session: Session, model: Any, key: str, rows: dict[Any, dict]) -> dict[Any, int]:
    """Insert the missing rows of a table keyed by a unique column; return key -> id for all of them."""
    if not rows:
        return {}
    column = getattr(model, key)
    keys = list(rows)
    found: dict[Any, int] = {}
    for i in range(0, len(keys), 900):
        chunk = keys[i:i + 900]
        found.update(dict(session.execute(select(column, model.id).where(column.in_(chunk))).all()))
    missing = [rows[k] for k in keys if k not in found]
    if missing:
        insert_many(session, model, missing)
        for i in range(0, len(keys), 900):
            chunk = [k for k in keys[i:i + 900] if k not in found]
            if chunk:
                found.update(dict(session.execute(select(column, model.id).where(column.in_(chunk))).all()))
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
    """Write results in batches of `batch`, one transaction each (the caller's session commits).

    Returns counts: scores inserted, duplicates skipped, failures recorded.
    """
    counts = {"scores": 0, "duplicates": 0, "failures": 0}
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
    One read per 900 ids finds the rows that moved (almost always none); only those are updated."""
    wanted = {identifier: moved for identifier, moved in plugins.items() if moved[0]}
    keys = list(wanted)
    recorded: dict[str, str] = {}
    for i in range(0, len(keys), 900):
        recorded.update(dict(session.execute(select(model.identifier, model.plugin)
                                             .where(model.identifier.in_(keys[i:i + 900]))).all()))
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
    models = ensure_rows(session, Model, "identifier", {
        r["model"]: {"identifier": r["model"], "plugin": r.get("model_plugin", ""), "domain": r.get("domain", ""),
                     "owner_id": users.get(r.get("model_owner")), "public": True} for r in results})
    types = ensure_rows(session, BenchmarkType, "identifier", {
        r["benchmark"]: {"identifier": r["benchmark"], "plugin": r.get("benchmark_plugin", ""),
                         "domain": r.get("domain", ""), "owner_id": users.get(r.get("benchmark_owner"))}
        for r in results})
    _record_moves(session, Model, {r["model"]: (r.get("model_plugin", ""), users.get(r.get("model_owner")))
                                   for r in results})
    _record_moves(session, BenchmarkType, {r["benchmark"]: (r.get("benchmark_plugin", ""),
                                                            users.get(r.get("benchmark_owner"))) for r in results})
    ok = [r for r in results if r.get("status") == "ok"]
    run_ids = {r["run_id"] for r in results if r.get("run_id")}
    known = set(session.scalars(select(Run.id).where(Run.id.in_(run_ids)))) if run_ids else set()
    _record_tree(session, results)
    ceilings = {(types[r["benchmark"]], r["benchmark_code_hash"]): r.get("ceiling") for r in ok}
    versions = {(types[r["benchmark"]], r["benchmark_code_hash"]): r.get("benchmark_version") for r in ok}
    instances = _instances(session, set(ceilings), ceilings, versions)

    score_rows = []
    for r in ok:
        score_rows.append({
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
        })
    if score_rows and session.get_bind().dialect.name == "postgresql":  # COPY: within 2x of Postgres's floor
        fresh_count = copy_new_rows(session, Score, score_rows, ["model_id", "benchmark_instance_id", "pair_key"])
        counts["scores"] += fresh_count
        counts["duplicates"] += len(score_rows) - fresh_count
    elif score_rows:
        existing = _existing_score_keys(session, [row["pair_key"] for row in score_rows])
        fresh = [row for row in score_rows
                 if (row["model_id"], row["benchmark_instance_id"], row["pair_key"]) not in existing]
        forced = forced_replacements(session, [
            row for row in score_rows if (row["model_id"], row["benchmark_instance_id"], row["pair_key"]) in existing])
        fresh += forced  # a forced re-score is the score in force; the one it replaces is kept in history
        if fresh:  # ON CONFLICT still guards against a concurrent ingest of the same spool
            insert_many(session, Score, fresh, conflict=["model_id", "benchmark_instance_id", "pair_key"])
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


def _record_tree(session: Session, results: list[dict]) -> None:
    """Each benchmark type's parent as the newest manifest declares it (results of older bundles, which name
    no parent, leave it as it is). One read for the batch; only the rows that changed are written."""
    declared = {r["benchmark"]: (r.get("benchmark_parent"), r.get("parent_note")) for r in results
                if "benchmark_parent" in r}
    if not declared:
        return
    keys = list(declared)
    recorded: dict[str, tuple] = {}
    for i in range(0, len(keys), 900):
        recorded.update({k: (p, n) for k, p, n in session.execute(
            select(BenchmarkType.identifier, BenchmarkType.parent, BenchmarkType.parent_note)
            .where(BenchmarkType.identifier.in_(keys[i:i + 900])))})
    for identifier, (parent, note) in declared.items():
        if recorded.get(identifier) != (parent, note):
            session.execute(update(BenchmarkType).where(BenchmarkType.identifier == identifier)
                            .values(parent=parent, parent_note=note))


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
