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

    def people() -> None:  # TOML that can be pasted into the site file; each setting's meaning and layer as comments
        click.echo("[score-plugins]")
        for k, v in data.items():
            if k != "tiers":
                click.echo(f"# {helps.get(k) or k} [from: {sources.get(k, 'default')}]".replace("\n", " "))
                click.echo(f"{k} = {json.dumps(v)}" if v is not None else f"# {k} is not set")
        for tier in data.get("tiers") or []:  # tables after the plain keys, as TOML wants
            click.echo("\n[[score-plugins.tiers]]")
            for k, v in tier.items():
                click.echo(f"{k} = {json.dumps(v)}")

    cmd.emit(data, people)
