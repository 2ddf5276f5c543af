"""`score-plugins`: a thin click layer over the pipeline. Data to stdout, logs to stderr.

Exit codes (contract): 0 all good; 1 the run finished but some pairs failed;
2 bad input or usage; 3 infrastructure unreachable.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.config import Settings, load_settings
from pipeline.errors import BadInput, PipelineError

from pipeline.console import coloured, err, out


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@dataclass
class Command:
    """What every command gets, once: its profile, output format, the settings (every layer, flags on top)."""

    profile: str
    fmt: str
    settings: Settings
    yes_prod: bool = False

    def database(self, *, read_only: bool = False, migrate_schema: bool = True,
                 allow_prod: bool | None = None) -> ContextManager[Any]:
        return database(self.profile, self.settings, self.yes_prod if allow_prod is None else allow_prod,
                        migrate_schema=migrate_schema, read_only=read_only)

    def emit(self, data: Any, people: Callable[[], None] | None = None, rows: list[dict] | None = None) -> None:
        """The one output helper: `json` prints `data`; `csv` prints `rows`; `table` calls `people` (default:
        `key: value` lines of `data`)."""
        if self.fmt == "json":
            emit_json(data)
        elif self.fmt == "csv":
            import csv

            rows = rows if rows is not None else (data if isinstance(data, list) else [data])
            writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["model", "benchmark", "score"])
            writer.writeheader()
            writer.writerows(rows)
        elif people is not None:
            people()
        else:
            for key, value in data.items():
                out.print(f"{key}: {_plain(value)}", highlight=False)


FORMAT_HELP = {"table": "table for people", "json": "json for programs", "csv": "csv for spreadsheets",
               "html": "html: one static page"}


class FullHelpGroup(click.Group):
    """`--help` lists each command with its whole first sentence (click cuts it to the terminal's width)."""

    group_class = type  # subgroups list their commands the same way

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str(limit=300)) for name in self.list_commands(ctx)
                for cmd in [self.get_command(ctx, name)] if cmd is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def common(formats: tuple[str, ...] = ("table", "json"), prod: bool | str = True) -> Callable:
    """Options every command shares, declared once: --profile, --format (where it prints data), --yes-prod
    (where it writes to a database). The command gets one `Command`; errors map to the contract's exit codes."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, profile: str, fmt: str = "table", yes_prod: bool = False, **kwargs: Any) -> Any:
            from sqlalchemy.exc import OperationalError

            from jobscripts.render import RenderError

            try:
                check_profile(profile or "local")
                overrides = click.get_current_context().find_root().obj or {}
                cmd = Command(profile or "local", fmt, load_settings(overrides), yes_prod)
                from pipeline.confine import refuse_unconfined_prod

                refuse_unconfined_prod(cmd.profile, cmd.settings)
                return func(cmd, *args, **kwargs)
            except PipelineError as exc:
                err.print(coloured("error:", "red", str(exc)))
                sys.exit(exc.exit_code)
            except RenderError as exc:  # a setting that cannot go into a job script
                err.print(coloured("error:", "red", f"cannot render the job script: {exc}"))
                sys.exit(2)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP during a run (pipeline.admin.signals)
                from pipeline.admin.signals import stopped_from

                stop = stopped_from(exc)
                err.print(coloured("interrupted:", "yellow", f"stopped by {stop.name}; what finished is kept "
                                   "(`score-plugins reconcile` closes what was left open)"))
                sys.exit(stop.exit_code)
            except BrokenPipeError:  # `| head`: the reader has what it wanted; end quietly, exit 0
                _quiet_after_broken_pipe()
            except OSError as exc:  # a path the user gave: not writable, a file where a folder was meant...
                if DEBUG:
                    raise
                where = f" {exc.filename}" if exc.filename else ""
                err.print(coloured("error:", "red", f"cannot use{where}: {exc.strerror or exc}"))
                sys.exit(2)
            except OperationalError as exc:  # the database went away mid-command; never print its URL
                err.print(coloured("error:", "red", f"the database became unreachable ({type(exc.orig).__name__}); "
                                   "results already written stay in the run's spool: run `score-plugins reconcile` "
                                   "when it is back"))
                sys.exit(3)
            except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback (unless --debug)
                if DEBUG:
                    raise
                err.print(coloured("error:", "red", f"unexpected {type(exc).__name__}: {exc} "
                                   "(run with --debug for the traceback, and please report it)"))
                sys.exit(1)
        if prod:  # "hidden": a read-only command accepts the flag (scripts pass it) but does not offer it
            wrapper = click.option("--yes-prod", is_flag=True, hidden=prod == "hidden",
                                   help="confirm a command that writes to the prod database")(wrapper)
        if formats:
            wrapper = click.option("--format", "fmt", type=click.Choice(list(formats)), default=formats[0],
                                   show_default=True, help=", ".join(FORMAT_HELP[f] for f in formats))(wrapper)
        return click.option("--profile", default="local", show_default=True, envvar="SCORE_PLUGINS_PROFILE",
                            help="database profile: prod, dev, test or local")(wrapper)

    return decorate


def _quiet_after_broken_pipe() -> None:
    """The reader of stdout went away (`| head -2`): no error line, exit 0 (a `set -o pipefail` script goes on);
    stdout points at /dev/null so the interpreter's final flush cannot complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    sys.exit(0)


