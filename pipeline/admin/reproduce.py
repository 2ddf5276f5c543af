"""Re-render the exact job that produced a score: the code at its commit, its own lockfiles (the model's side's
and the benchmark's; one for both when the score was made before the split, as that job ran)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select

from db.models import Attempt, BenchmarkInstance, BenchmarkType, Model, Run, Score
from envs.conda import lock_path
from envs.lock import EnvError, EnvSpec, validate_requirements
from envs.sides import SIDES, is_shared, side_hashes
from pipeline.stages.bundle import Bundle, render_bundle
from pipeline.config import Settings, replace, python_version
from pipeline.confine import lock_jail
from pipeline.database import Database
from pipeline.stages.detect import detect_all
from pipeline.errors import BadInput
from pipeline.stages.plan import conda_request, make_plan


def reproduce_score(settings: Settings, db: Database, score_id: int, out_dir: Path) -> Bundle:
    with db.sessions() as session:
        score = session.get(Score, score_id)
        if score is None:
            raise BadInput(f"no score with id {score_id}")
        model = session.get(Model, score.model_id).identifier
        instance = session.get(BenchmarkInstance, score.benchmark_instance_id)
        benchmark = session.get(BenchmarkType, instance.benchmark_type_id).identifier
        run = session.get(Run, score.run_id) if score.run_id else None
        if run is None:
            raise BadInput(f"score {score_id} has no run to reproduce from")
    # each side's own lockfile from the run's bundle (a score made before the split names one, for both sides)
    run_locks = Path(run.run_dir) / "locks"
    shared = is_shared(score.env_hash)
    originals = {}
    for side, env_hash in zip(SIDES, side_hashes(score.env_hash)):
        conda_lock = run_locks / env_hash / "conda-lock.yml"  # both layers of a conda environment
        originals[side] = conda_lock if conda_lock.exists() else run_locks / f"{env_hash}.txt"
        if not originals[side].exists():
            raise BadInput(f"the lockfile of score {score_id} is gone ({originals[side]})")
    conda = {side for side, path in originals.items() if path.name == "conda-lock.yml"}
    # Plan with a lock cache that holds exactly the original lockfiles, so nothing is solved again.
    backend = "conda" if conda == set(SIDES) else "uv"  # else a conda side is one that declares environment.yml
    mine = replace(settings, state_dir=out_dir / "state", env_root=settings.env_root, env_backend=backend)
    change, catalog = detect_all(Path(run.repo), score.commit, run.domain)
    mp, bp = catalog.by_identifier("models").get(model), catalog.by_identifier("benchmarks").get(benchmark)
    if mp is None or bp is None:
        raise BadInput(f"{model} or {benchmark} is not registered at {score.commit[:12]}")
    pyver = python_version(mine.python, mine.python_version)
    mine.locks_dir.mkdir(parents=True, exist_ok=True)
    for side, plugins in ((("model", (mp, bp)),) if shared else (("model", (mp,)), ("benchmark", (bp,)))):
        requirements = tuple(catalog.requirements(*plugins))
        if side in conda:
            request = conda_request(catalog, plugins, requirements, pyver, tuple(mine.conda_channels),
                                    tuple(mine.requirement_url_schemes))
            if isinstance(request, str):
                raise BadInput(f"score {score_id} cannot be reproduced: {request}")
            shutil.copyfile(originals[side], lock_path(mine.locks_dir, request[0], request[1], request[2]))
        else:
            try:
                spec = EnvSpec(validate_requirements(requirements, mine.requirement_url_schemes), pyver, "uv")
            except EnvError as exc:
                raise BadInput(f"score {score_id} cannot be reproduced: {exc}") from None
            shutil.copyfile(originals[side], mine.locks_dir / f"{spec.spec_hash}.txt")
    plan = make_plan(change, catalog, locks_dir=mine.locks_dir, uv=mine.coordinator_uv, python_version=pyver,
                     scored=lambda keys: set(), models=[model], benchmarks=[benchmark], backend=mine.env_backend,
                     conda_backend=mine.conda_backend, rattler_python=mine.rattler_python,
                     conda_channels=tuple(mine.conda_channels), url_schemes=mine.requirement_url_schemes,
                     jail=lock_jail(mine), shared=shared)
    [pair] = plan.to_run or plan.cannot_run
    if pair.problem:
        raise BadInput(f"score {score_id} cannot be reproduced: {pair.problem}")
    if pair.key != score.pair_key:
        raise BadInput(f"score {score_id} cannot be reproduced exactly: its key {score.pair_key} is now {pair.key}")
    with db.sessions() as session:  # the tier it succeeded on, when that tier is still configured
        tier = session.scalar(select(Attempt.tier).where(Attempt.run_id == run.id, Attempt.pair_key == pair.key,
                                                         Attempt.failure_kind.is_(None)).limit(1))
    if tier in {t.name for t in settings.tier_list}:
        pair.tier = tier
    return render_bundle(mine, plan, catalog.repo, "reproduce", out_dir=out_dir)
