"""Facts of many blobs at once: from the cache where it has them, else read through one `git cat-file --batch` and
computed (`blobfacts`), spread over the node's cores when there is enough to parse to pay for starting workers.

A blob over its size bound is refused from its listed size without being read; a blob missing from the repository
(a partial clone), or one on which a parser process died, is refused for this run only: its facts say `transient`
and are not cached (it may be fetched later; the node may have been at fault)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from pipeline.catalog import gitrepo
from pipeline.catalog.blobfacts import facts_of_kinds, refused_facts
from pipeline.catalog.bounds import over_size
from pipeline.catalog.factscache import FactsCache
from pipeline.catalog.parsepool import PythonPool, parse_alone
from pipeline.catalog.pyfacts import PYTHON_KINDS

PARALLEL_MIN_BYTES = 1_000_000  # Python to parse before worker processes pay for their start (measured: README)
MISSING = "missing from the repository (a partial clone?); not read"
CRASHED = "the parser's process ended while reading it; not read"


def read_all(repo: Path, wanted: list[tuple[str, gitrepo.TreeEntry]], cache: FactsCache,
             parsed: Counter | None = None, workers: int | None = None) -> dict[tuple[str, str], dict]:
    """(kind, blob id) -> facts for each (kind, entry) wanted; `parsed` counts the blobs parsed, by kind.
    `workers`: processes that parse (None: as many cores as pay, see `_workers`)."""
    facts: dict[tuple[str, str], dict] = {}
    kinds_of: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for kind, entry in wanted:
        key = (kind, entry.sha)
        if key in facts:
            continue
        known = cache.get(kind, entry.sha)
        if known is not None:
            facts[key] = known
            continue
        reason = over_size(kind, entry.size) if entry.size >= 0 else None
        if reason:
            facts[key] = refused_facts(kind, reason)
            cache.put(kind, entry.sha, facts[key])
            continue
        if kind not in kinds_of.setdefault(entry.sha, []):
            kinds_of[entry.sha].append(kind)
            sizes[entry.sha] = max(entry.size, 0)
    if not kinds_of:
        return facts
    workers = _workers(sum(sizes[sha] for sha, kinds in kinds_of.items() if _python(kinds)), workers)
    blobs = gitrepo.iter_blobs(repo, list(kinds_of))
    results = _parse_parallel(repo, blobs, kinds_of, workers) if workers > 1 else _parse_serial(blobs, kinds_of)
    for (kind, sha), found in results:
        if found is None:  # not cached: it may be fetched later
            found = {**refused_facts(kind, MISSING), "transient": True}
        facts[(kind, sha)] = found
        if found.get("transient"):
            continue
        cache.put(kind, sha, found)
        if parsed is not None:
            parsed[kind] += 1
    return facts


def _python(kinds: list[str]) -> list[str]:
    return [k for k in kinds if k in PYTHON_KINDS]


def _parse_serial(blobs, kinds_of: dict[str, list[str]]):  # noqa: ANN001, ANN202
    """(kind, sha), facts (None: the blob is missing) of each blob as it is read (each blob parsed once)."""
    for sha, data in blobs:
        found = {} if data is None else facts_of_kinds(kinds_of[sha], data)
        for kind in kinds_of[sha]:
            yield (kind, sha), found.get(kind)


def _parse_parallel(repo: Path, blobs, kinds_of: dict[str, list[str]], workers: int):  # noqa: ANN001, ANN202
    """Python files to a pool of worker processes as they are read, the other kinds parsed here meanwhile."""
    try:
        pool = PythonPool(workers)
    except OSError:  # no process can be started now: one process it is
        yield from _parse_serial(blobs, kinds_of)
        return
    try:
        for sha, data in blobs:
            python = _python(kinds_of[sha])
            others = [k for k in kinds_of[sha] if k not in python]
            if data is None:
                for kind in kinds_of[sha]:
                    yield (kind, sha), None
                continue
            if python:
                pool.submit(sha, data, python)
            if others:
                for kind, facts in facts_of_kinds(others, data).items():
                    yield (kind, sha), facts
        found, unanswered = pool.results()
    finally:
        pool.close()
    for sha, by_kind in found.items():
        for kind in _python(kinds_of[sha]):
            yield (kind, sha), by_kind.get(kind)
    if not unanswered:
        return
    workers_start = parse_alone("0" * 40, b"") is not None  # else no worker could start: parse here, as serially
    for sha, data in gitrepo.iter_blobs(repo, unanswered):  # a worker died: each file again, alone
        python = _python(kinds_of[sha])
        if data is None:
            alone: dict | None = {}
        elif not workers_start:
            alone = facts_of_kinds(python, data)
        else:
            alone = parse_alone(sha, data, python)
        for kind in python:
            if data is None:
                yield (kind, sha), None
            elif alone is None or kind not in alone:
                yield (kind, sha), {**refused_facts(kind, CRASHED), "transient": True}
            else:
                yield (kind, sha), alone[kind]


def _workers(python_bytes: int, requested: int | None) -> int:
    """Processes worth starting for this much Python: one below PARALLEL_MIN_BYTES, else the cores we may use
    (at most 8), or what the caller asked for."""
    if requested is not None:
        return max(1, requested)
    if python_bytes < PARALLEL_MIN_BYTES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))
