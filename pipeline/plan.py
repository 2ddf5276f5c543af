"""Which model x benchmark pairs to score, and which are already scored.

A pair's key hashes what determines its score: the two identifiers, the code of
the model plugin, of the benchmark plugin and the data/metric plugins it uses,
and the lockfile of its environment. A pair whose key is in the database is
skipped (unless `--force`); the look-up is one set query, not one per pair.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from envs.lock import EnvError, EnvSpec, Lock, lock_environment, validate_requirements
from pipeline.detect import Change
from pipeline.errors import BadInput
from pipeline.plugins import Catalog


@dataclass
class PlannedPair:
    model: str
    benchmark: str
    model_plugin: str
    benchmark_plugin: str
    model_code_hash: str
    benchmark_code_hash: str
    model_owner: str
    benchmark_owner: str
    reasons: list[str]
    lock: Lock | None = None
    key: str = ""
    problem: str | None = None  # set when the pair cannot run (e.g. its environment does not solve)

    @property
    def submitters(self) -> list[str]:
        return sorted({o for o in (self.model_owner, self.benchmark_owner) if o})

    def to_json(self) -> dict:
        return {
            "model": self.model, "benchmark": self.benchmark, "key": self.key, "reasons": self.reasons,
            "model_plugin": self.model_plugin, "benchmark_plugin": self.benchmark_plugin,
            "model_code_hash": self.model_code_hash, "benchmark_code_hash": self.benchmark_code_hash,
            "lock_hash": self.lock.lock_hash if self.lock else None,
            "env_hash": self.lock.env_hash if self.lock else None,
            "submitters": self.submitters, "problem": self.problem,
        }


@dataclass
class Plan:
    commit: str
    domain_root: str
    to_run: list[PlannedPair] = field(default_factory=list)
    already_scored: list[PlannedPair] = field(default_factory=list)
    cannot_run: list[PlannedPair] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "commit": self.commit, "domain_root": self.domain_root,
            "counts": {"to_run": len(self.to_run), "already_scored": len(self.already_scored),
                       "cannot_run": len(self.cannot_run)},
            "to_run": [p.to_json() for p in self.to_run],
            "already_scored": [p.to_json() for p in self.already_scored],
            "cannot_run": [p.to_json() for p in self.cannot_run],
        }


def pair_key(model: str, benchmark: str, model_code_hash: str, benchmark_code_hash: str, lock_hash: str) -> str:
    text = "\0".join([model, benchmark, model_code_hash, benchmark_code_hash, lock_hash])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def candidate_pairs(change: Change, catalog: Catalog, models: list[str] | None = None,
                    benchmarks: list[str] | None = None) -> dict[tuple[str, str], list[str]]:
    """(model id, benchmark id) -> why, from what the change implies, narrowed by the filters."""
    all_models = list(catalog.by_identifier("models"))
    all_benchmarks = list(catalog.by_identifier("benchmarks"))
    for wanted, known, kind in ((models, all_models, "model"), (benchmarks, all_benchmarks, "benchmark")):
        unknown = sorted(set(wanted or []) - set(known))
        if unknown:
            raise BadInput(f"unknown {kind} identifier(s) at {catalog.commit[:12]}: {', '.join(unknown)}")
    reasons: dict[tuple[str, str], list[str]] = {}

    def add(model: str, benchmark: str, why: str) -> None:
        reasons.setdefault((model, benchmark), [])
        if why not in reasons[(model, benchmark)]:
            reasons[(model, benchmark)].append(why)

    for m in change.new_models:
        for b in all_benchmarks:
            add(m, b, f"new or changed model {m}")
    for b in change.new_benchmarks:
        for m in all_models:
            add(m, b, f"new or changed benchmark {b}")
    for b, why in change.rescore_benchmarks.items():
        for m in all_models:
            for w in why:
                add(m, b, w)
    if models or benchmarks:
        only_m = set(models or all_models)
        only_b = set(benchmarks or all_benchmarks)
        if not reasons:  # filters alone: score exactly what they name
            for m in sorted(only_m):
                for b in sorted(only_b):
                    add(m, b, "requested")
        reasons = {k: v for k, v in reasons.items() if k[0] in only_m and k[1] in only_b}
    return reasons


def make_plan(change: Change, catalog: Catalog, *, locks_dir: Path, uv: str, python_version: str,
              scored: Callable[[list[str]], set[str]], force: bool = False, models: list[str] | None = None,
              benchmarks: list[str] | None = None, backend: str = "uv") -> Plan:
    """The pairs to score, each with its lock and key, minus those already scored under the same key."""
    model_plugins = catalog.by_identifier("models")
    bench_plugins = catalog.by_identifier("benchmarks")
    plan = Plan(catalog.commit, catalog.domain_root)
    locks: dict[tuple[str, ...], Lock | str] = {}
    pairs: list[PlannedPair] = []
    for (m, b), why in sorted(candidate_pairs(change, catalog, models, benchmarks).items()):
        mp, bp = model_plugins[m], bench_plugins[b]
        pair = PlannedPair(m, b, mp.name, bp.name, catalog.code_hash(mp), catalog.code_hash(bp), mp.owner, bp.owner,
                           why)
        requirements = tuple(catalog.requirements(mp, bp))
        if requirements not in locks:
            try:
                spec = EnvSpec(validate_requirements(requirements), python_version, backend)
                locks[requirements] = lock_environment(spec, locks_dir, uv)
            except EnvError as exc:
                locks[requirements] = str(exc)
        lock = locks[requirements]
        if isinstance(lock, str):
            pair.problem = lock
            pair.key = pair_key(m, b, pair.model_code_hash, pair.benchmark_code_hash, "unsolved")
            plan.cannot_run.append(pair)
            continue
        pair.lock = lock
        pair.key = pair_key(m, b, pair.model_code_hash, pair.benchmark_code_hash, lock.lock_hash)
        pairs.append(pair)
    done = set() if force else scored([p.key for p in pairs])
    for pair in pairs:
        (plan.already_scored if pair.key in done else plan.to_run).append(pair)
    return plan
