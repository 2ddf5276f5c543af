"""Plan 1,000 models x 100 benchmarks with half of the pairs already scored, on SQLite and Postgres.

Ours: `make_plan`, whose "already scored?" step is one set query (Postgres: `= ANY(:keys)`).
Baselines, measured in the same run on the same data, each giving the same plan:
- prepared: what a competent engineer writes first: one SQLAlchemy Core statement, built once, executed per pair
  on one connection (the compiled statement is cached; only the parameter changes);
- orm: a new ORM `select` per pair in a session (the naive version).
ratio = prepared baseline seconds / ours seconds (the honest one); ratio_orm likewise; ours should stay under 1 s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import last_line, synthetic_repo, timed
from sqlalchemy import bindparam, create_engine, select
from sqlalchemy.orm import Session

from db import migrate
from db.ingest import ingest_results
from db.models import Run, Score
from db.queries import scored_keys
from pipeline.config import load_settings
from pipeline.detect import detect_all
from pipeline.plan import make_plan
from pipeline.run import python_version


def run(engine, catalog, change, locks_dir: Path, uv: str, pyver: str) -> dict:
    figures: dict = {}
    migrate.upgrade(engine)

    def plan_with(lookup):
        return make_plan(change, catalog, locks_dir=locks_dir, uv=uv, python_version=pyver, scored=lookup)

    empty = plan_with(lambda keys: set())
    half = empty.to_run[::2]
    with Session(engine) as s, s.begin():
        s.add(Run(id="bench", head_commit=catalog.commit, domain=catalog.domain_root, executor="none"))
    results = [{"pair_key": p.key, "run_id": None, "model": p.model, "benchmark": p.benchmark, "status": "ok",
                "score_raw": 0.5, "score_ceiled": 0.5, "ceiling": 1.0, "commit": catalog.commit,
                "model_code_hash": p.model_code_hash, "benchmark_code_hash": p.benchmark_code_hash,
                "lock_hash": p.lock.lock_hash, "env_hash": p.lock.env_hash} for p in half]
    with timed(figures, "prefill_seconds"), Session(engine) as s, s.begin():
        ingest_results(s, results)

    def ours(keys):
        with Session(engine) as s:
            return scored_keys(s, keys)

    def per_pair(keys):
        found = set()
        with Session(engine) as s:
            for key in keys:
                if s.execute(select(Score.id).where(Score.pair_key == key)).first():
                    found.add(key)
        return found

    prepared_stmt = select(Score.pair_key).where(Score.pair_key == bindparam("key")).limit(1)

    def prepared(keys):
        with engine.connect() as conn:
            return {key for key in keys if conn.execute(prepared_stmt, {"key": key}).first() is not None}

    plan_with(ours)  # warm caches and connections
    with timed(figures, "ours_seconds"):
        mine = plan_with(ours)
    with timed(figures, "prepared_baseline_seconds"):
        fair = plan_with(prepared)
    with timed(figures, "orm_baseline_seconds"):
        base = plan_with(per_pair)
    assert len(mine.to_run) == len(base.to_run) == len(fair.to_run) == len(empty.to_run) - len(half)
    assert {p.key for p in mine.to_run} == {p.key for p in base.to_run} == {p.key for p in fair.to_run}
    figures.update(pairs=len(empty.to_run), already_scored=len(mine.already_scored),
                   ratio=round(figures["prepared_baseline_seconds"] / figures["ours_seconds"], 1),
                   ratio_orm=round(figures["orm_baseline_seconds"] / figures["ours_seconds"], 1))
    return figures


def report(backend: str, f: dict) -> None:
    print(f"{backend}: ours {f['ours_seconds']} s; per-pair prepared statement {f['prepared_baseline_seconds']} s "
          f"(ratio {f['ratio']}); per-pair ORM select {f['orm_baseline_seconds']} s (ratio {f['ratio_orm']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--benchmarks", type=int, default=100)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    settings = load_settings()
    pyver = python_version(settings.python)
    out: dict = {"models": args.models, "benchmarks": args.benchmarks}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        repo = synthetic_repo(tmp_path / "repo", args.models, args.benchmarks)
        with timed(out, "catalog_seconds"):
            change, catalog = detect_all(repo, "HEAD")
        locks = tmp_path / "locks"
        print(f"catalog of {len(catalog.plugins)} plugins read from git in {out['catalog_seconds']} s")
        engine = create_engine(f"sqlite:///{tmp_path}/plan.db")
        out["sqlite"] = run(engine, catalog, change, locks, settings.uv, pyver)
        engine.dispose()
        report("sqlite", out["sqlite"])
        if not args.no_postgres:
            from tests.services import Postgres

            server = Postgres(tmp_path / "pg")
            try:
                engine = create_engine(server.create_database("planbench"))
                out["postgres"] = run(engine, catalog, change, locks, settings.uv, pyver)
                engine.dispose()
            finally:
                server.stop()
            report("postgres", out["postgres"])
    backends = [out[k] for k in ("sqlite", "postgres") if k in out]
    out["ratio"] = min(b["ratio"] for b in backends)
    out["ours_seconds"] = max(b["ours_seconds"] for b in backends)
    out["ratio_definition"] = ("prepared_baseline_seconds / ours_seconds, the smaller of both backends (higher is "
                               "better); ours < 1 s")
    last_line(out)


if __name__ == "__main__":
    main()
