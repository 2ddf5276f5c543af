"""Which model x benchmark pairs to score, and which are already scored.

A pair's key hashes what determines its score: the two identifiers, the code of
the model plugin, of the benchmark plugin and the data/metric plugins it uses,
and the lockfiles of its two environments (the model's side and the benchmark's,
pipeline/stages/pair_envs.py). A pair whose key is in the database is skipped
(unless `--force`); the look-up is one set query, not one per pair. A score made
before the environments were split still counts when it holds (pair_envs says when).
"""

from __future__ import annotations

import gc
from itertools import compress
from operator import not_
import sys
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from db.states import State
from envs.conda import CondaLock, lock_conda, python_spec
from envs.lock import DEFAULT_URL_SCHEMES, EnvError, EnvSpec, Lock, LockJail, lock_environment, validate_requirements
from envs.sides import PairEnvs
from pipeline.stages.pair_envs import (LegacyLookup, Locking, keep_shared_scores, pair_key, side_locks,  # noqa: F401
                                       union_locks)
from pipeline.stages.detect import Change
from pipeline.errors import BadInput
from pipeline.catalog.plugins import Catalog
from pipeline.stopping import check as check_stop


@dataclass(slots=True)
class PlannedPair:
    model: str
    benchmark: str
    model_plugin: str
    benchmark_plugin: str
    model_code_hash: str
    benchmark_code_hash: str
    model_owner: str
    benchmark_owner: str
    reasons: tuple[str, ...]
    lock: PairEnvs | None = None  # the model's and the benchmark's environments (envs/sides.py)
    key: str = ""
    problem: str | None = None  # set when the pair cannot run (e.g. its environment does not solve)
    folders: tuple[str, ...] = ()  # plugin folders the pair may see: "models/x", "benchmarks/y", "data/z"...
    setup_in_job: tuple[str, ...] = ()  # folders whose setup.py cannot be read statically: installed in the job
    benchmark_parent: str | None = None  # the leaderboard tree: the parent its plugin declares (`parent=`)
    benchmark_version: int | None = None  # and its declared `version=`
    parent_note: str | None = None  # why the parent could not be read
    tier: str = ""  # the tier it starts on (pipeline.capacity.sizing)
    tier_why: str = ""  # measured / declared / default, and from what
    model_folders: tuple[str, ...] = ()  # what the model's own process may see: its folder and what it uses
    benchmark_runtime_id: str | None = None  # the identifier= it runs as (brain-score.org's key), when read
    outage: bool = False  # `problem` is infrastructure's (an unreachable index...), not the plugins' (job/outage.py)

    @property
    def submitters(self) -> list[str]:
        return sorted({o for o in (self.model_owner, self.benchmark_owner) if o})

    def to_json(self) -> dict:
        return {
            "model": self.model, "benchmark": self.benchmark, "key": self.key, "reasons": list(self.reasons),
            "model_plugin": self.model_plugin, "benchmark_plugin": self.benchmark_plugin,
            "model_code_hash": self.model_code_hash, "benchmark_code_hash": self.benchmark_code_hash,
            "lock_hash": self.lock.lock_hash if self.lock else None,
            "env_hash": self.lock.env_hash if self.lock else None,
            "submitters": self.submitters, "problem": self.problem, "outage": self.outage, "tier": self.tier or None,
            "tier_why": self.tier_why or None,
        }


