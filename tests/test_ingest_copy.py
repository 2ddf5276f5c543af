"""Ingest on Postgres writes scores with COPY (db.upsert.copy_new_rows): every value must come back exactly as
SQLite's multi-row INSERT stores it, NULL and empty text kept apart, hostile text kept as text, and a second
ingest adds nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db import migrate
from db.ingest import ingest_results
from db.models import Score

HOSTILE = ["tab\there", "new\nline", "cr\rreturn", "back\\slash", "quote\"d", "comma,here", "\\N", "NULL",
           "", "NULL-" + "0" * 32, "ünïcode", "'; DROP TABLE scores; --"]


def results() -> list[dict]:
    rows = []
    for i, text in enumerate(HOSTILE):
        rows.append({"pair_key": f"k{i:03d}", "run_id": None, "model": f"m{i % 3}", "benchmark": "b",
                     "model_plugin": "m", "benchmark_plugin": "b", "domain": "d", "status": "ok",
                     "score_raw": 0.1 + i / 7, "score_ceiled": i / 13, "ceiling": 1.0, "commit": "c" * 40,
                     "model_code_hash": "mh", "benchmark_code_hash": "bh", "lock_hash": "lh", "env_hash": "eh",
                     "executor": "slurm", "job_id": text[:64], "array_index": None if i % 2 else i, "node": text,
                     "comment": None if i % 3 == 0 else text, "error": None if i % 2 else 0.01 * i,
                     "started_at": "2026-11-23T00:00:00+00:00", "ended_at": "2026-11-23T00:01:00.123456+00:00",
                     "elapsed_seconds": None if i % 4 == 0 else 1.5 * i, "max_rss_bytes": 2**40 + i})
    return rows


def stored(engine) -> list[tuple]:  # noqa: ANN001
    cols = [Score.pair_key, Score.score_raw, Score.score_ceiled, Score.error, Score.comment, Score.job_id,
            Score.array_index, Score.node, Score.start_timestamp, Score.end_timestamp, Score.elapsed_seconds,
            Score.max_rss_bytes, Score.executor, Score.commit]
    with Session(engine) as s:
        return [tuple(row) for row in s.execute(select(*cols).order_by(Score.pair_key))]


def test_copy_on_postgres_stores_exactly_what_sqlite_stores(pg_url, tmp_path):
    engines = {"postgres": create_engine(pg_url), "sqlite": create_engine(f"sqlite:///{tmp_path}/t.db")}
    try:
        for engine in engines.values():
            migrate.upgrade(engine)
            with Session(engine) as s, s.begin():
                assert ingest_results(s, results()) == {"scores": len(HOSTILE), "duplicates": 0, "failures": 0}
            with Session(engine) as s, s.begin():  # twice in one transaction: the staging table is emptied
                again = ingest_results(s, results() + results(), batch=len(HOSTILE))
            assert again == {"scores": 0, "duplicates": 2 * len(HOSTILE), "failures": 0}
        pg, lite = stored(engines["postgres"]), stored(engines["sqlite"])
        assert len(pg) == len(HOSTILE)
        for a, b in zip(pg, lite):
            # SQLite drops the time zone of a stored datetime: compare the instants, then every other value
            assert a[8].replace(tzinfo=None) == b[8].replace(tzinfo=None) and a[9].replace(tzinfo=None) == \
                b[9].replace(tzinfo=None)
            assert a[:8] + a[10:] == b[:8] + b[10:]
        nodes = [row[7] for row in pg]
        assert nodes == HOSTILE and [row[4] for row in pg].count(None) == 4  # '' and 'NULL' stay text
    finally:
        for engine in engines.values():
            engine.dispose()


def test_copy_ingest_on_postgres_keeps_forced_rescores_and_duplicates_within_a_load(pg_url):
    """The COPY path's fallback: a key already in force from another run that ended later is a forced re-score
    (the old score moves to the history, linked to the new one); the same key twice in one load is one score."""
    from db.models import Run, ScoreHistory

    engine = create_engine(pg_url)
    try:
        migrate.upgrade(engine)
        with Session(engine) as s, s.begin():
            s.add_all([Run(id=r, head_commit="c", domain="d", executor="local") for r in ("run-a", "run-b")])
        first, later = results()[:3], results()[:3]
        for row in first:
            row["run_id"] = "run-a"
        for row in later:
            row.update(run_id="run-b", ended_at="2026-11-24T00:00:00+00:00", score_ceiled=0.99)
        with Session(engine) as s, s.begin():  # a key twice in one load: the straight COPY fails, the rest holds
            twice = results()[3:4] * 2  # no run: no job row, whose upsert would refuse the same key twice
            assert ingest_results(s, first + twice) == {"scores": 4, "duplicates": 1, "failures": 0}
        with Session(engine) as s, s.begin():
            assert ingest_results(s, later[:2] + results()[4:5]) == {"scores": 3, "duplicates": 0, "failures": 0}
        with Session(engine) as s:
            in_force = dict(s.execute(select(Score.pair_key, Score.run_id)).all())
            assert in_force == {"k000": "run-b", "k001": "run-b", "k002": "run-a", "k003": None, "k004": None}
            history = s.execute(select(ScoreHistory.pair_key, ScoreHistory.run_id, ScoreHistory.superseded_by)
                                .order_by(ScoreHistory.pair_key)).all()
            new_ids = dict(s.execute(select(Score.pair_key, Score.id)).all())
            assert [tuple(h) for h in history] == [("k000", "run-a", new_ids["k000"]),
                                                   ("k001", "run-a", new_ids["k001"])]
        with Session(engine) as s, s.begin():  # the older run's result arriving late replaces nothing
            assert ingest_results(s, first) == {"scores": 0, "duplicates": 3, "failures": 0}
    finally:
        engine.dispose()
