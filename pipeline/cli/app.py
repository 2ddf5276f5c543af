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

from pipeline.config import load_settings, Settings
from pipeline.console import InertFormatter, coloured, err, out, shown
from pipeline.errors import BadInput, PipelineError


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

    def invoke(self, ctx: click.Context) -> Any:
        """A stop signal outside a command's own handling (between the group and its command): one line and
        128 + its number, not click's "Aborted!" and exit 1."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            from pipeline.admin.signals import stopped_from

            stop = stopped_from(exc)
            err.print(coloured("interrupted:", "yellow", f"stopped by {stop.name}"))
            sys.exit(stop.exit_code)

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
                if stop.second:  # at once, as promised: a normal exit would wait for the local executor's
                    _exit_now(stop.exit_code)  # task threads, i.e. for the tasks the cancel did not reach
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


def _exit_now(code: int) -> None:
    """Exit without the interpreter's shutdown, which joins worker threads: after a second stop signal the local
    executor's threads may be waiting on tasks for hours (`reconcile` stops those, from the note in the run)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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
    from pipeline.admin.signals import command_ready

    command_ready()  # from here a stop signal raises Stopped: one line and 128 + its number (pipeline.admin.signals)
    ctx.obj = parse_overrides(overrides)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(InertFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


# --- detect / plan ------------------------------------------------------------------------------------------

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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
        err.print(shown(f"{i['file']}:{i['line']}: {i['severity']}: {i['message']}", colour))


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