@dataclass
class Plan:
    commit: str
    domain_root: str
    to_run: list[PlannedPair] = field(default_factory=list)
    already_scored: list[PlannedPair] = field(default_factory=list)
    cannot_run: list[PlannedPair] = field(default_factory=list)
    in_flight: dict[str, str] = field(default_factory=dict)  # key -> the run still scoring it
    held: list[PlannedPair] = field(default_factory=list)  # a plugin they use has a change its owners did not make

    def only(self, pairs: set[tuple[str, str]]) -> Plan:
        """This plan narrowed to exactly these (model, benchmark) pairs (`rerun --failed`)."""
        def keep(planned: list[PlannedPair]) -> list[PlannedPair]:
            return [p for p in planned if (p.model, p.benchmark) in pairs]

        return dataclasses.replace(self, to_run=keep(self.to_run), already_scored=keep(self.already_scored),
                                   cannot_run=keep(self.cannot_run), held=keep(self.held))

    def outages(self) -> list[dict]:
        """The pairs that got no environment for an infrastructure reason (an unreachable index, TLS, DNS, a
        timeout, a full disk, a killed solver), as `run` reports its INFRA_FAIL pairs."""
        return [{"model": p.model, "benchmark": p.benchmark, "state": State.INFRA_FAIL, "stage": "env_build",
                 "reason": p.problem} for p in self.cannot_run if p.outage]

    def to_json(self, pairs: bool = True) -> dict:
        """The plan for programs; `pairs=False` gives the compact summary (a real repository's `--all` plans
        100,000+ pairs: the counts, environments and reasons a pair cannot run, without every pair)."""
        reasons: dict[str, int] = {}
        for pair in self.cannot_run:
            reasons[pair.problem or ""] = reasons.get(pair.problem or "", 0) + 1
        held: dict[str, int] = {}
        for pair in self.held:
            held[pair.problem or ""] = held.get(pair.problem or "", 0) + 1
        data = {
            "commit": self.commit, "domain_root": self.domain_root,
            "counts": {"to_run": len(self.to_run), "already_scored": len(self.already_scored),
                       "cannot_run": len(self.cannot_run), "in_flight": len(self.in_flight), "held": len(self.held)},
            "environments": len({lock.env_hash for p in self.to_run if p.lock for _, lock in p.lock.sides()}),
            "environments_by_side": {side: len({getattr(p.lock, side).env_hash for p in self.to_run if p.lock})
                                     for side in ("model", "benchmark")},
            "cannot_run_reasons": reasons,
            "held_reasons": held,
            "infrastructure_failures": sum(p.outage for p in self.cannot_run),
            "tiers": {t: sum(p.tier == t for p in self.to_run) for t in dict.fromkeys(p.tier for p in self.to_run)},
            "in_flight": self.in_flight,
        }
        if pairs:
            data.update({
                "to_run": [p.to_json() for p in self.to_run],
                "already_scored": [p.to_json() for p in self.already_scored],
                "cannot_run": [p.to_json() for p in self.cannot_run],
                "held": [p.to_json() for p in self.held],
            })
        return data


class Unsolved(str):
    """Why a pair's environment cannot be had (a string, as it always was); `outage` when that is infrastructure's
    (envs.lock.EnvOutage), so the pair is recorded as an infrastructure failure, not the plugins'."""

    outage = False


def unsolved(exc: EnvError) -> Unsolved:
    text = Unsolved(str(exc))
    text.outage = exc.infrastructure
    return text


def candidate_pairs(change: Change, catalog: Catalog, models: list[str] | None = None,
                    benchmarks: list[str] | None = None) -> dict[tuple[str, str], tuple[str, ...]]:
    """(model id, benchmark id) -> why, from what the change implies, narrowed by the filters.

    Returned in (model, benchmark) order. New models meet every benchmark; every model
    meets new and re-scored benchmarks.
    """
    return {(m, b): why for m, row in candidate_rows(change, catalog, models, benchmarks) for b, why in row}


