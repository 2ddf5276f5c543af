"""Ingest 100,000 scores into Postgres: ours (batched upserts) against per-row get-or-create.

Ours: `db.ingest.ingest_results` as `pipeline.stages.ingest.ingest_spool` calls it: one transaction per `db.ingest.BATCH`
results (20,000), each one COPY of the scores (straight into the table under a savepoint; into a staging table and
INSERT ... ON CONFLICT DO NOTHING when a key is already there, as on the re-ingest measured after it).
Baseline (the Brain-Score way): for each score, get-or-create its model, benchmark type and
instance, then get-or-create the score, committing each row. It runs on `--baseline-rows` rows
(default 10,000, to keep the run short) and its per-row time is scaled to the full count.
Cached baseline (what a competent engineer writes): one loop over every row, model, benchmark type and
instance ids cached in dicts (one lookup each), one ORM insert per score, one commit at the end; on all rows,
and its rows are checked to be the same as ours.
ratio = cached baseline seconds / ours seconds (the honest one); ratio_get_or_create likewise.
Floor (what the machine can do): Postgres `COPY` of the same score rows into the same table, with the same
indexes and constraints (a database migrated like ours), after inserting the few models, benchmark types and
instances they reference; one transaction, no idempotence check. Its rows are checked equal to ours.
floor_ratio = ours seconds / floor seconds (lower is better; 1.0 would be COPY itself).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import last_line, timed
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from db import migrate
from db.ingest import BATCH, ingest_results
from db.models import BenchmarkInstance, BenchmarkType, Model, Score


def results(n: int, prefix: str) -> list[dict]:
    return [{"pair_key": f"{prefix}{i:08d}", "run_id": None, "model": f"model-{i % 1000}",
             "benchmark": f"bench-{(i // 1000) % 100}", "model_plugin": "m", "benchmark_plugin": "b", "domain": "d",
             "status": "ok", "score_raw": 0.5, "score_ceiled": 0.5, "ceiling": 1.0, "commit": "c" * 40,
             "model_code_hash": "mh", "benchmark_code_hash": f"bh{(i // 1000) % 100}", "lock_hash": "lh",
             "env_hash": "eh", "executor": "slurm", "job_id": "1", "array_index": i % 1000, "node": "n1",
             "started_at": "2026-11-23T00:00:00+00:00", "ended_at": "2026-11-23T00:01:00+00:00"} for i in range(n)]


def get_or_create(session: Session, model, **keys):  # noqa: ANN001
    row = session.scalars(select(model).filter_by(**keys)).first()
    if row is None:
        row = model(**keys)
        session.add(row)
        session.flush()
    return row


def baseline(engine, rows: list[dict]) -> None:  # noqa: ANN001
    for r in rows:
        with Session(engine) as s, s.begin():
            model = get_or_create(s, Model, identifier=r["model"], plugin=r["model_plugin"], domain=r["domain"])
            btype = get_or_create(s, BenchmarkType, identifier=r["benchmark"], plugin=r["benchmark_plugin"],
                                  domain=r["domain"])
            inst = get_or_create(s, BenchmarkInstance, benchmark_type_id=btype.id, version=r["benchmark_code_hash"])
            get_or_create(s, Score, model_id=model.id, benchmark_instance_id=inst.id, pair_key=r["pair_key"],
                          score_raw=r["score_raw"], score_ceiled=r["score_ceiled"], commit=r["commit"],
                          model_code_hash=r["model_code_hash"], benchmark_code_hash=r["benchmark_code_hash"],
                          lock_hash=r["lock_hash"], env_hash=r["env_hash"])


def cached_baseline(engine, rows: list[dict]) -> None:  # noqa: ANN001
    models: dict[str, int] = {}
    types: dict[str, int] = {}
    instances: dict[tuple[int, str], int] = {}
    with Session(engine) as s, s.begin():
        for r in rows:
            if r["model"] not in models:
                models[r["model"]] = get_or_create(s, Model, identifier=r["model"], plugin=r["model_plugin"],
                                                   domain=r["domain"]).id
            if r["benchmark"] not in types:
                types[r["benchmark"]] = get_or_create(s, BenchmarkType, identifier=r["benchmark"],
                                                      plugin=r["benchmark_plugin"], domain=r["domain"]).id
            ikey = (types[r["benchmark"]], r["benchmark_code_hash"])
            if ikey not in instances:
                instances[ikey] = get_or_create(s, BenchmarkInstance, benchmark_type_id=ikey[0], version=ikey[1]).id
            s.add(Score(model_id=models[r["model"]], benchmark_instance_id=instances[ikey], pair_key=r["pair_key"],
                        score_raw=r["score_raw"], score_ceiled=r["score_ceiled"], commit=r["commit"],
                        model_code_hash=r["model_code_hash"], benchmark_code_hash=r["benchmark_code_hash"],
                        lock_hash=r["lock_hash"], env_hash=r["env_hash"]))


SCORE_COLUMNS = ("model_id", "benchmark_instance_id", "pair_key", "score_raw", "score_ceiled", "commit",
                 "model_code_hash", "benchmark_code_hash", "lock_hash", "env_hash", "executor", "job_id",
                 "array_index", "node", "start_timestamp", "end_timestamp")


def _copy(cur, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:  # noqa: ANN001
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    buffer.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)


def copy_floor(engine, rows: list[dict]) -> None:  # noqa: ANN001
    """FLOOR: every row by `COPY ... FROM STDIN` (CSV) in one transaction: the few models, benchmark types and
    instances (their ids read back with one SELECT each), then the scores: the least work Postgres can be asked
    to do to hold these scores, with nothing checked."""
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        first = rows[0]
        _copy(cur, "models", ("identifier", "plugin", "domain", "public"),
              [(m, first["model_plugin"], first["domain"], True) for m in sorted({r["model"] for r in rows})])
        _copy(cur, "benchmark_types", ("identifier", "plugin", "domain"),
              [(b, first["benchmark_plugin"], first["domain"]) for b in sorted({r["benchmark"] for r in rows})])
        cur.execute("SELECT identifier, id FROM models")
        models = dict(cur.fetchall())
        cur.execute("SELECT identifier, id FROM benchmark_types")
        types = dict(cur.fetchall())
        _copy(cur, "benchmark_instances", ("benchmark_type_id", "version", "ceiling"),
              [(t, v, 1.0) for t, v in sorted({(types[r["benchmark"]], r["benchmark_code_hash"]) for r in rows})])
        cur.execute("SELECT benchmark_type_id, version, id FROM benchmark_instances")
        instances = {(t, v): i for t, v, i in cur.fetchall()}
        _copy(cur, "scores", SCORE_COLUMNS, [
            (models[r["model"]], instances[(types[r["benchmark"]], r["benchmark_code_hash"])], r["pair_key"],
             r["score_raw"], r["score_ceiled"], r["commit"], r["model_code_hash"], r["benchmark_code_hash"],
             r["lock_hash"], r["env_hash"], r["executor"], r["job_id"], r["array_index"], r["node"],
             r["started_at"], r["ended_at"]) for r in rows])
        conn.commit()
    finally:
        conn.close()


def score_rows(engine) -> set[tuple]:  # noqa: ANN001
    """Every score as (pair key, model id text, benchmark id text, version, ceiled score): to compare databases."""
    stmt = (select(Score.pair_key, Model.identifier, BenchmarkType.identifier, BenchmarkInstance.version,
                   Score.score_ceiled)
            .join(Model, Score.model_id == Model.id)
            .join(BenchmarkInstance, Score.benchmark_instance_id == BenchmarkInstance.id)
            .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id))
    with Session(engine) as s:
        return set(s.execute(stmt).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.baseline_rows = 200, 20
    from tests.services import Postgres

    out: dict = {"rows": args.rows, "baseline_rows_measured": args.baseline_rows}
    with tempfile.TemporaryDirectory() as tmp:
        server = Postgres(Path(tmp) / "pg")
        try:
            ours_engine = create_engine(server.create_database("ours"))
            base_engine = create_engine(server.create_database("base"))
            cached_engine = create_engine(server.create_database("cached"))
            floor_engine = create_engine(server.create_database("floor"))
            for engine in (ours_engine, base_engine, cached_engine, floor_engine):
                migrate.upgrade(engine)
            data = results(args.rows, "k")
            with timed(out, "ours_seconds"), Session(ours_engine) as s:
                for i in range(0, len(data), BATCH):  # as pipeline.stages.ingest.ingest_spool does
                    with s.begin():
                        ingest_results(s, data[i:i + BATCH])
            with timed(out, "ours_again_seconds"), Session(ours_engine) as s, s.begin():
                again = ingest_results(s, data)
            with Session(ours_engine) as s:
                assert s.scalar(select(func.count()).select_from(Score)) == args.rows
            assert again["scores"] == 0 and again["duplicates"] == args.rows
            print(f"ours: {args.rows} scores in {out['ours_seconds']} s; ingesting them again added 0 "
                  f"in {out['ours_again_seconds']} s")
            with timed(out, "floor_seconds"):
                copy_floor(floor_engine, data)
            assert score_rows(floor_engine) == score_rows(ours_engine), "the COPY floor wrote other rows"
            print(f"floor (COPY): {args.rows} scores in {out['floor_seconds']} s (same rows as ours)")
            with timed(out, "cached_baseline_seconds"):
                cached_baseline(cached_engine, data)
            assert score_rows(cached_engine) == score_rows(ours_engine), "the cached baseline wrote other rows"
            print(f"cached baseline: {args.rows} scores in {out['cached_baseline_seconds']} s (same rows as ours)")
            subset = results(args.baseline_rows, "k")
            with timed(out, "baseline_measured_seconds"):
                baseline(base_engine, subset)
            out["get_or_create_baseline_seconds"] = round(out["baseline_measured_seconds"] * args.rows
                                                          / args.baseline_rows, 2)
            print(f"get-or-create baseline: {args.baseline_rows} rows in {out['baseline_measured_seconds']} s, "
                  f"scaled to {args.rows}: {out['get_or_create_baseline_seconds']} s")
            for engine in (ours_engine, base_engine, cached_engine, floor_engine):
                engine.dispose()
        finally:
            server.stop()
    out["ratio"] = round(out["cached_baseline_seconds"] / out["ours_seconds"], 1)
    out["ratio_get_or_create"] = round(out["get_or_create_baseline_seconds"] / out["ours_seconds"], 1)
    out["rows_per_second_ours"] = round(args.rows / out["ours_seconds"])
    out["floor_ratio"] = round(out["ours_seconds"] / out["floor_seconds"], 2)
    out["ratio_definition"] = ("cached_baseline_seconds / ours_seconds (higher is better); floor_ratio = "
                               "ours_seconds / COPY floor seconds (lower is better, goal <= 2)")
    out["note"] = "measured on a shared 2-core machine under load: compare figures of the same run only"
    print(f"ratio {out['ratio']} against the cached loop, {out['ratio_get_or_create']} against get-or-create; "
          f"floor_ratio {out['floor_ratio']} against COPY")
    last_line(out)


if __name__ == "__main__":
    main()