out.on_broken_pipe = _quiet_after_broken_pipe  # rich's own default exits 1


STANDARD_PROFILES = ("local", "prod", "dev", "test")


def check_profile(name: str) -> None:
    """A profile is one of the standard names, or one with its own SCORE_PLUGINS_DB_<NAME>: a typo is refused by
    every command, not only by those that open the database."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise BadInput(f"--profile {name!r} is not a profile name (lower-case letters, digits, _)")
    if name not in STANDARD_PROFILES and f"SCORE_PLUGINS_DB_{name.upper()}" not in os.environ:
        raise BadInput(f"unknown profile {name!r}: use local, prod, dev or test, or set "
                       f"SCORE_PLUGINS_DB_{name.upper()}")


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    """`--set name=value` pairs: the flags layer of the settings, above the environment."""
    from dataclasses import fields

    known = {f.name for f in fields(Settings)}
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise click.BadParameter(f"{item!r}: give name=value with a setting's name (see `score-plugins config`)",
                                     param_hint="--set")
        overrides[name] = value
    return overrides


DEBUG = False


@click.group(cls=FullHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="more log lines on stderr")
@click.option("--debug", is_flag=True, help="show the traceback of an unexpected error")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="a setting for this command, above the site file and the environment (repeatable)")
@click.version_option(package_name="score-plugins")
@click.pass_context
def main(ctx: click.Context, verbose: bool, debug: bool, overrides: tuple[str, ...]) -> None:
    """Score model and benchmark plugins: detect, plan, render, submit, record, notify."""
    global DEBUG
    DEBUG = debug
    ctx.obj = parse_overrides(overrides)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


# --- examples -----------------------------------------------------------------------------------------------

@main.group()
def examples() -> None:
    """Example plugin repositories."""


@examples.command("create")
@click.argument("dest", type=click.Path(path_type=Path))
@common(formats=(), prod=False)
def examples_create(cmd: Command, dest: Path) -> None:
    """Write a git repository of example plugins: base plugins, a new model, a new benchmark."""
    from pipeline import examples as ex

    commits = ex.create(dest)
    for commit, meta in zip(commits, ex.COMMITS):
        err.print(f"{commit[:12]} {meta.author_email}: {meta.message}", highlight=False)
    click.echo(str(dest.resolve()))


# --- detect / plan ------------------------------------------------------------------------------------------

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


def _ids(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _request(repo: Path, base: str | None, head: str, all_: bool, domain_root: str | None, models: str | None,
             benchmarks: str | None, force: bool, executor: str = "local", retry_failed_solves: bool = False,
             dry: bool = False, **extra: Any):
    from pipeline.stages.run import Request

    if extra.get("backfill"):
        if base:
            raise BadInput("--backfill takes every plugin at --head: leave out --base")
        all_ = True
    require_one_mode(base, all_)
    return Request(repo=repo, base=base, head=head, all=all_, domain_root=domain_root, models=_ids(models),
                   benchmarks=_ids(benchmarks), force=force, executor=executor,
                   failed_solves="retry" if retry_failed_solves else "plan" if dry else "use", **extra)


@main.command()
@click.option("--repo", type=click.Path(path_type=Path), required=True,
              help="plugins git repository (any folder inside it)")
@click.option("--base", required=True, help="revision before the change")
@click.option("--head", default="HEAD", show_default=True, help="revision after the change")
@click.option("--domain-root", help="top-level plugin folder (default: found from the repository)")
@common(prod=False)
def detect(cmd: Command, repo: Path, base: str, head: str, domain_root: str | None) -> None:
    """What the change base..head touches (Brain-Score's get_scoring_info, as JSON)."""
    from pipeline.stages.detect import detect as run_detect

    change, _ = run_detect(repo, base, head, domain_root, cmd.settings.cache_dir)
    data = change.to_json()
    report_issues(change.issues)

    def people() -> None:
        table = Table("key", "value")
        for key, value in data.items():
            if key != "issues":
                table.add_row(key, _plain(value))
        out.print(table)

    cmd.emit(data, people)
    sys.exit(2 if change.errors else 0)


@main.command()
@click.option("--repo", type=click.Path(path_type=Path), required=True)
@click.option("--rev", default="HEAD", show_default=True)
@click.option("--domain-root")
@common(prod=False)
def tree(cmd: Command, repo: Path, rev: str, domain_root: str | None) -> None:
    """Where each benchmark hangs in the leaderboard: its parent= (or why it cannot be read statically), and
    how many benchmarks each parent has."""
    from pipeline.leaderboard.treeview import repository_tree

    data = repository_tree(repo, rev, domain_root, cmd.settings.cache_dir, cmd.settings.hierarchy)

    def people() -> None:
        for row in data["benchmarks"]:
            where = row["parent"] if row["parent"] else f"unreadable: {row['unreadable'] or 'no parent'}"
            out.print(f"{row['benchmark']}: {where}", highlight=False)
        for parent, n in data["leaves_per_parent"].items():
            out.print(f"{parent}: {n} benchmark(s)", highlight=False)
        c = data["counts"]
        out.print(f"{c['benchmarks']} benchmarks, parent read for {c['parent_read']}, {c['under_a_level']} under a "
                  f"level of the {data['domain']} hierarchy", highlight=False)

    cmd.emit(data, people)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def nothing_to_score(plan) -> str:  # noqa: ANN001 - pipeline.stages.plan.Plan
    """Why a plan has nothing to run, in words that fit the case."""
    parts = []
    if plan.already_scored:
        parts.append(f"{len(plan.already_scored)} pair(s) already scored for the same code and environment "
                     "(--force scores them again)")
    if plan.in_flight:
        parts.append(f"{len(plan.in_flight)} pair(s) being scored by run(s) "
                     f"{', '.join(sorted(set(plan.in_flight.values())))}")
    if plan.cannot_run:
        reasons = sorted({p.problem or "" for p in plan.cannot_run})
        parts.append(f"{len(plan.cannot_run)} pair(s) cannot run ({'; '.join(reasons)[:300]})")
    return "; ".join(parts) or "the change implies no pair (no new or changed model or benchmark)"


def _plain(value: Any) -> str:
    """A value for people: lists joined, mappings as `key: value`, text as it is (not JSON-escaped)."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return "" if value is None else str(value)


def report_issues(issues: list[dict]) -> None:
    """Each problem on stderr as `file:line: severity: message` (stdout stays data only)."""
    for i in issues:
        colour = "red" if i["severity"] == "error" else "yellow"
        err.print(Text(f"{i['file']}:{i['line']}: {i['severity']}: {i['message']}", style=colour))


@contextmanager
def database(profile: str, settings: Settings, yes_prod: bool = False, *, migrate_schema: bool = True,
             read_only: bool = False) -> Iterator:
    """The profile's database for one command, closed when the command ends. A read-only command on the local
    profile never creates an empty database: it says where it looked."""
    from pipeline.database import open_database

    state_dir = settings.state_dir
    if read_only and profile == "local" and not (state_dir / "local.db").exists() \
            and "SCORE_PLUGINS_DB_LOCAL" not in os.environ:
        raise BadInput(f"no local database at {state_dir / 'local.db'} (looked for .score-plugins in "
                       f"{Path.cwd()} and its parents); run this where `score-plugins run` ran, or set "
                       "SCORE_PLUGINS_STATE_DIR")
    db = open_database(profile, state_dir, allow_prod=yes_prod, migrate_schema=migrate_schema)
    try:
        yield db
    finally:
        db.close()


@main.command()
@change_options
@click.option("--pairs", "with_pairs", is_flag=True, help="JSON: list every pair (default: a compact summary)")
@common()
def plan(cmd: Command, with_pairs: bool, **opts: Any) -> None:
    """The pairs to score, minus those already scored for the same code and environment."""
    from pipeline.stages.run import detect_and_plan

    with cmd.database() as db:
        change, _, the_plan = detect_and_plan(cmd.settings, db, _request(**opts, dry=True))
    data = the_plan.to_json(pairs=with_pairs)
    data["issues"] = change.issues
    report_issues(change.issues)

    def people() -> None:
        table = Table("model", "benchmark", "status", "tier", "why")
        for status, pairs in (("to run", the_plan.to_run), ("already scored", the_plan.already_scored),
                              ("cannot run", the_plan.cannot_run)):
            for p in pairs:
                table.add_row(p.model, p.benchmark, status, f"{p.tier} ({p.tier_why})" if p.tier else "",
                              "; ".join(p.reasons) + (f" ({p.problem})" if p.problem else ""))
        out.print(table)
        err.print(f"{len(the_plan.to_run)} to run, {len(the_plan.already_scored)} already scored, "
                  f"{len(the_plan.cannot_run)} cannot run", highlight=False)

    cmd.emit(data, people)
    sys.exit(2 if change.errors else 0)


# --- run / render / ingest ----------------------------------------------------------------------------------

@main.command()
@change_options
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit", "pyslurm"]), default="local",
              show_default=True, help="local: subprocesses here; slurm: sbatch arrays; submitit: Slurm through "
              "submitit; pyslurm: Slurm's C API (needs pyslurm matching the cluster)")
@click.option("--dry-run", is_flag=True, help="detect and plan only; submit nothing")
@click.option("--submitter", "submitters", multiple=True, help="also email this address (Jenkins parameter)")
@click.option("--jenkins-build", envvar="BUILD_TAG", help="Jenkins build id to record")
@click.option("--build-url", envvar="BUILD_URL", help="link to the Jenkins build in emails")
@common()
def run(cmd: Command, dry_run: bool, submitters: tuple[str, ...], jenkins_build: str | None,
        build_url: str | None, **opts: Any) -> None:
    """Detect, plan, render, submit, wait, record and notify."""
    from pipeline.stages import run as runner

    req = _request(**opts, jenkins_build=jenkins_build, build_url=build_url, extra_recipients=list(submitters),
                   dry=dry_run)
    if req.executor != "local":
        warn_time_budget(cmd.settings)
    with cmd.database() as db:
        if dry_run:
            change, _, the_plan = runner.detect_and_plan(cmd.settings, db, req)
            result = runner.RunResult(change, the_plan)
        else:
            result = _execute(cmd, db, req)
    _report_run(cmd, result, dry_run)
    _exit_run(result)


def _execute(cmd: Command, db, req):  # noqa: ANN001, ANN202 - Database, Request -> RunResult
    """Execute a run with progress on stderr; Ctrl-C, SIGTERM and SIGHUP cancel it (recorded and emailed)."""
    from pipeline.stages import run as runner
    from pipeline.admin.signals import stop_on_signals

    try:
        with stop_on_signals(), ProgressReporter() as reporter:
            return runner.execute(cmd.settings, db, req, on_progress=reporter.update)
    except runner.Interrupted as stop:  # cancelled, recorded and emailed: report it, then exit 128 + signal
        return stop.result


def _exit_run(result, refused_is_error: bool = True) -> None:  # noqa: ANN001 - RunResult
    if result.interrupted:
        name = result.stop.name if result.stop else "Ctrl-C"
        err.print(coloured("interrupted:", "yellow", f"run {result.run_id} was cancelled by {name}; finished "
                           "pairs are kept, the others are recorded CANCELLED and the submitters were told"))
        sys.exit(result.exit_code)
    # failed pairs (1) outrank refused plugins (2): the run itself did its work
    sys.exit(result.exit_code or (2 if refused_is_error and result.change.errors else 0))


def warn_time_budget(settings: Settings) -> None:
    """One warning line when a Slurm task's worst case does not fit its time limit."""
    from pipeline.admin.settings_info import time_budget_problem

    problem = time_budget_problem(settings)
    if problem:
        err.print(coloured("warning:", "yellow", problem))


class ProgressReporter:
    """Live progress on stderr: a status line in a terminal, one line per change elsewhere (Jenkins)."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.last = ""
        self.status = None

    def __enter__(self) -> "ProgressReporter":
        if self.live:
            self.status = err.status("scoring: waiting for the first results")
            self.status.__enter__()
        return self

    def update(self, progress) -> None:  # noqa: ANN001 - pipeline.stages.watch.Progress
        tasks = ", ".join(f"{k.lower()} {v}" for k, v in sorted(progress.tasks.items()))
        line = progress.line() + (f"; array tasks: {tasks}" if tasks else "")
        if self.live and self.status is not None:
            self.status.update(Text("scoring: " + line))
        else:
            key = f"{progress.done}/{progress.failed}/{tasks}"
            if key != self.last:  # one line per change, not per poll
                self.last = key
                err.print(Text("score-plugins: " + line))

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)


def _report_run(cmd: Command, result, dry_run: bool = False) -> None:  # noqa: ANN001 - RunResult
    """A run's outcome: problems on stderr, then the result as JSON or a table."""
    report_issues(result.change.issues)
    if result.plan.in_flight:
        runs = ", ".join(sorted(set(result.plan.in_flight.values())))
        err.print(f"{len(result.plan.in_flight)} pairs are still being scored by run(s) {runs}: not submitted "
                  "again (`score-plugins reconcile` closes runs whose coordinator is gone)", highlight=False)
    for problem in result.problems:
        err.print(Text(str(problem), style="yellow"))
    cmd.emit(result.to_json(), lambda: _print_run(result, dry_run))


def _print_run(result, dry_run: bool) -> None:  # noqa: ANN001 - RunResult
    plan = result.plan
    if dry_run:
        out.print(f"dry run: {len(plan.to_run)} pairs would be scored, {len(plan.already_scored)} already scored, "
                  f"{len(plan.cannot_run)} cannot run", highlight=False)
        return
    if result.run_id is None:
        what = nothing_to_score(plan)
        errors = len(result.change.errors)
        out.print(f"nothing scored: {what}" + (f"; {errors} plugin problem(s) above" if errors else ""))
        return
    table = Table("model", "benchmark", "state", "score", "reason", title=f"run {result.run_id}")
    for p in result.pairs:
        score = f"{p['score']:.4f}" if p["score"] is not None else ""
        reason = f"{p['stage']}: {p['reason']}" if p["stage"] else (p["reason"] or "")
        table.add_row(p["model"], p["benchmark"], p["state"], score, reason)
    out.print(table)
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.states.items()))
    out.print(f"run {result.run_id}: {states}; {len(plan.already_scored)} already scored; "
              f"{_count(len(result.emails), 'email')} in the outbox", highlight=False)


