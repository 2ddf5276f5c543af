"""Spool folder -> database: read each result file once it is complete, ingest idempotently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from db.ingest import BATCH, ingest_results
from db.session import session_scope
from pipeline.database import Database

log = logging.getLogger(__name__)


def read_spool(spool_dir: Path, skip: set[str] | None = None) -> list[tuple[Path, dict]]:
    """Complete result files (temporary `.tmp-*` files are still being written), minus `skip` names."""
    found = []
    for path in sorted(Path(spool_dir).glob("*.json")):
        if path.name.startswith(".") or (skip and path.name in skip):
            continue
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable spool file %s: %s", path, exc)
    return found


def ingest_spool(db: Database, spool_dir: Path, skip: set[str] | None = None) -> tuple[dict[str, int], set[str]]:
    """Ingest every complete result not in `skip`; returns the counts and the names ingested."""
    files = read_spool(spool_dir, skip)
    totals = {"scores": 0, "duplicates": 0, "failures": 0}
    done: set[str] = set()
    for i in range(0, len(files), BATCH):  # one transaction per batch: a failure keeps earlier batches
        batch = files[i:i + BATCH]
        with session_scope(db.sessions) as session:
            counts = ingest_results(session, [data for _, data in batch], batch=BATCH)
        for key in totals:
            totals[key] += counts[key]
        done.update(path.name for path, _ in batch)
    return totals, done
