"""Plan 1,000 models x 100 benchmarks with half of the pairs already scored, on SQLite and Postgres.

Ours: `make_plan`, whose "already scored?" step is one set query (Postgres: `= ANY(:keys)`).
Baseline: the same plan with one query per pair. Measured in the same run, on the same data.
ratio = baseline seconds / ours seconds (target >= 50); ours should stay under 1 s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import last_line, synthetic_repo, timed
from sqlalchemy import create_engine, select
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

    plan_with(ours)  # warm caches and connections
    with timed(figures, "ours_seconds"):
        mine = plan_with(ours)
    with timed(figures, "baseline_seconds"):
        base = plan_with(per_pair)
    assert len(mine.to_run) == len(base.to_run) == len(empty.to_run) - len(half)
    assert {p.key for p in mine.to_run} == {p.key for p in base.to_run}
    figures.update(pairs=len(empty.to_run), already_scored=len(mine.already_scored),
                   ratio=round(figures["baseline_seconds"] / figures["ours_seconds"], 1))
    return figures


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
        print(f"sqlite: ours {out['sqlite']['ours_seconds']} s, per-pair baseline "
              f"{out['sqlite']['baseline_seconds']} s, ratio {out['sqlite']['ratio']}")
        if not args.no_postgres:
            from tests.services import Postgres

            server = Postgres(tmp_path / "pg")
            try:
                engine = create_engine(server.create_database("planbench"))
                out["postgres"] = run(engine, catalog, change, locks, settings.uv, pyver)
                engine.dispose()
            finally:
                server.stop()
            print(f"postgres: ours {out['postgres']['ours_seconds']} s, per-pair baseline "
                  f"{out['postgres']['baseline_seconds']} s, ratio {out['postgres']['ratio']}")
    backends = [out[k] for k in ("sqlite", "postgres") if k in out]
    out["ratio"] = min(b["ratio"] for b in backends)
    out["ours_seconds"] = max(b["ours_seconds"] for b in backends)
    out["ratio_definition"] = "baseline_seconds / ours_seconds (higher is better); target >= 50, ours < 1 s"
    last_line(out)


if __name__ == "__main__":
    main()