@main.command()
@change_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="bundle folder")
@common()
def render(cmd: Command, out_dir: Path, **opts: Any) -> None:
    """Write standalone job scripts and manifest that an admin can `sbatch` by hand."""
    from pipeline.stages.bundle import render_bundle
    from pipeline.stages.run import detect_and_plan, record_run
    from pipeline.admin.repair import MANUAL
    from db.states import State

    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BadInput(f"--out {out_dir}: {'not a folder' if not out_dir.is_dir() else 'folder is not empty'}; "
                       "give a new or empty folder")
    warn_time_budget(cmd.settings)
    with cmd.database() as db:
        _, catalog, the_plan = detect_and_plan(cmd.settings, db, _request(**opts))
    if not the_plan.to_run:
        raise BadInput("nothing to render: " + nothing_to_score(the_plan))
    req = _request(**opts, executor=MANUAL)
    bundle = render_bundle(cmd.settings, the_plan, catalog.repo, MANUAL, out_dir=out_dir)
    with cmd.database() as db:
        # so `ingest DIR` has rows to complete; RENDERED pairs are not claimed: they never block a later run
        record_run(db, bundle, the_plan, req, str(catalog.repo), state=State.RENDERED)
    scripts = [str(script) for script, _, _ in bundle.arrays()] or [str(bundle.job_script)]  # one per tier
    cmd.emit({"run_id": bundle.run_id, "run_dir": str(bundle.run_dir), "job_script": str(bundle.job_script),
              "job_scripts": scripts,
              "manifest": str(bundle.manifest_path), "array_tasks": bundle.n_tasks, "pairs": len(bundle.pairs()),
              **hand_commands(bundle, scripts)})


