"""`db upgrade|downgrade|current`: the database schema."""

from __future__ import annotations


import click

from pipeline.cli.app import Command, common, main
from pipeline.errors import BadInput


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
