"""`score-plugins export brainscore --out FILE`: the scores in force as rows of brain-score.org's `brainscore_score`
table (github brain-score/brain-score.web, benchmarks/models.py 277-290), written as a Django fixture the website
loads with `manage.py loaddata FILE` (the shape of its own benchmarks/fixtures/fixture-scores.json): each row names
its benchmark instance by (identifier, version) and its model by (name, owner email), as the website's natural keys.
The identifier is the one the benchmark runs as (the website's key, brainscore_core database.py 358); the command's
own output lists both identifiers of every row. A pair that failed through its plugins is a row with no score and
an error comment (the website shows it as X, mv.sql 405).

`--rows scores` (default) writes score rows only: their benchmark types, instances, models and users must exist on
the website (its own submissions made them). `--rows all` adds the benchmark types (the board's tree and
visibility), instances and models, for a deployment this pipeline feeds: loading them replaces those rows' fields
(Django updates a row it finds by key), so it is not for brain-score.org's own database. Users are never written
(an update would overwrite a login); the owners to create are listed."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from db.models import BenchmarkInstance, BenchmarkType, Model, Score, User
from db.queries import iso_utc, newest_job_states
from db.states import State
from pipeline.atomic import write_atomically
from pipeline.database import Database
from pipeline.errors import BadInput
from pipeline.leaderboard.hierarchy import domain_name
from pipeline.leaderboard.standings import INFRASTRUCTURE_ENDS, DomainBoard


def _when(value: datetime | None) -> str | None:
    return iso_utc(value)


def score_rows(db: Database) -> tuple[list[dict], list[dict]]:
    """Every score in force (and every pair that failed through its plugins) in the website's schema, with both
    identifiers; and the rows left out, with why."""
    rows: list[dict] = []
    left_out: list[dict] = []
    with db.sessions() as session:
        stmt = (select(Score, Model.identifier, Model.domain, User.email, BenchmarkType.identifier,
                       BenchmarkType.runtime_identifier, BenchmarkInstance.declared_version)
                .join(Model, Score.model_id == Model.id)
                .outerjoin(User, Model.owner_id == User.id)
                .join(BenchmarkInstance, Score.benchmark_instance_id == BenchmarkInstance.id)
                .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id)
                .order_by(Score.id))
        scored = set()
        for score, model, domain, owner, registry, runtime, version in session.execute(stmt):
            scored.add((model, registry))
            row = {"model": model, "model_owner": owner or "", "domain": domain_name(domain or ""),
                   "benchmark": runtime or registry, "registry_identifier": registry, "version": version,
                   "score_raw": score.score_raw, "score_ceiled": score.score_ceiled, "error": score.error,
                   "comment": score.comment, "start_timestamp": _when(score.start_timestamp or score.end_timestamp),
                   "end_timestamp": _when(score.end_timestamp), "score_id": score.id}
            (left_out if version is None else rows).append(row)
        jobs = newest_job_states(session)
        types = {b: (r, d) for b, r, d in session.execute(select(BenchmarkType.identifier,
                                                                 BenchmarkType.runtime_identifier,
                                                                 BenchmarkType.domain))}
        latest = {}
        for b, v in session.execute(select(BenchmarkType.identifier, BenchmarkInstance.declared_version)
                                    .join(BenchmarkInstance, BenchmarkInstance.benchmark_type_id == BenchmarkType.id)):
            if v is not None and (latest.get(b) is None or v > latest[b]):
                latest[b] = v
        owners = {m: (e or "", d) for m, e, d in session.execute(select(Model.identifier, User.email, Model.domain)
                                                                  .outerjoin(User, Model.owner_id == User.id))}
    for (model, registry), (state, stage, reason) in sorted(jobs.items()):
        if (model, registry) in scored or state == State.COMPLETED or state in INFRASTRUCTURE_ENDS:
            continue
        if registry not in types or model not in owners:
            continue
        runtime, domain = types[registry]
        row = {"model": model, "model_owner": owners[model][0], "domain": domain_name(domain or ""),
               "benchmark": runtime or registry, "registry_identifier": registry, "version": latest.get(registry),
               "score_raw": None, "score_ceiled": None, "error": None,
               "comment": f"error: {state}{f' at {stage}' if stage else ''}: {reason or ''}"[:1000],
               "start_timestamp": None, "end_timestamp": None, "score_id": None}
        (left_out if row["version"] is None else rows).append(row)
    for row in left_out:
        row["why"] = "its benchmark's version= cannot be read (the website keys an instance by its version)"
    return rows, left_out


def fixture(rows: list[dict], boards: list[DomainBoard] | None = None, models: dict | None = None) -> list[dict]:
    """The Django fixture: score rows (natural keys), and with `boards` the benchmark types, instances and
    models they need."""
    out: list[dict] = []
    now = datetime.now(timezone.utc).isoformat()
    if boards is not None:
        for board in boards:
            tree, domain = board.tree, domain_name(board.domain)
            for node in sorted(tree.parents, key=lambda n: (tree.depth(n), n)):
                out.append({"model": "benchmarks.benchmarktype", "pk": node, "fields": {
                    "domain": domain, "parent": tree.parents[node], "visible": node not in board.hidden,
                    "order": tree.order.get(node, 999)}})
        instances = sorted({(r["benchmark"], r["version"]) for r in rows})
        out += [{"model": "benchmarks.benchmarkinstance", "fields": {"benchmark_type": b, "version": v}}
                for b, v in instances]
        for name, (owner, domain, public) in sorted((models or {}).items()):
            out.append({"model": "benchmarks.model", "fields": {"name": name, "owner": [owner],
                                                                "domain": domain, "public": public}})
    for r in rows:
        out.append({"model": "benchmarks.score", "fields": {
            "benchmark": [r["benchmark"], r["version"]],
            "model": [r["model"], r["model_owner"]] if r["model_owner"] else [r["model"]],
            "score_raw": r["score_raw"], "score_ceiled": r["score_ceiled"], "error": r["error"],
            "comment": r["comment"], "start_timestamp": r["start_timestamp"] or r["end_timestamp"] or now,
            "end_timestamp": r["end_timestamp"]}})
    return out


def write_fixture(path: Path, data: list[dict]) -> None:
    """One JSON document, written whole (a temporary file renamed over the target)."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"--out {path} is a folder; name the file to write")
    try:
        write_atomically(path, json.dumps(data, indent=1, allow_nan=False), 0o600)
    except OSError as exc:
        raise BadInput(f"--out {path}: cannot be written ({exc.strerror or exc.__class__.__name__})") from None


def export(db: Database, out: Path, every: bool, boards: list[DomainBoard]) -> dict:
    """Write the fixture; what it holds and what was left out."""
    rows, left_out = score_rows(db)
    models = None
    if every:
        with db.sessions() as session:
            models = {m: (e or "", domain_name(d or ""), bool(p)) for m, e, d, p in session.execute(
                select(Model.identifier, User.email, Model.domain, Model.public)
                .outerjoin(User, Model.owner_id == User.id))}
    data = fixture(rows, boards if every else None, models)
    write_fixture(out, data)
    return {"out": str(out), "rows": rows, "left_out": left_out,
            "counts": {"scores": sum(1 for r in rows if r["score_id"] is not None),
                       "failures": sum(1 for r in rows if r["score_id"] is None), "left_out": len(left_out),
                       "fixture_objects": len(data)},
            "owners": sorted({r["model_owner"] for r in rows if r["model_owner"]})}