def hand_commands(bundle, scripts: list[str] | None = None) -> dict[str, str]:  # noqa: ANN001 - pipeline.stages.bundle.Bundle
    """The shell lines that run a bundle by hand (shell-quoted: paths may hold spaces or `$`); one sbatch
    line per tier's job script."""
    import shlex

    script, folder = shlex.quote(str(bundle.job_script)), shlex.quote(str(bundle.run_dir))
    scripts = scripts or [str(bundle.job_script)]
    last = max(bundle.n_tasks - 1, 0)
    return {"run_locally": f"cd {folder} && for i in $(seq 0 {last}); do SLURM_ARRAY_TASK_ID=$i bash {script}; done",
            "submit": "; ".join(f"sbatch {shlex.quote(s)}" for s in scripts), "ingest": f"score-plugins ingest {folder}"}


@main.command("test-plugins")
@revision_options
@click.option("--junit", type=click.Path(path_type=Path), required=True, help="where to write the JUnit XML report")
@common(prod=False)
def test_plugins(cmd: Command, repo: Path, base: str | None, head: str, all_: bool, domain_root: str | None,
                 junit: Path) -> None:
    """Run each changed plugin's test.py with pytest in the plugin's own environment (unittests_plugins)."""
    from pipeline.stages.detect import detect as run_detect
    from pipeline.stages.detect import detect_all
    from pipeline.stages.plugin_tests import run_plugin_tests

    require_one_mode(base, all_)
    change, catalog = detect_all(repo, head, domain_root) if all_ else run_detect(repo, base, head, domain_root)
    report_issues(change.issues)
    results = run_plugin_tests(cmd.settings, change, catalog, junit)

    def people() -> None:
        for r in results:
            out.print(f"{r.plugin}: {r.status}", highlight=False)

    cmd.emit([r.__dict__ for r in results], people)
    failed = [r.plugin for r in results if r.status in ("failed", "error")]
    if failed:
        err.print(f"plugin tests failed: {', '.join(failed)}", highlight=False)
        sys.exit(1)
    sys.exit(2 if change.errors else 0)


