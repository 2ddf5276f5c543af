"""`config`: the settings in force and where each came from."""

from __future__ import annotations

import json

import click


from pipeline.cli.app import Command, common, main


@main.command("config")
@common(prod=False)
def config_show(cmd: Command) -> None:
    """The settings in force after every layer (defaults < site file < environment < --set flags); the table
    format is TOML for the site file, each setting with its meaning and the layer it came from."""
    from pipeline.admin.settings_info import setting_help, setting_sources

    data = cmd.settings.public()
    helps, sources = setting_help(), setting_sources(click.get_current_context().find_root().obj or {})
    target = profile_target(cmd)

    def people() -> None:  # TOML that can be pasted into the site file; each setting's meaning and layer as comments
        db, mail = target["database"], target["mail"]
        click.echo(f"# profile {cmd.profile}: database {db['database'] or '(none)'}: {db['status']}: {db['detail']}")
        click.echo(f"# profile {cmd.profile}: mail {mail['smtp'] or 'outbox only (no SMTP URL)'}"
                   f"{' from ' + mail['smtp_from'] if mail['smtp_from'] else ''}; emails {mail['recipients']}")
        click.echo("[score-plugins]")
        for k, v in data.items():
            if k != "tiers":
                click.echo(f"# {helps.get(k) or k} [from: {sources.get(k, 'default')}]".replace("\n", " "))
                click.echo(f"{k} = {json.dumps(v)}" if v is not None else f"# {k} is not set")
        for tier in data.get("tiers") or []:  # tables after the plain keys, as TOML wants
            click.echo("\n[[score-plugins.tiers]]")
            for k, v in tier.items():
                click.echo(f"{k} = {json.dumps(v)}")

    cmd.emit({**data, "profile": target}, people)


def profile_target(cmd: Command) -> dict:
    """Which database (password hidden, and whether it answers: a refused password is not an unreachable server)
    and which mail server and recipients the profile would use."""
    import os

    from notify.smtp import SmtpConfigError, smtp_from_environment
    from pipeline.database import describe_target
    from pipeline.stages.notifications import policy_of

    try:
        smtp = smtp_from_environment(cmd.profile)
        smtp_url = smtp.safe_url if smtp else None
    except SmtpConfigError as exc:
        smtp_url = f"unusable SMTP URL ({exc})"
    own = f"SCORE_PLUGINS_SMTP_{cmd.profile.upper()}"
    source = own if os.environ.get(own) else "SCORE_PLUGINS_SMTP_URL" if os.environ.get("SCORE_PLUGINS_SMTP_URL") \
        else None
    return {"name": cmd.profile, "database": describe_target(cmd.profile, cmd.settings.state_dir),
            "mail": {"smtp": smtp_url, "smtp_from": source,
                     "recipients": policy_of(cmd.settings, cmd.profile).describe()}}