def candidate_rows(change: Change, catalog: Catalog, models: list[str] | None = None,
                   benchmarks: list[str] | None = None) -> list[tuple[str, list[tuple[str, tuple[str, ...]]]]]:
    """`candidate_pairs` grouped by model: (model id, [(benchmark id, why), ...]), in the same order. Models met
    for the same reason share one row (one list, one reason tuple per benchmark): at 100,000 pairs the planner
    then walks a few lists instead of building a tuple key and a reason per pair."""
    all_models = sorted(catalog.by_identifier("models"))
    all_benchmarks = sorted(catalog.by_identifier("benchmarks"))
    for wanted, known, kind in ((models, all_models, "model"), (benchmarks, all_benchmarks, "benchmark")):
        unknown = sorted(set(wanted or []) - set(known))
        if unknown:
            raise BadInput(f"unknown {kind} identifier(s) at {catalog.commit[:12]}: {', '.join(unknown)}")
    everything = change.base is None  # --all: every plugin, not a change
    m_why = {m: ("every model (--all)" if everything else f"new or changed model {m}",) for m in change.new_models}
    b_why: dict[str, tuple[str, ...]] = {b: ("every benchmark (--all)" if everything else
                                              f"new or changed benchmark {b}",) for b in change.new_benchmarks}
    for b, whys in change.rescore_benchmarks.items():
        b_why[b] = b_why.get(b, ()) + tuple(whys)
    if models or benchmarks:
        only_m, only_b = set(models or all_models), set(benchmarks or all_benchmarks)
        if not m_why and not b_why:  # filters alone: score exactly what they name
            requested = ("requested",)
            row = [(b, requested) for b in all_benchmarks if b in only_b]
            return [(m, row) for m in all_models if m in only_m] if row else []
        all_models = [m for m in all_models if m in only_m]
        all_benchmarks = [b for b in all_benchmarks if b in only_b]
    touched = [(b, b_why[b]) for b in all_benchmarks if b in b_why]
    by_reason: dict[tuple[str, ...], list[tuple[str, tuple[str, ...]]]] = {}
    rows: list[tuple[str, list[tuple[str, tuple[str, ...]]]]] = []
    for m in all_models:
        mw = m_why.get(m)
        if mw:
            row = by_reason.get(mw)
            if row is None:
                row = by_reason[mw] = [(b, mw + b_why.get(b, ())) for b in all_benchmarks]
            if row:
                rows.append((m, row))
        elif touched:
            rows.append((m, touched))
    return rows


@contextmanager
def gc_paused() -> Iterator[None]:
    """Planning allocates ~10 small acyclic objects per pair; cyclic GC passes over a large heap
    would only slow it down (they cost more than the planning itself at 100,000 pairs).
    On the way out the objects made meanwhile are moved to the oldest generation (`freeze` then `unfreeze`, two
    list splices): left in the youngest, the first allocation after `enable` would walk all of them at once
    (a tenth of the plan's time). Skipped when the process froze objects itself: `unfreeze` would thaw those too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def make_plan(change: Change, catalog: Catalog, *, locks_dir: Path, uv: str, python_version: str,
              scored: Callable[[list[str]], set[str]], force: bool = False, models: list[str] | None = None,
              benchmarks: list[str] | None = None, backend: str = "uv", conda_backend: str = "rattler",
              rattler_python: str = sys.executable, in_flight: Callable[[list[str]], dict[str, str]] | None = None,
              url_schemes: tuple[str, ...] | list[str] = DEFAULT_URL_SCHEMES, lock_workers: int = 1,
              progress: Callable[[int, int], None] | None = None,
              conda_channels: tuple[str, ...] | list[str] = ("conda-forge",), jail: LockJail = LockJail(),
              failed_solves: str = "use", legacy: LegacyLookup | None = None, shared: bool = False) -> Plan:
    """The pairs to score, each with its two environments and its key, minus those already scored under the
    same key.

    Each side of a pair has its own environment (pipeline/stages/pair_envs.py): the model's and the benchmark's.
    `backend="conda"` makes every one a conda environment; with `"uv"` only a side whose plugins declare an
    environment.yml gets one. A conda environment's one lockfile holds the interpreter, the conda packages and
    the pip layer (the domain's and that side's pip requirements). `jail` confines every `uv pip compile`
    (the uv locks and the pip layers of conda locks alike). `failed_solves`: how cached solve failures count
    (envs.lock.lock_environment's `failed_solves`). `legacy`: which (model, benchmark, code hashes) have a score
    made before the split (db.queries.shared_env_scores); such a score still counts when it holds. `shared`:
    plan the scheme before the split, one environment of both sides' requirements for both processes (only
    `reproduce` of such a score, and the baseline of benchmarks/sides_bench.py)."""
    with gc_paused():
        return _make_plan(change, catalog, locks_dir=locks_dir, uv=uv, python_version=python_version, scored=scored,
                          force=force, models=models, benchmarks=benchmarks, backend=backend,
                          conda_backend=conda_backend, rattler_python=rattler_python, in_flight=in_flight,
                          url_schemes=tuple(url_schemes), lock_workers=lock_workers, progress=progress,
                          conda_channels=tuple(conda_channels), jail=jail, failed_solves=failed_solves,
                          legacy=legacy, shared=shared)


def conda_request(catalog: Catalog, plugins: tuple, pip_reqs: tuple[str, ...], python_version: str,  # noqa: ANN001
                  conda_channels: tuple[str, ...], url_schemes: tuple[str, ...]
                  ) -> tuple[list[str], list[str], tuple[str, ...]] | str:
    """(channels, conda specs with the interpreter, validated pip requirements) of a pair's conda environment,
    or why it cannot have one. The interpreter: the domain's `requires-python`, else `python_version`."""
    channels, specs, problem = catalog.conda(*plugins)
    if problem:
        return problem
    try:
        python = python_spec(catalog.domain_requires_python, python_version)
        pip = validate_requirements(pip_reqs, url_schemes) if pip_reqs else ()
    except EnvError as exc:
        return str(exc)
    return list(channels or conda_channels), sorted({*specs, python}), pip