@main.command()
@click.argument("run", required=False)
@common()
def ingest(cmd: Command, run: str | None) -> None:
    """Load spooled results of RUN (a run id or a bundle folder; default: every run) into the database."""
    from pipeline.stages.ingest import ingest_folders, run_folders

    folders = run_folders(cmd.settings.runs_dir, run)
    with cmd.database(read_only=True) as db:
        totals = ingest_folders(db, folders)
        from pipeline.admin.runs import close_ingested_renders

        close_ingested_renders(db, folders)
    cmd.emit({"runs": [str(f) for f in folders], **totals},
             lambda: out.print(f"{totals['scores']} new scores, {totals['duplicates']} already present, "
                               f"{totals['failures']} failures recorded, from {len(folders)} run folder(s)",
                               highlight=False))


# --- leaderboard / status -----------------------------------------------------------------------------------

@main.command()
@click.option("--view", type=click.Choice(["scores", "models"]), default="scores", show_default=True,
              help="scores: one row per model x benchmark; models: Brain-Score's aggregates, rank and coverage")
@common(formats=("table", "json", "csv", "html"), prod="hidden")
def leaderboard(cmd: Command, view: str) -> None:
    """The newest scores, or by model Brain-Score's tree of aggregates and ranks (read-only: prod needs no
    --yes-prod). The HTML page always shows the tree, with every score's provenance."""
    from pipeline.leaderboard.report import leaderboard as newest_scores
    from pipeline.leaderboard.report import leaderboard_grid

    with cmd.database(read_only=True, allow_prod=True) as db:
        rows = newest_scores(db)
        if view == "models" or cmd.fmt == "html":
            from pipeline.leaderboard.views import emit_models, render_html
            from pipeline.leaderboard.standings import standings

            boards = standings(db, cmd.settings.hierarchy)
    if cmd.fmt == "html":
        click.echo(render_html(boards, rows, title=f"Leaderboard ({cmd.profile})"))
        return
    if view == "models":
        emit_models(cmd, boards)
        return

    def people() -> None:
        benchmarks, grid = leaderboard_grid(rows)
        table = Table("model", *benchmarks, title="leaderboard")
        for model, scores in grid:
            table.add_row(model, *[f"{s:.4f}" if s is not None else "-" for s in scores])
        out.print(table)

    cmd.emit(rows, people, rows=rows)


