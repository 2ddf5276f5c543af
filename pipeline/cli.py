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

# Markup off everywhere: ids, errors and paths come from plugins, users and git, and are shown as text.
# Outside a terminal (Jenkins, a pipe) tables are as wide as their content: a long id is never cut or folded.
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False,
              width=None if sys.stderr.isatty() else 100_000)
out = Console(soft_wrap=True, markup=False, highlight=False, width=None if sys.stdout.isatty() else 100_000)


def coloured(label: str, style: str, text: str) -> Text:
    """`label` in `style`, then `text` exactly as it is (never read as markup)."""
    return Text.assemble((label, style), " ", text)


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


def common(formats: tuple[str, ...] = ("table", "json"), prod: bool = True) -> Callable:
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
            except KeyboardInterrupt:
                err.print(coloured("interrupted:", "yellow", "stopped by Ctrl-C; what finished is kept "
                                   "(`score-plugins reconcile` closes what was left open)"))
                sys.exit(130)
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
        if prod:
            wrapper = click.option("--yes-prod", is_flag=True, help="confirm a command that writes to the prod "
                                   "database")(wrapper)
        if formats:
            wrapper = click.option("--format", "fmt", type=click.Choice(list(formats)), default=formats[0],
                                   show_default=True, help="table for people, json for programs")(wrapper)
        return click.option("--profile", default="local", show_default=True, envvar="SCORE_PLUGINS_PROFILE",
                            help="database profile: prod, dev, test or local")(wrapper)

    return decorate


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
        click.option("--repo", type=click.Path(path_type=Path), required=True, help="plugins git repository"),
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
    ]))


def require_one_mode(base: str | None, all_: bool) -> None:
    if all_ == bool(base):
        raise BadInput("give either --base REV (with --head) or --all")