def _conda_lock(request: tuple[list[str], list[str], tuple[str, ...]] | str, locks_dir: Path, conda_backend: str,
                rattler_python: str, uv: str, jail: LockJail = LockJail()) -> CondaLock | str:
    """The one conda-lock file of a pair's conda environment (a string: why it cannot run)."""
    if isinstance(request, str):
        return request
    channels, specs, pip = request
    try:
        return lock_conda(channels, specs, locks_dir, conda_backend, python=rattler_python, pip_requirements=pip,
                          uv=uv, jail=jail)
    except EnvError as exc:
        return unsolved(exc)


def solve_conda_all(requests: dict[str, tuple[list[str], list[str], tuple[str, ...]] | str], *, locks_dir: Path,
                    conda_backend: str, rattler_python: str, uv: str, workers: int = 1,
                    progress: Callable[[int, int], None] | None = None,
                    jail: LockJail = LockJail()) -> dict[str, CondaLock | str]:
    """The conda lock of every distinct request, `workers` at a time (py-rattler and uv run as subprocesses);
    each cached on disk by its inputs, so a request already locked costs a file read."""
    from concurrent.futures import ThreadPoolExecutor

    done: dict[str, CondaLock | str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {memo: pool.submit(_conda_lock, request, locks_dir, conda_backend, rattler_python, uv, jail)
                   for memo, request in requests.items()}
        for index, (memo, future) in enumerate(futures.items(), 1):
            done[memo] = future.result()
            if progress:
                progress(index, len(futures))
    return done


def solve_all(requirement_sets: list[tuple[str, ...]], *, locks_dir: Path, uv: str, python_version: str,
              backend: str, url_schemes: tuple[str, ...], workers: int = 1,
              progress: Callable[[int, int], None] | None = None,
              jail: LockJail = LockJail(), failed_solves: str = "use") -> dict[tuple[str, ...], Lock | str]:
    """Lock every distinct requirement set, `workers` solver processes at a time (each set once; a lock cached on
    disk costs a file read). A set that cannot be solved maps to the reason, as a string."""

    def one(requirements: tuple[str, ...]) -> Lock | str:
        try:
            spec = EnvSpec(validate_requirements(requirements, url_schemes), python_version, backend)
            return lock_environment(spec, locks_dir, uv, jail=jail, failed_solves=failed_solves)
        except EnvError as exc:
            return unsolved(exc)

    solved: dict[tuple[str, ...], Lock | str] = {}
    if workers <= 1 or len(requirement_sets) <= 1:
        for index, requirements in enumerate(requirement_sets, 1):
            solved[requirements] = one(requirements)
            check_stop()  # a stop signal a finalizer swallowed while locking
            if progress:
                progress(index, len(requirement_sets))
        return solved
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=workers) as pool:  # uv runs as a subprocess: threads suffice
        futures = {pool.submit(one, r): r for r in requirement_sets}
        for index, future in enumerate(as_completed(futures), 1):
            solved[futures[future]] = future.result()
            if progress:
                progress(index, len(requirement_sets))
    return solved