@main.command()
@click.argument("run", required=False)
@common(prod="hidden")
def status(cmd: Command, run: str | None) -> None:
    """Counts per state of RUN (default: the newest run), and each pair's state."""
    from pipeline.leaderboard.report import run_status

    from pipeline.admin.runs import resolve_run_id

    with cmd.database(read_only=True, allow_prod=True) as db:
        data = run_status(db, resolve_run_id(db, run) if run else None)

    def people() -> None:
        unconfined = ", sandbox OFF: plugins ran unconfined" if data.get("sandbox") == "off" else ""
        table = Table("model", "benchmark", "state", "job", "reason",
                      title=f"run {data['run_id']} ({data['status']}{unconfined})")
        for j in data["jobs"]:
            table.add_row(j["model"], j["benchmark"], j["state"], f"{j['job_id']}[{j['array_index']}]",
                          f"{j['stage']}: {j['reason']}" if j["stage"] else (j["reason"] or ""))
        out.print(table)
        out.print(", ".join(f"{n} {s.lower()}" for s, n in sorted(data["counts"].items()))
                  + f"; {data['cpu_hours']} CPU-hours", highlight=False)
        if data["attempts"]:
            tries = Table("model", "benchmark", "attempt", "tier", "outcome", "peak", "elapsed", "job",
                          title="attempts")
            for a in data["attempts"]:
                peak = f"{a['max_rss_bytes'] / 2**30:.2f} GB" if a["max_rss_bytes"] else ""
                tries.add_row(a["model"], a["benchmark"], str(a["attempt"]), a["tier"],
                              a["failure_kind"] or "COMPLETED", peak,
                              f"{a['elapsed_seconds']:.0f} s" if a["elapsed_seconds"] is not None else "",
                              str(a["job_id"] or ""))
            out.print(tries)
            u = data["usage"]
            out.print(f"{u['attempts']} attempts, {u['escalations']} escalations; CPU-hours {u['cpu_hours_used']} "
                      f"used of {u['cpu_hours_requested']} requested, GB-hours {u['gb_hours_used']} used of "
                      f"{u['gb_hours_requested']} requested, GPU-hours {u['gpu_hours_requested']} requested",
                      highlight=False)

    cmd.emit(data, people)


@main.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="how many runs, newest first")
@common(prod=False)
def runs(cmd: Command, limit: int) -> None:
    """The newest runs: id, status, executor, when, commit and pairs per state (any unique prefix of an id names
    its run in status, cancel and rerun)."""
    from pipeline.admin.runs import list_runs

    with cmd.database(read_only=True, allow_prod=True) as db:
        data = list_runs(db, limit)

    def people() -> None:
        table = Table("run", "status", "executor", "created", "commit", "pairs", title="runs")
        for r in data:
            table.add_row(r["run_id"], r["status"], r["executor"], r["created_at"][:19], (r["commit"] or "")[:12],
                          ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["counts"].items())))
        out.print(table)

    cmd.emit(data, people, rows=[{k: v for k, v in r.items() if k != "counts"} for r in data])


@main.command()
@common()
def reconcile(cmd: Command) -> None:
    """Close rows of ended or vanished jobs (every run with open rows), with the reason."""
    from pipeline.admin.repair import reconcile_all

    with cmd.database(read_only=True) as db:
        data = reconcile_all(cmd.settings, db)

    def people() -> None:
        for run_id, changes in data.items():
            out.print(f"{run_id}: " + (", ".join(f"{n} {s.lower()}" for s, n in changes.items()) or "no change"),
                      highlight=False)
        if not data:
            out.print("no run has open jobs")

    cmd.emit(data, people)


@main.command()
@click.argument("run_id")
@common()
def cancel(cmd: Command, run_id: str) -> None:
    """Cancel RUN's pending and running tasks; finished results are kept."""
    from pipeline.admin.repair import cancel_run

    from pipeline.admin.runs import resolve_run_id

    with cmd.database(read_only=True) as db:
        run_id = resolve_run_id(db, run_id)
        n = cancel_run(cmd.settings, db, run_id)
    cmd.emit({"run_id": run_id, "cancelled": n},
             lambda: out.print(f"run {run_id}: {n} pairs cancelled", highlight=False))


