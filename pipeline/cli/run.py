"""`plan`, `run`, `render`, `ingest`: a change from plan to scores, with the run's progress and summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from pipeline.cli.app import Command, common, _count, main, report_issues
from pipeline.catalog import gitrepo
from pipeline.cli.options import change_options, _request
from pipeline.config import Settings
from pipeline.console import coloured, err, out, shown
from pipeline.errors import BadInput


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
    if plan.held:
        parts.append(f"{len(plan.held)} pair(s) held: a plugin they use was changed by someone who is not among its "
                     "owners (an administrator approves it: `score-plugins holds`)")
    return "; ".join(parts) or "the change implies no pair (no new or changed model or benchmark)"


@main.command()
@change_options
@click.option("--pairs", "with_pairs", is_flag=True, help="JSON: list every pair (default: a compact summary)")
@common()
def plan(cmd: Command, with_pairs: bool, **opts: Any) -> None:
    """The pairs to score, minus those already scored for the same code and environment."""
    from pipeline.orchestrator.run import detect_and_plan

    with cmd.database() as db:
        change, _, the_plan = detect_and_plan(cmd.settings, db, _request(**opts, dry=True))
    data = the_plan.to_json(pairs=with_pairs)
    data["issues"] = change.issues
    report_issues(change.issues)

    def people() -> None:
        table = Table("model", "benchmark", "status", "tier", "why")
        for status, pairs in (("to run", the_plan.to_run), ("already scored", the_plan.already_scored),
                              ("cannot run", the_plan.cannot_run), ("held", the_plan.held)):
            for p in pairs:
                table.add_row(p.model, p.benchmark, status, f"{p.tier} ({p.tier_why})" if p.tier else "",
                              "; ".join(p.reasons) + (f" ({p.problem})" if p.problem else ""))
        out.print(table)
        err.print(f"{len(the_plan.to_run)} to run, {len(the_plan.already_scored)} already scored, "
                  f"{len(the_plan.cannot_run)} cannot run" + (f", {len(the_plan.held)} held for an administrator's "
                                                               "approval" if the_plan.held else ""), highlight=False)

    outages = the_plan.outages()
    report_outages(outages)
    cmd.emit(data, people)
    sys.exit(3 if outages else 2 if change.errors else 0)


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
@click.option("--since-processed", is_flag=True, help="the change since the commit this profile's pipeline last "
              "processed for this repository (recorded when a run did its job; --base is then only the start "
              "when nothing is recorded yet, default the head's first parent); the head is recorded in turn")
@common()
def run(cmd: Command, dry_run: bool, submitters: tuple[str, ...], jenkins_build: str | None,
        build_url: str | None, since_processed: bool, **opts: Any) -> None:
    """Detect, plan, render, submit, wait, record and notify."""
    from pipeline.orchestrator import run as runner
    from pipeline.stages import processed

    fallback = opts["base"]
    if since_processed:
        if opts["all_"] or opts.get("backfill"):
            raise BadInput("--since-processed takes the change since the last processed commit: leave out --all "
                           "and --backfill")
        opts["base"] = opts["base"] or opts["head"]  # replaced below, once the database says what was processed
    req = _request(**opts, jenkins_build=jenkins_build, build_url=build_url, extra_recipients=list(submitters),
                   dry=dry_run)
    if req.executor != "local" and dry_run:
        warn_time_budget(cmd.settings)  # a real run warns once its tasks are known (their real pair counts)
    with cmd.database() as db:
        base = None
        if since_processed:  # the change since what this profile last processed (pipeline.stages.processed)
            base = processed.choose_base(db, req.repo, req.head, fallback)
            req.base = base.commit
            err.print(f"score-plugins: changes since {base.commit[:12]}: {base.why}", highlight=False)
        if dry_run:
            change, _, the_plan = runner.detect_and_plan(cmd.settings, db, req)
            result = runner.RunResult(change, the_plan)
        else:
            result = _execute(cmd, db, req)
            if base is not None and not result.interrupted:
                err.print("score-plugins: " + processed.after_run(db, req, base, result), highlight=False)
        result.base = gitrepo.resolve(req.repo, req.base) if req.base and not req.all else None
    _report_run(cmd, result, dry_run)
    _exit_run(result)


def _execute(cmd: Command, db, req):  # noqa: ANN001, ANN202 - Database, Request -> RunResult
    """Execute a run with progress on stderr; Ctrl-C, SIGTERM and SIGHUP cancel it (recorded and emailed)."""
    from pipeline.orchestrator import run as runner
    from pipeline.admin.signals import stop_on_signals
    from pipeline.stopping import check as check_stop

    try:
        with stop_on_signals(), ProgressReporter() as reporter:
            result = runner.execute(cmd.settings, db, req, on_progress=reporter.update, on_warning=warn)
            check_stop()  # a stop signal a finalizer swallowed at the very end: 128 + the signal all the same
            return result
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


def warn_time_budget(settings: Settings, tasks: list[dict] | None = None) -> None:
    """One warning line per tier whose tasks' worst case does not fit its time limit (the rendered tasks' real
    pair counts when given)."""
    from pipeline.admin.settings_info import time_budget_problems

    for problem in time_budget_problems(settings, tasks):
        warn(problem)


def warn(message: str) -> None:
    err.print(coloured("warning:", "yellow", message))


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
            self.status.update(shown("scoring: " + line))
        else:
            key = f"{progress.done}/{progress.failed}/{tasks}"
            if key != self.last:  # one line per change, not per poll
                self.last = key
                err.print(shown("score-plugins: " + line))

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
        err.print(shown(str(problem), "yellow"))
    if cmd.fmt != "table" and not dry_run:  # the table shows the same on stdout; JSON readers (Jenkins) see it here
        console_summary(result)
    report_outages(result.outages)
    cmd.emit(result.to_json(), lambda: _print_run(result, dry_run))


def console_summary(result) -> None:  # noqa: ANN001 - RunResult
    """For a log (Jenkins' console): each pair that did not complete with its reason (plugin text, printed
    literally, one line each), then one summary line."""
    for p in result.pairs:
        if p["state"] != "COMPLETED":
            reason = f"{p['stage']}: {p['reason'] or ''}" if p["stage"] else (p["reason"] or "")
            first = (reason.strip().splitlines() or [""])[0][:300]
            err.print(shown(f"score-plugins: {p['state']} {p['model']} on {p['benchmark']}: {first}"), soft_wrap=True)
    held = sum(1 for e in result.emails if "/held/" in e)
    mail = _count(len(result.emails), "email") + (f" ({held} held: this profile does not email submitters)"
                                                  if held else "")
    if result.run_id is None:
        err.print(shown(f"score-plugins: nothing scored: {nothing_to_score(result.plan)}; {mail}"), soft_wrap=True)
        return
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.states.items()))
    err.print(shown(f"score-plugins: run {result.run_id}: {states}; {len(result.plan.already_scored)} already "
                    f"scored; {mail}; run folder {result.run_dir}"), soft_wrap=True)


def report_outages(outages: list[dict]) -> None:
    """The administrator's lines about infrastructure failures (one per distinct reason, with its pairs): not the
    plugins' doing, so nothing was cached and no submitter was mailed; the command exits 3 and the next build
    tries again."""
    if not outages:
        return
    by_reason: dict[str, list[str]] = {}
    for p in outages:
        by_reason.setdefault(str(p["reason"]), []).append(f"{p['model']} on {p['benchmark']}")
    for reason, pairs in by_reason.items():
        shown = ", ".join(pairs[:5]) + (f" and {len(pairs) - 5} more" if len(pairs) > 5 else "")
        err.print(coloured("infrastructure:", "red", f"{len(pairs)} pair(s) got no environment ({shown}): {reason}"))
    err.print(coloured("infrastructure:", "red", "not the plugins' failure: nothing was cached and no submitter "
                       "was mailed; exit 3, and the next build (or `score-plugins rerun --failed RUN`) tries again"))


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
    from pipeline.orchestrator.run import detect_and_plan, record_run
    from pipeline.admin.repair import MANUAL
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
    warn_time_budget(cmd.settings, bundle.manifest.tasks)  # per tier, each task's real pair count
    with cmd.database() as db:
        # so `ingest DIR` has rows to complete; RENDERED pairs are not claimed: they never block a later run
        record_run(db, bundle, the_plan, req, str(catalog.repo), state=State.RENDERED)
    scripts = [str(script) for script, _, _ in bundle.arrays()] or [str(bundle.job_script)]  # one per tier
    cmd.emit({"run_id": bundle.run_id, "run_dir": str(bundle.run_dir), "job_script": str(bundle.job_script),
              "job_scripts": scripts,
              "manifest": str(bundle.manifest_path), "array_tasks": bundle.n_tasks, "pairs": len(bundle.pairs()),
              **hand_commands(bundle, scripts)})


def hand_commands(bundle, scripts: list[str] | None = None) -> dict[str, str]:  # noqa: ANN001 - pipeline.stages.bundle.Bundle
    """The shell lines that run a bundle by hand (shell-quoted: paths may hold spaces or `$`): `run_locally`
    runs every array task of every tier's job script here; `submit` sbatches each tier's script through the
    bundle's submit.sh, which records each Slurm job id in the bundle (slurm-jobs), so that `ingest` and
    `reconcile` can account for a task Slurm killed."""
    import shlex

    folder = shlex.quote(str(bundle.run_dir))
    arrays = bundle.arrays() or [(bundle.job_script, 0, 1)]
    loops = [f"for i in $(seq 0 {max(n - 1, 0)}); do SLURM_ARRAY_TASK_ID=$i bash {shlex.quote(str(script))}; done"
             for script, _first, n in arrays]
    submit = bundle.run_dir / "submit.sh"
    return {"run_locally": f"cd {folder} && " + " && ".join(loops),
            "submit": f"bash {shlex.quote(str(submit))}" if submit.exists() else
            "; ".join(f"sbatch {shlex.quote(str(s))}" for s, _, _ in arrays),
            "ingest": f"score-plugins ingest {folder}"}


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
        from pipeline.stages.notifications import notify_closed_runs

        emails, problems = notify_closed_runs(cmd.settings, db, close_ingested_renders(db, folders, cmd.settings))
    for problem in problems:
        err.print(shown(problem, "yellow"))
    cmd.emit({"runs": [str(f) for f in folders], **totals, "emails": emails},
             lambda: out.print(f"{totals['scores']} new scores, {totals['duplicates']} already present, "
                               f"{totals['failures']} failures recorded, from {len(folders)} run folder(s)",
                               highlight=False))
