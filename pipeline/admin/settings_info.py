"""What `score-plugins config` says of each setting besides its value: what it means and which layer set it
(default < site file < environment < --set), so an administrator sees why a value is what it is."""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Mapping

from pipeline.tiers import time_budget_problems as tier_time_budget
from pipeline.config import ENV_PREFIX, RESERVED_ENV, Settings


def setting_sources(overrides: Mapping[str, object] | None = None,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Setting name -> the layer its value came from (load_settings has already checked every layer)."""
    environ = os.environ if environ is None else environ
    names = [f.name for f in fields(Settings)]
    source = dict.fromkeys(names, "default")
    site = environ.get(ENV_PREFIX + "CONFIG")
    if site:
        try:
            data = tomllib.loads(Path(site).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            data = {}
        for name in data.get("score-plugins", data):
            if name in source:
                source[name] = f"site file {site}"
    for name in names:
        if name.upper() not in RESERVED_ENV and ENV_PREFIX + name.upper() in environ:
            source[name] = f"environment {ENV_PREFIX}{name.upper()}"
    for name, value in (overrides or {}).items():
        if value is not None and name in source:
            source[name] = "--set"
    return source


def setting_help() -> dict[str, str]:
    return {f.name: str(f.metadata.get("help", "")) for f in fields(Settings)}


def time_budget_problem(settings: Settings) -> str | None:
    """The first of `time_budget_problems` before anything is rendered (each tier at `pairs_per_task`)."""
    problems = time_budget_problems(settings)
    return problems[0] if problems else None


def time_budget_problems(settings: Settings, tasks: list[dict] | None = None) -> list[str]:
    """pipeline.tiers.time_budget_problems for these settings."""
    return tier_time_budget(settings.tier_list, bool(settings.tiers), settings.pair_timeout, settings.pairs_per_task,
                            tasks)
