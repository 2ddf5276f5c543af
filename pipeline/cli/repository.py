"""`examples`, `detect`, `tree`, `test-plugins`: commands that read a plugin repository and need no database."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table


from pipeline.cli.app import Command, common, main, _plain, report_issues
from pipeline.cli.options import require_one_mode, revision_options
from pipeline.console import err, out


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
            where = row["parent"] or (f"unreadable: {row['unreadable']}" if row["unreadable"] else
                                      "parent=None (a root, in no average)")
            if row.get("placed_by_hierarchy"):  # the website's row wins over what the plugin passes
                where += f" (placed under {row['attached_to']} by the hierarchy: {row['placed_by_hierarchy']})"
            out.print(f"{row['benchmark']}: {where}", highlight=False, markup=False)
        for parent, n in data["leaves_per_parent"].items():
            out.print(f"{parent}: {n} benchmark(s)", highlight=False)
        c = data["counts"]
        out.print(f"{c['benchmarks']} benchmarks, parent read for {c['parent_read']}, {c['under_a_level']} under a "
                  f"level of the {data['domain']} hierarchy", highlight=False)

    cmd.emit(data, people)


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
