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
