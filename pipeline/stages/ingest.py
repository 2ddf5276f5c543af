"""Spool folder -> database: each result file checked on its own, then ingested idempotently.

Nothing in a spool file is trusted as it is. Who the pair is (ids, plugins, code hashes, owners, run,
commit) comes from the bundle's manifest, which the coordinator wrote; only the outcome comes from the
file, and every field of it is typed, bounded and capped to its column. A file that fails is moved to
`quarantine/` with its reason, and its pair is recorded FAILED at stage `persist`: it never blocks the
other files, and it never reads as "database unreachable".
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from db.ingest import BATCH, ingest_results
from db.states import TERMINAL, State
from db.session import session_scope
from pipeline.database import Database
from pipeline.errors import BadInput
from pipeline.stages.bundle import read_manifest
from pipeline.job.manifest import Manifest

log = logging.getLogger(__name__)

MAX_SPOOL_BYTES = 2_000_000
STAGES = (None, "env_build", "import", "score", "persist")
TRUSTED = ("model", "benchmark", "model_plugin", "benchmark_plugin", "model_code_hash", "benchmark_code_hash",
           "lock_hash", "env_hash", "submitters", "model_owner", "benchmark_owner", "benchmark_parent",
           "benchmark_version", "parent_note", "benchmark_runtime_id")
# absent from bundles made before the tree (the runtime identifier: before issue 37)
TREE = ("benchmark_parent", "benchmark_version", "parent_note", "benchmark_runtime_id")
TEXT_CAPS = {"reason": 4000, "log_tail": 8000, "log_path": 1000, "job_id": 64, "node": 200, "executor": 32,
             "comment": 2000, "gpu_model": 200}


class RejectedResult(ValueError):
    """A spool file that is not a result the worker could have written."""


def _number(value: object, name: str, low: float | None = None, high: float | None = None,
            optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise RejectedResult(f"{name} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RejectedResult(f"{name} {value} is out of range")
    return float(value)


def _time(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise RejectedResult(f"{name} is not a timestamp")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise RejectedResult(f"{name} is not a timestamp") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if when > datetime.now(timezone.utc) + timedelta(hours=1):
        raise RejectedResult(f"{name} {value} is in the future")
    return when.isoformat()


def check_result(data: object, pair: dict, manifest: Manifest) -> dict:
    """The result to ingest: identity from the manifest, outcome from the file, checked field by field."""
    if not isinstance(data, dict):
        raise RejectedResult("not a JSON object")
    if data.get("pair_key") != pair["key"]:
        raise RejectedResult("its pair key does not match its file name")
    status = data.get("status")
    if status not in ("ok", "error"):
        raise RejectedResult("status is neither ok nor error")
    state = data.get("state")
    if state not in TERMINAL or (status == "ok") != (state == State.COMPLETED):
        raise RejectedResult(f"state {str(state)[:40]!r} does not fit status {status!r}")
    if data.get("stage") not in STAGES:
        raise RejectedResult("stage is not one of the pipeline's stages")
    result = {k: pair.get(k) for k in TRUSTED if k in pair or k not in TREE}
    result.update({"pair_key": pair["key"], "run_id": manifest.run_id, "commit": manifest.commit,
                   "domain": manifest.domain_root, "status": status, "state": state, "stage": data.get("stage")})
    for key, cap in TEXT_CAPS.items():
        value = data.get(key)
        if value is not None and not isinstance(value, (str, int)):
            raise RejectedResult(f"{key} is not text")
        result[key] = None if value is None else str(value)[:cap]
    result["executor"] = result["executor"] or manifest.executor
    if status == "ok":
        result["score_ceiled"] = _number(data.get("score_ceiled"), "score", 0.0, 1.0, optional=False)
        result["score_raw"] = _number(data.get("score_raw"), "raw score", optional=False)
        result["ceiling"] = _number(data.get("ceiling"), "ceiling", 0.0)
        if result["ceiling"] == 0.0:
            raise RejectedResult("ceiling is 0")
        result["error"] = _number(data.get("error"), "error")
    for key in ("elapsed_seconds", "cpu_seconds"):
        result[key] = _number(data.get(key), key, 0.0)
    for key, high in (("max_rss_bytes", 2**62), ("array_index", 10**7), ("attempt", 1000), ("gpu_count", 1024),
                      ("gpus_used", 1024), ("max_gpu_mem_bytes", 2**62)):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high):
            raise RejectedResult(f"{key} is not a whole number in range")
        result[key] = value
    result["started_at"] = _time(data.get("started_at"), "started_at")
    result["ended_at"] = _time(data.get("ended_at"), "ended_at")
    return result


def _rejected(pair: dict, manifest: Manifest, reason: str) -> dict:
    now = datetime.now(timezone.utc).isoformat()
    result = {k: pair.get(k) for k in TRUSTED if k in pair or k not in TREE}
    result.update({"pair_key": pair["key"], "run_id": manifest.run_id, "commit": manifest.commit,
                   "domain": manifest.domain_root, "status": "error", "state": "FAILED", "stage": "persist",
                   "reason": f"its result file was rejected and quarantined: {reason}", "started_at": now,
                   "ended_at": now, "executor": manifest.executor})
    return result


_pairs: dict[int, tuple[Manifest, dict[str, dict]]] = {}


def _pairs_by_key(manifest: Manifest) -> dict[str, dict]:
    """The manifest's pairs by key, built once per manifest read (not once per watch cycle)."""
    cached = _pairs.get(id(manifest))
    if cached is None or cached[0] is not manifest:
        cached = (manifest, {p["key"]: p for t in manifest.tasks for p in t["pairs"]})
        _pairs.clear()  # one run watched at a time: keep only the newest
        _pairs[id(manifest)] = cached
    return cached[1]