@main.command()
@click.argument("run_id")
@click.option("--failed", "failed_only", is_flag=True, required=True, help="rerun the pairs that did not complete")
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit"]), help="default: the run's own")
@common()
def rerun(cmd: Command, run_id: str, failed_only: bool, executor: str | None) -> None:
    """Run again, as a new run at the same commit, every pair of RUN that did not complete."""
    from pipeline.stages import run as runner
    from pipeline.admin.repair import failed_pairs

    with cmd.database(read_only=True) as db:
        from pipeline.admin.rerun import original_recipients

        from pipeline.admin.runs import resolve_run_id

        old, pairs = failed_pairs(db, resolve_run_id(db, run_id))
        result = _execute(cmd, db, runner.rerun_request(old, pairs, executor,
                                                        original_recipients(db, old.id, pairs)))
    _report_run(cmd, result)
    _exit_run(result, refused_is_error=False)


@main.command()
@click.argument("score_id", type=int)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@common()
def reproduce(cmd: Command, score_id: int, out_dir: Path) -> None:
    """Re-render the exact job (code at the score's commit, its lockfile) that produced SCORE_ID."""
    from pipeline.admin.reproduce import reproduce_score

    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BadInput(f"--out {out_dir}: {'not a folder' if not out_dir.is_dir() else 'folder is not empty'}; "
                       "give a new or empty folder")
    with cmd.database(read_only=True) as db:
        bundle = reproduce_score(cmd.settings, db, score_id, out_dir)
        original = original_score(db, score_id)
    cmd.emit({"score_id": score_id, "original": original, "run_dir": str(bundle.run_dir),
              "job_script": str(bundle.job_script), **hand_commands(bundle)})


def original_score(db, score_id: int) -> dict:  # noqa: ANN001 - Database
    """What the reproduced score was, to compare the new one with."""
    from db.models import Score

    with db.sessions() as session:
        s = session.get(Score, score_id)
        return {"score": s.score_ceiled, "score_raw": s.score_raw, "commit": s.commit, "run_id": s.run_id,
                "env_hash": s.env_hash, "job_id": s.job_id}


@main.command()
@click.option("--older-than", "days", type=float, required=True, metavar="DAYS",
              help="environments no run used for DAYS, and finished runs that ended DAYS ago")
@click.option("--yes", is_flag=True, help="remove them (without it: list what would go and what it frees)")
@common(prod="hidden")
def prune(cmd: Command, days: float, yes: bool) -> None:
    """Free disk: unused environments and the logs, spool and code copy of old finished runs (database rows,
    manifests and lockfiles stay, so every score can still be reproduced)."""
    from pipeline.admin.prune import prune as run_prune

    with cmd.database(read_only=True, allow_prod=True) as db:
        report = run_prune(cmd.settings, db, days, remove=yes)

    def people() -> None:
        verb = "removed" if yes else "would remove"
        for e in report.environments:
            out.print(f"{verb} environment {e['path']} ({e['bytes'] / 2**20:.1f} MiB)", highlight=False)
        for r in report.runs:
            out.print(f"{verb} logs, spool and code of run {r['run_id']} ({r['bytes'] / 2**20:.1f} MiB)",
                      highlight=False)
        out.print(f"{verb} {report.freed_bytes / 2**20:.1f} MiB" + ("" if yes else "; add --yes to do it"),
                  highlight=False)

    cmd.emit(report.to_json(), people)


@main.group()
def scores() -> None:
    """Scores in force and their history (replaced by a forced re-score, or removed by an administrator)."""


@scores.command("remove")
@click.argument("score_id", type=int)
@click.option("--reason", required=True, help="why (kept with the score in its history)")
@click.option("--by", "who", help="who removes it (default: the login name)")
@common()
def scores_remove(cmd: Command, score_id: int, reason: str, who: str | None) -> None:
    """Take SCORE_ID off the leaderboard (a test score, a wrong one): it moves to the score history with who,
    when and why. A later run that asks for the pair may score it again."""
    import getpass

    from db.history import move_to_history
    from db.session import session_scope

    who = who or getpass.getuser()
    with cmd.database(read_only=True) as db, session_scope(db.sessions) as session:
        if not move_to_history(session, [score_id], f"removed by {who}: {reason}"):
            raise BadInput(f"no score with id {score_id} in force (`score-plugins scores history` lists removed ones)")
    cmd.emit({"score_id": score_id, "removed_by": who, "reason": reason},
             lambda: out.print(f"score {score_id} removed by {who}: {reason}", highlight=False))


@scores.command("history")
@common(prod=False)
def scores_history(cmd: Command) -> None:
    """Scores no longer in force: when, why, and the score that replaced each (if any)."""
    from sqlalchemy import select

    from db.models import BenchmarkInstance, BenchmarkType, Model, ScoreHistory

    with cmd.database(read_only=True, allow_prod=True) as db, db.sessions() as session:
        rows = [{"id": h.id, "model": m, "benchmark": b, "score": h.score_ceiled, "run_id": h.run_id,
                 "superseded_at": h.superseded_at.isoformat(), "superseded_by": h.superseded_by, "reason": h.reason}
                for h, m, b in session.execute(
                    select(ScoreHistory, Model.identifier, BenchmarkType.identifier)
                    .join(Model, ScoreHistory.model_id == Model.id)
                    .join(BenchmarkInstance, ScoreHistory.benchmark_instance_id == BenchmarkInstance.id)
                    .join(BenchmarkType, BenchmarkInstance.benchmark_type_id == BenchmarkType.id)
                    .order_by(ScoreHistory.superseded_at, ScoreHistory.id))]

    def people() -> None:
        table = Table("id", "model", "benchmark", "score", "when", "why", title="score history")
        for r in rows:
            table.add_row(str(r["id"]), r["model"], r["benchmark"], "" if r["score"] is None else f"{r['score']:.4f}",
                          r["superseded_at"][:19], r["reason"])
        out.print(table)

    cmd.emit(rows, people)