def _make_plan(change: Change, catalog: Catalog, *, locks_dir: Path, uv: str, python_version: str,
               scored: Callable[[list[str]], set[str]], force: bool, models: list[str] | None,
               benchmarks: list[str] | None, backend: str, conda_backend: str, rattler_python: str,
               in_flight: Callable[[list[str]], dict[str, str]] | None, url_schemes: tuple[str, ...],
               lock_workers: int, progress: Callable[[int, int], None] | None,
               conda_channels: tuple[str, ...], jail: LockJail = LockJail(), failed_solves: str = "use",
               legacy: LegacyLookup | None = None, shared: bool = False) -> Plan:
    model_plugins = catalog.by_identifier("models")
    bench_plugins = catalog.by_identifier("benchmarks")
    plan = Plan(catalog.commit, catalog.domain_root)
    involved = {p.key: p for p in [*model_plugins.values(), *bench_plugins.values()]}
    code_hashes = {key: catalog.code_hash(p) for key, p in involved.items()}
    # Per-plugin facts once, so the per-pair loop (100,000 pairs at Brain-Score's scale) stays cheap.
    visible = {key: tuple(f"{d.type}/{d.name}" for d in catalog.members(p)) for key, p in involved.items()}
    dynamic = {key: tuple(catalog.setup_dynamic(p)) for key, p in involved.items()}
    # (name, code hash, owner, visible folders, setup.py installed in the job)
    m_info = {m: (p.name, code_hashes[p.key], p.owner, visible[p.key], dynamic[p.key])
              for m, p in model_plugins.items()}
    b_info = {b: (p.name, code_hashes[p.key], p.owner, visible[p.key], dynamic[p.key])
              for b, p in bench_plugins.items()}
    rows = candidate_rows(change, catalog, models, benchmarks)
    locking = Locking(
        pip=lambda sets: solve_all(sets, locks_dir=locks_dir, uv=uv, python_version=python_version, backend=backend,
                                   url_schemes=url_schemes, workers=lock_workers, progress=progress, jail=jail,
                                   failed_solves=failed_solves),
        conda=lambda requests: solve_conda_all(requests, locks_dir=locks_dir, conda_backend=conda_backend,
                                               rattler_python=rattler_python, uv=uv, workers=lock_workers,
                                               progress=progress, jail=jail),
        request=lambda plugins, reqs: conda_request(catalog, plugins, reqs, python_version, conda_channels,
                                                    url_schemes),
        backend=backend)
    # the plugins the rows use: each side locked once per distinct requirement set (rows are shared between models)
    used_benchmarks: dict[str, None] = {}
    for row in {id(row): row for _, row in rows}.values():
        used_benchmarks.update(dict.fromkeys(b for b, _ in row))
    if shared:  # the scheme before the split (reproduce, and the baseline of benchmarks/sides_bench.py)
        union = union_locks(catalog, [(model_plugins[m], bench_plugins[b]) for m, row in rows for b, _ in row],
                            locking)
    else:
        sides = side_locks(catalog, {p.key: p for p in [*(model_plugins[m] for m, _ in rows),
                                                         *(bench_plugins[b] for b in used_benchmarks)]}.values(),
                           locking)
    pairs: list[PlannedPair] = []
    changed_models = set(change.changed_plugins.get("models", []))
    changed_benchmarks = set(change.changed_plugins.get("benchmarks", []))
    # each benchmark's facts, the leaderboard tree's and its environment among them, looked up once, not per pair
    b_rows = {b: (name, code_hash, owner, b_visible, b_dynamic, bench_plugins[b].parents.get(b),
                  bench_plugins[b].versions.get(b), bench_plugins[b].parent_problems.get(b),
                  None if shared else sides[bench_plugins[b].key], bench_plugins[b].runtime_ids.get(b))
              for b, (name, code_hash, owner, b_visible, b_dynamic) in b_info.items() if b in used_benchmarks}
    facts: dict[int, list[tuple]] = {}  # per shared row: each benchmark with its facts, unpacked in the loop
    both: dict[int, dict[int, PairEnvs]] = {}  # model's lock -> benchmark's lock -> the pair's environments
    for m, row in rows:
        m_name, m_hash, m_owner, m_visible, m_dynamic = m_info[m]
        m_lock = None if shared else sides[model_plugins[m].key]
        m_both = both.setdefault(id(m_lock), {})
        row_facts = facts.get(id(row))
        if row_facts is None:
            row_facts = facts[id(row)] = [(b, why, *b_rows[b]) for b, why in row]
        for b, why, b_name, b_hash, b_owner, b_visible, b_dynamic, parent, version, note, b_lock, runtime in row_facts:
            if shared:
                one = union[(model_plugins[m].key, bench_plugins[b].key)]
                m_lock = b_lock = one
            if isinstance(m_lock, str) or isinstance(b_lock, str):
                # who hears about an environment that cannot be built: the owners of the side that cannot, and of
                # those the change touched (a new model's unsolvable requirements are its submitter's news, not
                # every benchmark owner's)
                m_bad, b_bad = isinstance(m_lock, str), isinstance(b_lock, str)
                mo = m_owner if m_bad and (change.base is None or m_name in changed_models) else ""
                bo = b_owner if b_bad and (change.base is None or b_name in changed_benchmarks) else ""
                if not (mo or bo):
                    mo, bo = (m_owner if m_bad else ""), (b_owner if b_bad else "")
                problem = "; ".join(dict.fromkeys(x for x, blamed in ((m_lock, mo), (b_lock, bo))
                                                  if blamed and isinstance(x, str)))
                plan.cannot_run.append(PlannedPair(m, b, m_name, b_name, m_hash, b_hash, mo, bo, why, None,
                                                   pair_key(m, b, m_hash, b_hash, "unsolved"), problem,
                                                   outage=any(getattr(x, "outage", False) for x in (m_lock, b_lock)
                                                              if isinstance(x, str))))
                continue
            envs = m_both.get(id(b_lock))
            if envs is None:
                envs = m_both[id(b_lock)] = (PairEnvs.one_for_both(m_lock) if shared else PairEnvs(m_lock, b_lock))
            in_job = m_dynamic + b_dynamic
            pairs.append(PlannedPair(m, b, m_name, b_name, m_hash, b_hash, m_owner, b_owner, why, envs,
                                     pair_key(m, b, m_hash, b_hash, envs.lock_hash), None, m_visible + b_visible,
                                     tuple(dict.fromkeys(in_job)) if in_job else (), parent, version, note, "", "",
                                     m_visible, runtime))
    keys = [pair.key for pair in pairs]
    done = set() if force else scored(keys)
    if legacy is not None and not force and not shared and len(done) < len(pairs):
        # scores made before the split, under one environment for both sides, still count (pair_envs says when)
        kept = keep_shared_scores([p for p in pairs if p.key not in done], scored, legacy,
                                  lambda group: union_locks(catalog, group, locking),
                                  lambda p: (model_plugins[p.model], bench_plugins[p.benchmark]))
        done |= {p.key for p in kept}
        keys = [pair.key for pair in pairs]
    if done:  # split in C: one flag per pair, then two `compress` passes
        flags = [key in done for key in keys]
        plan.already_scored = list(compress(pairs, flags))
        plan.to_run = list(compress(pairs, map(not_, flags)))
    else:
        plan.to_run = pairs
    if in_flight is not None and not force and plan.to_run:
        # a pair another run is still scoring is not submitted twice (a coordinator restarted after a crash)
        plan.in_flight = in_flight([p.key for p in plan.to_run])
        plan.to_run = [p for p in plan.to_run if p.key not in plan.in_flight]
    return plan
