"""Read-side queries: what is already scored, the leaderboard, a run's jobs."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import String, any_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from db.models import BenchmarkInstance, BenchmarkType, Job, Model, Run, Score
from db.states import OPEN, TERMINAL


def iso_utc(value: datetime | None) -> str | None:
    """ISO time in UTC; SQLite hands back naive datetimes, which we always stored as UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def scored_keys(session: Session, keys: list[str]) -> set[str]:
    """The subset of `keys` that already has a score, as a set operation in the database.

    Postgres: one query with the keys as a single array parameter (`= ANY(:keys)`).
    SQLite: one query with the keys as a single JSON array parameter (`IN json_each(:keys)`).
    Either way one parameter, so neither SQLAlchemy nor the driver expands 100,000 placeholders.
    """
    if not keys:
        return set()
    # When the candidates outnumber half the table, reading the key index once and intersecting
    # in memory beats probing the index for each candidate (a hash join, chosen by cardinality).
    total = session.scalar(select(func.count()).select_from(Score)) or 0
    column = Score.__table__.c.pair_key  # Core rows, read as row[0]: `.scalars()` costs 2.5 times as much per row
    if total <= 2 * len(keys):  # this reads up to the whole column
        # the column (at most twice the keys) made a set, probed with the keys: half the work of a set of the
        # keys probed with the column, and the answer holds the caller's own strings
        return {row[0] for row in session.connection().execute(select(column))}.intersection(keys)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        param = bindparam("keys", value=list(keys), type_=ARRAY(String))
        return {row[0] for row in session.connection().execute(select(column).where(column == any_(param)))}
    if dialect == "sqlite":
        rows = session.execute(text("SELECT pair_key FROM scores WHERE pair_key IN (SELECT value FROM json_each(:keys))"),
                               {"keys": json.dumps(list(keys))})
        return {row[0] for row in rows}
    found: set[str] = set()
    for i in range(0, len(keys), 1000):
        found.update(session.scalars(select(Score.pair_key).where(Score.pair_key.in_(keys[i:i + 1000]))))
    return found


def shared_env_scores(session: Session, wanted: list[tuple[str, str, str, str]]) -> set[tuple[str, str, str, str]]:
    """Of `wanted` (model id, benchmark id, model code hash, benchmark code hash), those with a score made before
    each side had its own environment: its lock hash names one environment (no `+`). Planning then checks that
    score's key (pipeline/stages/pair_envs.py). Read per chunk of the models asked about."""
    wanted_set = set(wanted)
    models = sorted({w[0] for w in wanted_set})
    found: set[tuple[str, str, str, str]] = set()
    for i in range(0, len(models), 500):
        rows = session.execute(
            select(Model.identifier, BenchmarkType.identifier, Score.model_code_hash, Score.benchmark_code_hash)
            .join(Model, Score.model_id == Model.id)
            .join(BenchmarkInstance, Score.benchmark_instance_id == BenchmarkInstance.id)
            .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id)
            .where(Model.identifier.in_(models[i:i + 500]), Score.lock_hash.not_like("%+%")))
        found.update(row for row in map(tuple, rows) if row in wanted_set)
    return found


def in_flight_keys(session: Session, keys: list[str]) -> dict[str, str]:
    """Keys among `keys` whose job is still PENDING or RUNNING in some run -> that run's id."""
    wanted = set(keys)
    rows = session.execute(select(Job.pair_key, Job.run_id).where(Job.state.in_(OPEN)))
    return {key: run_id for key, run_id in rows if key in wanted}


def leaderboard_rows(session: Session) -> list[dict]:
    """The newest score of each model x benchmark, with its provenance."""
    stmt = (
        select(Model.identifier, BenchmarkType.identifier, Score, BenchmarkInstance.ceiling)
        .join(Model, Score.model_id == Model.id)
        .join(BenchmarkInstance, Score.benchmark_instance_id == BenchmarkInstance.id)
        .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id)
        .order_by(Score.end_timestamp, Score.id)
    )
    newest: dict[tuple[str, str], dict] = {}
    for model, benchmark, score, ceiling in session.execute(stmt):
        newest[(model, benchmark)] = {
            "id": score.id, "model": model, "benchmark": benchmark, "score": score.score_ceiled,
            "score_raw": score.score_raw, "ceiling": ceiling, "error": score.error, "commit": score.commit,
            "model_code_hash": score.model_code_hash, "benchmark_code_hash": score.benchmark_code_hash,
            "lock_hash": score.lock_hash, "env_hash": score.env_hash, "job_id": score.job_id,
            "array_index": score.array_index, "executor": score.executor, "node": score.node,
            "run_id": score.run_id,
            "start": iso_utc(score.start_timestamp),
            "end": iso_utc(score.end_timestamp),
            "elapsed_seconds": score.elapsed_seconds,
        }
    return sorted(newest.values(), key=lambda r: (r["model"], r["benchmark"]))


