"""`leaderboard`, `status`, `runs`: what was scored and how runs went."""

from __future__ import annotations


import click
from rich.table import Table


from pipeline.cli.app import Command, common, main
from pipeline.console import out


# --- leaderboard / status -----------------------------------------------------------------------------------

@main.command()
@click.option("--view", type=click.Choice(["scores", "models"]), default="scores", show_default=True,
              help="scores: one row per model x benchmark; models: Brain-Score's aggregates, rank and coverage")
@click.option("--rules", type=click.Choice(["brain-score", "lab"]),
              help="the board's rules for every domain (default: each hierarchy's own; see README)")
@click.option("--audience", type=click.Choice(["all", "public"]), default="all", show_default=True,
              help="all: every model and benchmark, private and hidden ones marked; public: what a visitor sees")
@common(formats=("table", "json", "csv", "html"), prod="hidden")
def leaderboard(cmd: Command, view: str, rules: str | None, audience: str) -> None:
    """The newest scores, or by model Brain-Score's tree of aggregates and ranks (read-only: prod needs no
    --yes-prod). The HTML page always shows the tree, with every score's provenance."""
    from pipeline.leaderboard.report import leaderboard as newest_scores
    from pipeline.leaderboard.report import leaderboard_grid

    with cmd.database(read_only=True, allow_prod=True) as db:
        rows = newest_scores(db)
        if view == "models" or cmd.fmt == "html":
            from pipeline.leaderboard.views import emit_models, render_html
            from pipeline.leaderboard.standings import standings

            boards = standings(db, cmd.settings.hierarchy, rules, audience)
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
    from pipeline.admin.status import run_status

    from pipeline.admin.runs import resolve_run_id

    from pipeline.admin.runs import coordinator_of

    with cmd.database(read_only=True, allow_prod=True) as db:
        data = run_status(db, resolve_run_id(db, run) if run else None)
        data["coordinator"] = coordinator_of(db, data["run_id"])  # live, gone, hand-submitted; None when over

    def people() -> None:
        unconfined = ", sandbox OFF: plugins ran unconfined" if data.get("sandbox") == "off" else ""
        if (data.get("memory_limit") or "").startswith("rlimit"):  # no memory cgroup: memfd, /dev/shm unbounded
            unconfined += ", memory: RLIMIT_DATA only"
        if data.get("network") == "host":
            unconfined += ", network HOST: plugins reached this node's own network"
        watched = {"gone": ", its coordinator is gone: `score-plugins reconcile` closes it",
                   "live": ", its coordinator is watching it", "starting": ", its coordinator is starting",
                   "hand-submitted": ", hand-submitted: `score-plugins ingest` accounts for it"
                   }.get(data["coordinator"] or "", "")
        table = Table("model", "benchmark", "state", "job", "reason",
                      title=f"run {data['run_id']} ({data['status']}{unconfined}{watched})")
        for j in data["jobs"]:
            table.add_row(j["model"], j["benchmark"], j["state"], f"{j['job_id']}[{j['array_index']}]",
                          f"{j['stage']}: {j['reason']}" if j["stage"] else (j["reason"] or ""))
        out.print(table)
        out.print(", ".join(f"{n} {s.lower()}" for s, n in sorted(data["counts"].items()))
                  + f"; {data['cpu_hours']} CPU-hours used", highlight=False)
        if data["attempts"]:
            from pipeline.capacity.attempts import gpu_peak_words

            gpus = any(a["req_gpus"] for a in data["attempts"])
            tries = Table("model", "benchmark", "attempt", "tier", "outcome", "peak", "CPU", "elapsed",
                          *(("GPUs",) if gpus else ()), "job", title="attempts")
            for a in data["attempts"]:
                peak = f"{a['max_rss_bytes'] / 2**30:.2f} GB" if a["max_rss_bytes"] else ""
                gpu = (f"{a['gpu_count'] or a['req_gpus']} x {a['gpu_model'] or 'unknown model'}, peak "
                       f"{gpu_peak_words(a)}" if a["req_gpus"] else "")
                tries.add_row(a["model"], a["benchmark"], str(a["attempt"]), a["tier"],
                              a["failure_kind"] or "COMPLETED", peak,
                              f"{a['cpu_seconds']:.1f} s" if a["cpu_seconds"] is not None else "",
                              f"{a['elapsed_seconds']:.0f} s" if a["elapsed_seconds"] is not None else "",
                              *((gpu,) if gpus else ()), str(a["job_id"] or ""))
            out.print(tries)
            u = data["usage"]
            out.print(f"{u['attempts']} attempts, {u['escalations']} escalations; CPU-hours {u['cpu_hours_used']} "
                      f"used of {u['cpu_hours_requested']} requested, GB-hours {u['gb_hours_used']} used of "
                      f"{u['gb_hours_requested']} requested, {u['gpu_summary']}", highlight=False)

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
        table = Table("run", "status", "coordinator", "executor", "created", "commit", "pairs", title="runs")
        for r in data:
            table.add_row(r["run_id"], r["status"], r["coordinator"] or "", r["executor"], r["created_at"][:19],
                          (r["commit"] or "")[:12], ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["counts"].items())))
        out.print(table)

    cmd.emit(data, people, rows=[{k: v for k, v in r.items() if k != "counts"} for r in data])
