"""`score-plugins`: a thin click layer over the pipeline. `app` declares the group and what every command shares;
each command group has its own module, imported here so that it registers its commands."""

from pipeline.cli import admin, config, db, notify, repository, results, run  # noqa: F401 - they register commands
from pipeline.cli import board  # noqa: F401 - models, benchmarks, hierarchy, export (issue 37)
from pipeline.cli.app import main

__all__ = ["main"]