def run_jobs(session: Session, run_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.model, Job.benchmark)))


def get_run(session: Session, run_id: str | None) -> Run | None:
    if run_id:
        return session.get(Run, run_id)
    return session.scalars(select(Run).order_by(Run.created_at.desc()).limit(1)).first()


def benchmark_tree_rows(session: Session) -> list[tuple]:
    """Every benchmark type: identifier, domain, declared parent, why it is unknown, its latest declared version,
    the identifier it runs as (None: not read), whether an admin shows it (None: not set)."""
    latest = (select(BenchmarkInstance.benchmark_type_id, func.max(BenchmarkInstance.declared_version).label("v"))
              .group_by(BenchmarkInstance.benchmark_type_id).subquery())
    stmt = (select(BenchmarkType.identifier, BenchmarkType.domain, BenchmarkType.parent, BenchmarkType.parent_note,
                   latest.c.v, BenchmarkType.runtime_identifier, BenchmarkType.visible)
            .outerjoin(latest, latest.c.benchmark_type_id == BenchmarkType.id)
            .order_by(BenchmarkType.identifier))
    return [tuple(row) for row in session.execute(stmt)]  # type: ignore[misc]


def latest_version_scores(session: Session) -> list[tuple[str, str, str, float | None, float | None, int]]:
    """Each model x benchmark's newest score on the benchmark's latest declared version (an instance whose
    version could not be read counts as the latest only when no instance of that benchmark has one):
    model, model domain, benchmark, ceiled, raw, score id."""
    stmt = _on_latest_version(select(Model.identifier, Model.domain, BenchmarkType.identifier, Score.score_ceiled,
                                     Score.score_raw, Score.id))
    newest: dict[tuple[str, str], tuple] = {}
    for model, domain, benchmark, ceiled, raw, score_id in session.execute(stmt):
        newest[(model, benchmark)] = (model, domain, benchmark, ceiled, raw, score_id)
    return list(newest.values())


def newest_job_states(session: Session) -> dict[tuple[str, str], tuple[str, str | None, str | None]]:
    """model x benchmark -> the state, stage and reason of its newest ended job (any run)."""
    stmt = (select(Job.model, Job.benchmark, Job.state, Job.stage, Job.reason)
            .where(Job.state.in_(list(TERMINAL))).order_by(Job.ended_at, Job.id))
    return {(m, b): (s, stage, reason) for m, b, s, stage, reason in session.execute(stmt)}


def scored_versions(session: Session) -> dict[tuple[str, str], set[int | None]]:
    """model x benchmark -> the declared versions it has a score on."""
    stmt = (select(Model.identifier, BenchmarkType.identifier, BenchmarkInstance.declared_version).distinct()
            .select_from(Score).join(Model, Score.model_id == Model.id)
            .join(BenchmarkInstance, Score.benchmark_instance_id == BenchmarkInstance.id)
            .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id))
    found: dict[tuple[str, str], set[int | None]] = {}
    for model, benchmark, version in session.execute(stmt):
        found.setdefault((model, benchmark), set()).add(version)
    return found


def latest_version_score_rows(session: Session) -> list[tuple]:
    """Every score on its benchmark's latest declared version (as `latest_version_scores`, but all of them, for a
    board that picks by its own rule): model, benchmark, ceiled, raw, end time, score id, oldest first."""
    stmt = _on_latest_version(select(Model.identifier, BenchmarkType.identifier, Score.score_ceiled, Score.score_raw,
                                     Score.end_timestamp, Score.id))
    return [tuple(row) for row in session.execute(stmt)]


def _on_latest_version(stmt):  # noqa: ANN001, ANN202 - a Select of score columns
    """`stmt` (columns of scores, their model and benchmark type) narrowed to scores on their benchmark's latest
    declared version (or every version where none declares one), oldest first: what both latest-version queries
    share."""
    latest = (select(BenchmarkInstance.benchmark_type_id, func.max(BenchmarkInstance.declared_version).label("v"))
              .group_by(BenchmarkInstance.benchmark_type_id).subquery())
    return (stmt.join(Model, Score.model_id == Model.id)
            .join(BenchmarkInstance, Score.benchmark_instance_id == BenchmarkInstance.id)
            .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id)
            .join(latest, latest.c.benchmark_type_id == BenchmarkType.id)
            .where((latest.c.v.is_(None)) | (BenchmarkInstance.declared_version == latest.c.v))
            .order_by(Score.end_timestamp, Score.id))


def model_flags(session: Session) -> dict[str, tuple[str, bool]]:
    """model -> (its domain, public)."""
    return {m: (d, bool(p)) for m, d, p in session.execute(select(Model.identifier, Model.domain, Model.public))}
