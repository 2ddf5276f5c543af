"""`models`, `benchmarks`, `hierarchy`, `export`: what an admin decides about the board (public models, shown
benchmarks, the website's tree) and the export brain-score.org loads."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from pipeline.cli.app import Command, common, main
from pipeline.console import out
from pipeline.errors import BadInput


@main.group()
def models() -> None:
    """Public and private models (a private model is on no public board)."""


def _set_public(cmd: Command, names: tuple[str, ...], public: bool) -> None:
    from pipeline.admin.board import set_public

    with cmd.database(read_only=True) as db:
        changed = set_public(db, list(names), public)
    word = "public" if public else "private"
    cmd.emit({"models": changed, "public": public},
             lambda: out.print(f"{len(changed)} model(s) now {word}: {', '.join(changed)}", highlight=False,
                               markup=False))


@models.command("public")
@click.argument("names", nargs=-1, required=True)
@common()
def models_public(cmd: Command, names: tuple[str, ...]) -> None:
    """Make NAMES public: listed and ranked on the public board."""
    _set_public(cmd, names, True)


@models.command("private")
@click.argument("names", nargs=-1, required=True)
@common()
def models_private(cmd: Command, names: tuple[str, ...]) -> None:
    """Make NAMES private: off the public board (an admin's board still lists them, marked)."""
    _set_public(cmd, names, False)


@main.group()
def benchmarks() -> None:
    """Shown and hidden benchmark types (a hidden one counts in no average)."""


def _set_visible(cmd: Command, names: tuple[str, ...], every: bool, visible: bool | None) -> None:
    from pipeline.admin.board import set_visible

    if bool(names) == every:
        raise BadInput("name the benchmark types, or give --all")
    with cmd.database(read_only=True) as db:
        changed = set_visible(db, list(names), visible, every)
    word = {True: "shown", False: "hidden", None: "left to the board's rules"}[visible]
    cmd.emit({"benchmarks": changed, "visible": visible},
             lambda: out.print(f"{len(changed)} benchmark type(s) {word}: {', '.join(changed)}", highlight=False,
                               markup=False))


@benchmarks.command("show")
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="every benchmark type in the database")
@common()
def benchmarks_show(cmd: Command, names: tuple[str, ...], every: bool) -> None:
    """Show NAMES (registry names or the identifiers they run as): they count in their averages."""
    _set_visible(cmd, names, every, True)


@benchmarks.command("hide")
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="every benchmark type in the database")
@common()
def benchmarks_hide(cmd: Command, names: tuple[str, ...], every: bool) -> None:
    """Hide NAMES: off the public board, and in no average."""
    _set_visible(cmd, names, every, False)


@benchmarks.command("default")
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="every benchmark type in the database")
@common()
def benchmarks_default(cmd: Command, names: tuple[str, ...], every: bool) -> None:
    """Forget what an admin set for NAMES: the hierarchy, then the board's rules decide."""
    _set_visible(cmd, names, every, None)


@main.group()
def hierarchy() -> None:
    """The leaderboard's tree: brain-score.org's benchmark-type table as a hierarchy file."""


@hierarchy.command("import")
@click.argument("dump", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", "out_file", type=click.Path(path_type=Path), required=True,
              help="the hierarchy file to write (use it with --set hierarchy=FILE or the site config)")
@common(prod=False)
def hierarchy_import(cmd: Command, dump: Path, out_file: Path) -> None:
    """Write a hierarchy file from DUMP, brain-score.org's benchmark-type table (Django fixture or dumpdata JSON,
    a JSON list of rows, or psql CSV with a header): its nodes, where each benchmark hangs, what is shown."""
    from pipeline.leaderboard.webimport import import_dump

    data = import_dump(dump, out_file)

    def people() -> None:
        for domain, c in data["domains"].items():
            out.print(f"{domain}: {c['types']} types ({c['nodes']} nodes, {c['leaves']} benchmarks, {c['hidden']} "
                      f"hidden)", highlight=False, markup=False)
        out.print(f"written: {data['out']}", highlight=False, markup=False)

    cmd.emit(data, people)


@main.group()
def export() -> None:
    """Exports for other systems."""


@export.command("brainscore")
@click.option("--out", "out_file", type=click.Path(path_type=Path), required=True,
              help="the Django fixture to write (the website loads it with manage.py loaddata)")
@click.option("--rows", type=click.Choice(["scores", "all"]), default="scores", show_default=True,
              help="scores: score rows only; all: with benchmark types, instances and models (a deployment this "
                   "pipeline feeds; loading replaces those rows)")
@common(formats=("table", "json", "csv"), prod="hidden")
def export_brainscore(cmd: Command, out_file: Path, rows: str) -> None:
    """Every score in force, and every pair that failed through its plugins, as rows of brain-score.org's score
    table (model, benchmark instance with version, raw, ceiled, error, comment, start and end times); the output
    lists both identifiers of each row."""
    from pipeline.leaderboard.standings import standings
    from pipeline.leaderboard.webexport import export as run_export

    with cmd.database(read_only=True, allow_prod=True) as db:
        boards = standings(db, cmd.settings.hierarchy, "brain-score") if rows == "all" else []
        data = run_export(db, out_file, rows == "all", boards)

    def people() -> None:
        table = Table("model", "benchmark", "registered as", "version", "raw", "ceiled", title="exported rows")
        for r in data["rows"]:
            table.add_row(Text(r["model"]), Text(r["benchmark"]), Text(r["registry_identifier"]), str(r["version"]),
                          "" if r["score_raw"] is None else f"{r['score_raw']:.4f}",
                          "" if r["score_ceiled"] is None else f"{r['score_ceiled']:.4f}")
        out.print(table)
        for r in data["left_out"]:
            out.print(f"left out: {r['model']} on {r['registry_identifier']}: {r['why']}", highlight=False,
                      markup=False)
        c = data["counts"]
        out.print(f"{c['scores']} scores and {c['failures']} failures written to {data['out']}; owners the website "
                  f"must know: {', '.join(data['owners']) or 'none'}", highlight=False, markup=False)

    cmd.emit(data, people, rows=data["rows"])
