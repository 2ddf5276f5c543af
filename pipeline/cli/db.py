"""`db upgrade|downgrade|current`: the database schema."""

from __future__ import annotations


import click

from pipeline.cli.app import Command, common, main
from pipeline.console import err
from pipeline.errors import BadInput


# --- db / notify / config -----------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """Alembic migrations of the profile's database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.option("--adopt", is_flag=True, help="this database holds data from before databases recorded their profile, "
              "and it is the --profile database: record it so (once)")
@common(formats=())
def db_upgrade(cmd: Command, revision: str, adopt: bool) -> None:
    """Migrate the profile's database up to REVISION; a new database records which profile it is (an existing one
    with data only with --adopt), and every later connection as another profile is refused."""
    from db import migrate
    from pipeline.database import upgrade_schema

    migrate.check_revision(revision)
    with cmd.database(migrate_schema=False) as db:
        found = upgrade_schema(db, revision, adopt)
        click.echo(f"{cmd.profile}: at {migrate.current(db.engine)}")
        if found:
            err.print(f"{db.profile.safe_url} is the {found.profile} database (id {found.database_id}"
                      f"{', adopted' if found.adopted else ''}): other profiles are refused", highlight=False)


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
                "head": migrate.head(), "identity": db.identity.to_json() if db.identity else None}
    cmd.emit(data, lambda: click.echo(f"{data['profile']}: {data['current']} (newest {data['head']})"))