# --- db / notify / config -----------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """Alembic migrations of the profile's database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@common(formats=())
def db_upgrade(cmd: Command, revision: str) -> None:
    """Migrate the profile's database up to REVISION."""
    from db import migrate

    migrate.check_revision(revision)
    with cmd.database(migrate_schema=False) as db:
        migrate.upgrade(db.engine, revision)
        click.echo(f"{cmd.profile}: at {migrate.current(db.engine)}")


@db.command("downgrade")
@click.option("--revision", required=True, help="the revision to go down to (`base` removes every table)")
@click.option("--yes", is_flag=True, help="confirm: a downgrade drops what newer revisions added, data included")
@common(formats=())
def db_downgrade(cmd: Command, revision: str, yes: bool) -> None:
    """Migrate the profile's database down to REVISION (destructive: needs --yes)."""
    from db import migrate

    migrate.check_revision(revision)
    with cmd.database(migrate_schema=False) as db:
        now = migrate.current(db.engine)
        what = ("every table and every score" if revision == "base"
                else f"what the revisions after {revision} added")
        if not yes:
            raise BadInput(f"db downgrade {cmd.profile} from {now} to {revision} would remove {what} "
                           f"of {db.profile.safe_url}; add --yes to do it")
        migrate.downgrade(db.engine, revision)
        click.echo(f"{cmd.profile}: at {migrate.current(db.engine)}")


@db.command("current")
@common(prod="hidden")
def db_current(cmd: Command) -> None:
    """The profile's schema revision, and the newest one this version knows."""
    from db import migrate

    with cmd.database(migrate_schema=False, read_only=True, allow_prod=True) as db:
        data = {"profile": cmd.profile, "database": db.profile.safe_url, "current": migrate.current(db.engine),
                "head": migrate.head()}
    cmd.emit(data, lambda: click.echo(f"{data['profile']}: {data['current']} (newest {data['head']})"))


@main.group()
def notify() -> None:
    """The email outbox."""


@notify.command("flush")
@common(prod=False)
def notify_flush(cmd: Command) -> None:
    """Send what waits in the outbox over SMTP (SCORE_PLUGINS_SMTP_URL or _<PROFILE>)."""
    from notify.outbox import Outbox
    from notify.smtp import SmtpConfigError, flush, smtp_from_environment

    outbox = Outbox(cmd.settings.outbox_dir)
    try:
        smtp = smtp_from_environment(cmd.profile)
    except SmtpConfigError as exc:
        raise BadInput(str(exc)) from None
    if smtp is None:
        waiting = len(outbox.pending())
        if not waiting:  # nothing to send: nothing is wrong
            out.print(f"nothing waits in {outbox.root}", highlight=False)
            return
        raise BadInput(f"no SMTP server configured (SCORE_PLUGINS_SMTP_URL); {_count(waiting, 'message')} "
                       f"wait in {outbox.root}")
    report = flush(outbox, smtp)

    def people() -> None:
        out.print(f"sent {len(report.sent)} (of which {len(report.recovered)} left mid-send by an earlier flush), "
                  f"waiting {report.waiting}", highlight=False)
        for name, reason in report.failed.items():
            err.print(f"{name}: {reason}", highlight=False)

    cmd.emit(report.to_json(), people)
    if report.waiting:
        sys.exit(3)


@main.command("config")
@common(prod=False)
def config_show(cmd: Command) -> None:
    """The settings in force after every layer (defaults < site file < environment < --set flags); the table
    format is TOML for the site file, each setting with its meaning and the layer it came from."""
    from pipeline.admin.settings_info import setting_help, setting_sources

    data = cmd.settings.public()
    helps, sources = setting_help(), setting_sources(click.get_current_context().find_root().obj or {})

    def people() -> None:  # TOML that can be pasted into the site file; each setting's meaning and layer as comments
        click.echo("[score-plugins]")
        for k, v in data.items():
            if k != "tiers":
                click.echo(f"# {helps.get(k) or k} [from: {sources.get(k, 'default')}]".replace("\n", " "))
                click.echo(f"{k} = {json.dumps(v)}" if v is not None else f"# {k} is not set")
        for tier in data.get("tiers") or []:  # tables after the plain keys, as TOML wants
            click.echo("\n[[score-plugins.tiers]]")
            for k, v in tier.items():
                click.echo(f"{k} = {json.dumps(v)}")

    cmd.emit(data, people)


if __name__ == "__main__":
    main()
