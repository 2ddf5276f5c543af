"""Which environment each side of a pair runs in, and which scores made before the split still count.

Each side has its own environment (envs/sides.py says why): a model plugin's is locked from the domain's
dependencies and what the model and the plugins it uses declare; a benchmark plugin's from the domain's and what
the benchmark and its data and metric plugins declare. A side's lock depends on its plugin alone, so one benchmark
environment serves every model, and `plan --all` locks one set per distinct side instead of one per pair.

Scores made before the split carry the key of ONE environment, the union of both sides. They stay valid: a pair
not scored under its new key is still "already scored" when a score of the same model and benchmark, with the same
code, was made under the old scheme, and the union would still lock to the same lockfile (the old scheme's own
test: its key holds that lock's hash). The union is read from the lock cache, or solved when it is not there, only
for pairs that have such a score; so the leaderboard is not re-scored because the scheme changed, and a change the
old scheme would have re-scored for (new code, a domain dependency that now locks differently) still is.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from typing import Callable, Iterable

from envs.conda import CondaLock
from envs.lock import Lock
from envs.sides import PairEnvs
from pipeline.catalog.plugins import Catalog, Plugin

Request = tuple  # a conda environment's (channels, specs, pip requirements), see plan.conda_request
SideLock = Lock | CondaLock | str  # a string: why it cannot be locked


@dataclass(frozen=True)
class Locking:
    """How requirement sets become locks, with the plan's settings bound (plan.solve_all, plan.solve_conda_all,
    plan.conda_request): kept apart so this module needs nothing of plan's."""

    pip: Callable[[list[tuple[str, ...]]], dict[tuple[str, ...], Lock | str]]
    conda: Callable[[dict[str, Request | str]], dict[str, CondaLock | str]]
    request: Callable[[tuple[Plugin, ...], tuple[str, ...]], Request | str]
    backend: str = "uv"  # "conda": every environment is a conda one; "uv": those whose plugins declare environment.yml


def declares_conda(catalog: Catalog, *plugins: Plugin) -> bool:
    """Whether these plugins, or one they use, declare an environment.yml (a conda environment, or its problem)."""
    _channels, specs, problem = catalog.conda(*plugins)
    return bool(specs or problem)


def _lock_groups(catalog: Catalog, groups: dict[object, tuple[Plugin, ...]], locking: Locking
                 ) -> dict[object, SideLock]:
    """The lock of each group of plugins (a side's one plugin, or a pair's two for the union): its requirements are
    the domain's and those of the group and what it uses; conda when the backend says so or the group declares an
    environment.yml. Each distinct set is solved once."""
    reqs = {name: tuple(catalog.requirements(*plugins)) for name, plugins in groups.items()}
    conda = {name for name, plugins in groups.items()
             if locking.backend == "conda" or declares_conda(catalog, *plugins)}
    solved = locking.pip(sorted({reqs[name] for name in groups if name not in conda}))
    requests: dict[str, Request | str] = {}
    memo: dict[object, str] = {}
    for name in conda:
        memo[name] = repr((catalog.conda(*groups[name]), reqs[name]))
        if memo[name] not in requests:
            requests[memo[name]] = locking.request(groups[name], reqs[name])
    conda_locks = locking.conda(requests) if requests else {}
    return {name: conda_locks[memo[name]] if name in conda else solved[reqs[name]] for name in groups}


def side_locks(catalog: Catalog, plugins: Iterable[Plugin], locking: Locking) -> dict[tuple[str, str], SideLock]:
    """Each plugin's own side: plugin key -> its lock (or why it has none)."""
    return _lock_groups(catalog, {p.key: (p,) for p in plugins}, locking)  # type: ignore[return-value]


def union_locks(catalog: Catalog, pairs: Iterable[tuple[Plugin, Plugin]], locking: Locking
                ) -> dict[tuple[tuple[str, str], tuple[str, str]], SideLock]:
    """The ONE environment the scheme before the split gave each (model plugin, benchmark plugin): the union of
    both sides' requirements, conda when either side wanted it."""
    return _lock_groups(catalog, {(m.key, b.key): (m, b) for m, b in pairs}, locking)  # type: ignore[return-value]


def pair_key(model: str, benchmark: str, model_code_hash: str, benchmark_code_hash: str, lock_hash: str) -> str:
    """A pair's key: both ids, both code hashes, the environments' lock hash (`<model's>+<benchmark's>`, or one
    hash for a score made before the split). The same function for both forms, so old keys keep their values."""
    text = f"{model}\0{benchmark}\0{model_code_hash}\0{benchmark_code_hash}\0{lock_hash}"
    return sha256(text.encode()).hexdigest()[:32]


LegacyLookup = Callable[[list[tuple[str, str, str, str]]], set[tuple[str, str, str, str]]]


def keep_shared_scores(pairs: list, scored: Callable[[list[str]], set[str]], legacy: LegacyLookup,
                       union: Callable[[list[tuple[Plugin, Plugin]]], dict], plugins: Callable[[object], tuple]
                       ) -> list:
    """Of `pairs` (PlannedPair, not scored under their per-side key), those a score made before the split still
    covers; each is given the key and the one environment of that score. `legacy` says which (model, benchmark,
    model code hash, benchmark code hash) have a score of the old form; `union` locks pairs' unions; `plugins`
    gives a pair's (model plugin, benchmark plugin)."""
    ids = [(p.model, p.benchmark, p.model_code_hash, p.benchmark_code_hash) for p in pairs]
    had = legacy(ids) if ids else set()
    candidates = [p for p, i in zip(pairs, ids) if i in had]
    if not candidates:
        return []
    locks = union([plugins(p) for p in candidates])
    keys: dict[str, tuple[object, Lock | CondaLock]] = {}
    for pair in candidates:
        model, bench = plugins(pair)
        lock = locks[(model.key, bench.key)]
        if not isinstance(lock, str):
            keys[pair_key(pair.model, pair.benchmark, pair.model_code_hash, pair.benchmark_code_hash,
                            lock.lock_hash)] = (pair, lock)
    kept = []
    for key in scored(list(keys)):
        pair, lock = keys[key]
        pair.key, pair.lock = key, PairEnvs.one_for_both(lock)
        kept.append(pair)
    return kept
