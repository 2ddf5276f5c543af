"""`reconcile`, `cancel`, `rerun`, `reproduce`, `prune`, `scores`: repairing and tidying runs and scores."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from pipeline.cli.app import Command, common, main
from pipeline.cli.run import _execute, _exit_run, hand_commands, _report_run
from pipeline.console import err, out
from pipeline.errors import BadInput


@main.command()
@common()
def reconcile(cmd: Command) -> None:
    """Close rows of ended or vanished jobs (every run with open rows), with the reason."""
    from pipeline.admin.repair import reconcile_all
    from pipeline.stages.notifications import notify_closed_runs

    with cmd.database(read_only=True) as db:
        data = reconcile_all(cmd.settings, db)
        emails, problems = notify_closed_runs(cmd.settings, db, list(data))  # the runs it closed, once
    for problem in problems:
        err.print(Text(problem, style="yellow"))
    if emails:
        err.print(f"score-plugins: {len(emails)} email(s) about the runs reconcile closed", highlight=False)

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
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit"]),
              help="default: the run's own (a rendered run's: slurm when its bundle was submitted with its submit "
                   "line, else local)")
@common()
def rerun(cmd: Command, run_id: str, failed_only: bool, executor: str | None) -> None:
    """Run again, as a new run at the same commit, every pair of RUN that did not complete."""
    from pipeline.orchestrator import run as runner
    from pipeline.admin.hand_submitted import rerun_executor
    from pipeline.admin.repair import MANUAL, failed_pairs

    with cmd.database(read_only=True) as db:
        from pipeline.admin.rerun import original_recipients

        from pipeline.admin.runs import resolve_run_id

        old, pairs = failed_pairs(db, resolve_run_id(db, run_id))
        if executor is None and old.executor == MANUAL:  # a rendered run: where its bundle was run
            executor = rerun_executor(old)
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


@main.command()
@click.option("--all", "everything", is_flag=True, help="approved ones too")
@common(prod=False)
def holds(cmd: Command, everything: bool) -> None:
    """Changes held because their author is not among the plugin's owners, waiting for an administrator's
    approval (`approve`): plugin, commit, author, the owners when it was found, why."""
    from pipeline.stages.ownership import list_holds

    with cmd.database(read_only=True, allow_prod=True) as db:
        rows = list_holds(db, everything)

    def people() -> None:
        table = Table("id", "plugin", "commit", "author", "owners", "why", "approved", title="held changes")
        for r in rows:
            approved = f"{r['approved_by']} {r['approved_at'][:19]}" if r["approved_at"] else ""
            table.add_row(str(r["id"]), r["plugin"], r["commit"][:12], r["author"], ", ".join(r["owners"]),
                          r["reason"], approved)
        out.print(table)

    cmd.emit(rows, people)


@main.command()
@click.argument("hold_ids", nargs=-1, type=int, required=True)
@click.option("--by", "who", help="who approves (default: the login name)")
@click.option("--reason", default="", help="why (kept with the approval)")
@click.option("--owner", "as_owner", is_flag=True, help="also make each change's author an owner of the plugin")
@common()
def approve(cmd: Command, hold_ids: tuple[int, ...], who: str | None, reason: str, as_owner: bool) -> None:
    """Approve held changes (ids from `holds` or the held pairs' reason): recorded with who and when; the next run
    of the change (or `rerun --failed RUN`) scores the pairs they held."""
    import getpass

    from pipeline.stages.ownership import approve as record_approval

    who = who or getpass.getuser()
    with cmd.database(read_only=True) as db:
        rows = record_approval(db, list(hold_ids), who, reason, as_owner)

    def people() -> None:
        for r in rows:
            state = "was already approved" if r["already_approved"] else f"approved by {r['approved_by']}"
            out.print(f"held change {r['id']} ({r['plugin']}, commit {r['commit'][:12]} by {r['author']}) {state}"
                      + (", its author now an owner" if r["owner_added"] and not r["already_approved"] else ""),
                      highlight=False)

    cmd.emit(rows, people)