def _ids(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _request(repo: Path, base: str | None, head: str, all_: bool, domain_root: str | None, models: str | None,
             benchmarks: str | None, force: bool, executor: str = "local", **extra: Any):
    from pipeline.run import Request

    require_one_mode(base, all_)
    return Request(repo=repo, base=base, head=head, all=all_, domain_root=domain_root, models=_ids(models),
                   benchmarks=_ids(benchmarks), force=force, executor=executor, **extra)


@main.command()
@click.option("--repo", type=click.Path(path_type=Path), required=True)
@click.option("--base", required=True)
@click.option("--head", default="HEAD", show_default=True)
@click.option("--domain-root")
@common(prod=False)
def detect(cmd: Command, repo: Path, base: str, head: str, domain_root: str | None) -> None:
    """What the change base..head touches (Brain-Score's get_scoring_info, as JSON)."""
    from pipeline.detect import detect as run_detect

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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def nothing_to_score(plan) -> str:  # noqa: ANN001 - pipeline.plan.Plan
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
    from pipeline.run import detect_and_plan

    with cmd.database() as db:
        change, _, the_plan = detect_and_plan(cmd.settings, db, _request(**opts))
    data = the_plan.to_json(pairs=with_pairs)
    data["issues"] = change.issues
    report_issues(change.issues)

    def people() -> None:
        table = Table("model", "benchmark", "status", "why")
        for status, pairs in (("to run", the_plan.to_run), ("already scored", the_plan.already_scored),
                              ("cannot run", the_plan.cannot_run)):
            for p in pairs:
                table.add_row(p.model, p.benchmark, status,
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
    from pipeline import run as runner

    req = _request(**opts, jenkins_build=jenkins_build, build_url=build_url, extra_recipients=list(submitters))
    with cmd.database() as db:
        if dry_run:
            change, _, the_plan = runner.detect_and_plan(cmd.settings, db, req)
            result = runner.RunResult(change, the_plan)
        else:
            try:
                with ProgressReporter() as reporter:
                    result = runner.execute(cmd.settings, db, req, on_progress=reporter.update)
            except runner.Interrupted as stop:  # cancelled, recorded and emailed: report it, then exit 130
                result = stop.result
    _report_run(cmd, result, dry_run)
    if result.interrupted:
        err.print(coloured("interrupted:", "yellow", f"run {result.run_id} was cancelled by Ctrl-C; finished "
                           "pairs are kept, the others are recorded CANCELLED and the submitters were told"))
        sys.exit(130)
    # failed pairs (1) outrank refused plugins (2): the run itself did its work
    sys.exit(result.exit_code or (2 if result.change.errors else 0))


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

    def update(self, progress) -> None:  # noqa: ANN001 - pipeline.watch.Progress
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
    from pipeline.bundle import render_bundle
    from pipeline.run import detect_and_plan, record_run
    from pipeline.repair import MANUAL
    from db.states import State

    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BadInput(f"--out {out_dir}: {'not a folder' if not out_dir.is_dir() else 'folder is not empty'}; "
                       "give a new or empty folder")
    with cmd.database() as db:
        _, catalog, the_plan = detect_and_plan(cmd.settings, db, _request(**opts))
    if not the_plan.to_run:
        raise BadInput("nothing to render: " + nothing_to_score(the_plan))
    req = _request(**opts, executor=MANUAL)
    bundle = render_bundle(cmd.settings, the_plan, catalog.repo, MANUAL, out_dir=out_dir)
    with cmd.database() as db:
        # so `ingest DIR` has rows to complete; RENDERED pairs are not claimed: they never block a later run
        record_run(db, bundle, the_plan, req, str(catalog.repo), state=State.RENDERED)
    cmd.emit({"run_id": bundle.run_id, "run_dir": str(bundle.run_dir), "job_script": str(bundle.job_script),
              "manifest": str(bundle.manifest_path), "array_tasks": bundle.n_tasks, "pairs": len(bundle.pairs()),
              "submit": f"sbatch {bundle.job_script}", "ingest": f"score-plugins ingest {bundle.run_dir}"})


@main.command("test-plugins")
@revision_options
@click.option("--junit", type=click.Path(path_type=Path), required=True, help="where to write the JUnit XML report")
@common(prod=False)
def test_plugins(cmd: Command, repo: Path, base: str | None, head: str, all_: bool, domain_root: str | None,
                 junit: Path) -> None:
    """Run each changed plugin's test.py with pytest in the plugin's own environment (unittests_plugins)."""
    from pipeline.detect import detect as run_detect
    from pipeline.detect import detect_all
    from pipeline.plugin_tests import run_plugin_tests

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
    from pipeline.ingest import ingest_folders, run_folders

    folders = run_folders(cmd.settings.runs_dir, run)
    with cmd.database() as db:
        totals = ingest_folders(db, folders)
    cmd.emit({"runs": [str(f) for f in folders], **totals},
             lambda: out.print(f"{totals['scores']} new scores, {totals['duplicates']} already present, "
                               f"{totals['failures']} failures recorded, from {len(folders)} run folder(s)",
                               highlight=False))


# --- leaderboard / status -----------------------------------------------------------------------------------

@main.command()
@common(formats=("table", "json", "csv", "html"))
def leaderboard(cmd: Command) -> None:
    """The model x benchmark table of the newest scores (read-only: prod needs no --yes-prod)."""
    from pipeline.report import leaderboard as newest_scores
    from pipeline.report import leaderboard_grid

    with cmd.database(read_only=True, allow_prod=True) as db:
        rows = newest_scores(db)
    if cmd.fmt == "html":
        from pipeline.leaderboard import render_html

        click.echo(render_html(rows, title=f"Leaderboard ({cmd.profile})"))
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
@common()
def status(cmd: Command, run: str | None) -> None:
    """Counts per state of RUN (default: the newest run), and each pair's state."""
    from pipeline.report import run_status

    with cmd.database() as db:
        data = run_status(db, run)

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

    cmd.emit(data, people)


@main.command()
@common()
def reconcile(cmd: Command) -> None:
    """Close rows of ended or vanished jobs (every run with open rows), with the reason."""
    from pipeline.repair import reconcile_all

    with cmd.database() as db:
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
    from pipeline.repair import cancel_run

    with cmd.database() as db:
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
    from pipeline import run as runner
    from pipeline.repair import failed_pairs

    with cmd.database() as db:
        old, pairs = failed_pairs(db, run_id)
        result = runner.execute(cmd.settings, db, runner.rerun_request(old, pairs, executor))
    _report_run(cmd, result)
    sys.exit(result.exit_code)


@main.command()
@click.argument("score_id", type=int)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@common()
def reproduce(cmd: Command, score_id: int, out_dir: Path) -> None:
    """Re-render the exact job (code at the score's commit, its lockfile) that produced SCORE_ID."""
    from pipeline.reproduce import reproduce_score

    with cmd.database() as db:
        bundle = reproduce_score(cmd.settings, db, score_id, out_dir)
    cmd.emit({"score_id": score_id, "run_dir": str(bundle.run_dir), "job_script": str(bundle.job_script),
              "run_locally": f"SLURM_ARRAY_TASK_ID=0 bash {bundle.job_script}",
              "submit": f"sbatch {bundle.job_script}"})


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
@common()
def db_current(cmd: Command) -> None:
    """The profile's schema revision, and the newest one this version knows."""
    from db import migrate

    with cmd.database(migrate_schema=False) as db:
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
    """The settings in force after every layer (defaults < site file < environment < --set flags)."""
    data = cmd.settings.public()

    def people() -> None:  # TOML that can be pasted into the site file
        click.echo("[score-plugins]")
        for k, v in data.items():
            click.echo(f"{k} = {json.dumps(v)}" if v is not None else f"# {k} is not set")

    cmd.emit(data, people)


if __name__ == "__main__":
    main()
