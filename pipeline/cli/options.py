"""The options that name a change (repository, revisions, --all, plugins), declared once for the commands that
take one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pipeline.errors import BadInput



def _apply(func: Callable, decorators: list[Callable]) -> Callable:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def revision_options(func: Callable) -> Callable:
    """Which plugins: a change (--base/--head) or every plugin (--all), in a repository."""
    return _apply(func, [
        click.option("--repo", type=click.Path(path_type=Path), required=True,
                     help="plugins git repository (any folder inside it)"),
        click.option("--base", help="revision before the change"),
        click.option("--head", default="HEAD", show_default=True, help="revision after the change"),
        click.option("--all", "all_", is_flag=True, help="every plugin at --head, not a change"),
        click.option("--domain-root", help="top-level plugin folder (default: found from the repository)"),
    ])


def change_options(func: Callable) -> Callable:
    """Revision options, and which pairs of them to score."""
    return revision_options(_apply(func, [
        click.option("--models", help="model ids (comma-separated): narrow the pairs the change implies; when it "
                     "implies none (or with --all), score exactly the pairs these name"),
        click.option("--benchmarks", help="benchmark ids (comma-separated), narrowing like --models"),
        click.option("--force", is_flag=True, help="score even pairs already scored under the same key"),
        click.option("--backfill", is_flag=True, help="every plugin at --head, only the pairs the leaderboard "
                     "misses: never scored, lost to the infrastructure, or scored on an older version"),
        click.option("--retry-failed-solves", is_flag=True, help="solve again environments whose solve failed "
                     "recently (failures are otherwise cached for an hour)"),
    ]))


def require_one_mode(base: str | None, all_: bool) -> None:
    if all_ == bool(base):
        raise BadInput("give either --base REV (with --head) or --all")


def _ids(text: str | None, option: str = "--models") -> list[str] | None:
    """Comma-separated ids, spaces around the commas allowed: the one id syntax of the CLI and of the Jenkins
    parameters (MODELS, BENCHMARKS), checked by the rules every registered id meets (pipeline.catalog.ids)."""
    from pipeline.catalog.ids import identifier_problem

    if not text:
        return None
    ids = [t.strip() for t in text.split(",") if t.strip()]
    for i in ids:
        problem = identifier_problem(i)
        if problem:
            raise BadInput(f"{option}: {i!r}: {problem}")
    return ids


def _request(repo: Path, base: str | None, head: str, all_: bool, domain_root: str | None, models: str | None,
             benchmarks: str | None, force: bool, executor: str = "local", retry_failed_solves: bool = False,
             dry: bool = False, **extra: Any):
    from pipeline.orchestrator.run import Request

    if extra.get("backfill"):
        if base:
            raise BadInput("--backfill takes every plugin at --head: leave out --base")
        all_ = True
    require_one_mode(base, all_)
    return Request(repo=repo, base=base, head=head, all=all_, domain_root=domain_root, models=_ids(models),
                   benchmarks=_ids(benchmarks, "--benchmarks"), force=force, executor=executor,
                   failed_solves="retry" if retry_failed_solves else "plan" if dry else "use", dry=dry, **extra)