def read_spool(spool_dir: Path, skip: set[str] | None = None,
               names: list[str] | None = None) -> list[tuple[Path, dict]]:
    """Complete result files (temporary `.tmp-*` files are still being written), minus `skip` names, each
    checked against the bundle's manifest; rejected ones are quarantined and come back as FAILED/persist.
    `names` (from the spool's index) reads only those files instead of listing the folder."""
    spool_dir = Path(spool_dir)
    manifest = read_manifest(spool_dir.parent)
    pairs = _pairs_by_key(manifest)
    quarantine = spool_dir.parent / "quarantine"
    found = []
    listed = sorted(spool_dir.glob("*.json")) if names is None else \
        [spool_dir / n for n in sorted(set(names)) if os.path.lexists(spool_dir / n)]
    for path in listed:
        if path.name.startswith(".") or (skip and path.name in skip):
            continue
        pair = pairs.get(path.stem)
        try:
            if pair is None:
                raise RejectedResult("no pair of this run has that key")
            if path.is_symlink() or not path.is_file():
                raise RejectedResult("not a regular file")
            if path.stat().st_size > MAX_SPOOL_BYTES:
                raise RejectedResult(f"larger than {MAX_SPOOL_BYTES} bytes")
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
            found.append((path, check_result(data, pair, manifest)))
        except (RejectedResult, ValueError, UnicodeDecodeError) as exc:
            reason = str(exc)[:300]
            log.warning("quarantining spool file %s: %s", path, reason)
            quarantine.mkdir(exist_ok=True)
            try:
                os.replace(path, quarantine / path.name)
                (quarantine / (path.name + ".reason")).write_text(reason + "\n")
            except OSError:
                continue  # cannot move it: leave it, and do not ingest it
            if pair is not None:
                found.append((path, _rejected(pair, manifest, reason)))
        except OSError as exc:
            log.warning("skipping unreadable spool file %s: %s", path, exc)
    return found


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def ingest_spool(db: Database, spool_dir: Path, skip: set[str] | None = None,
                 on_result: Callable[[dict], None] | None = None,
                 names: list[str] | None = None) -> tuple[dict[str, int], set[str]]:
    """Ingest every complete result not in `skip` (only `names`, when given); returns the counts and the names
    ingested (`on_result` sees each checked result once it is in the database, e.g. for progress)."""
    files = read_spool(spool_dir, skip, names)
    totals = {"scores": 0, "duplicates": 0, "failures": 0}
    done: set[str] = set()
    for i in range(0, len(files), BATCH):  # one transaction per batch: a failure keeps earlier batches
        batch = files[i:i + BATCH]
        with session_scope(db.sessions) as session:
            counts = ingest_results(session, [data for _, data in batch], batch=BATCH)
        for key in totals:
            totals[key] += counts[key]
        done.update(path.name for path, _ in batch)
        if on_result:
            for _, data in batch:
                on_result(data)
    return totals, done


def run_folders(runs_dir: Path, run: str | None) -> list[Path]:
    """What `ingest [RUN]` reads: a bundle folder, a run id under `runs_dir`, or (no RUN) every run there."""
    if run and Path(run).is_dir():
        return [Path(run)]
    if run:
        folder = runs_dir / run
        if not folder.is_dir():
            raise BadInput(f"no run {run!r} under {runs_dir}")
        return [folder]
    return sorted(p for p in runs_dir.glob("*") if (p / "manifest.json").is_file()) if runs_dir.exists() else []


def ingest_folders(db: Database, folders: list[Path]) -> dict[str, int]:
    """Every folder's spool into the database; the totals of new scores, duplicates and failures."""
    totals = {"scores": 0, "duplicates": 0, "failures": 0}
    for folder in folders:
        counts, _ = ingest_spool(db, folder / "spool")
        for key in totals:
            totals[key] += counts[key]
    return totals
