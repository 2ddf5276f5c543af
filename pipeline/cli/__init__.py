"""`score-plugins`: a thin click layer over the pipeline. `app` declares the group and what every command shares;
each command group has its own module, imported here so that it registers its commands."""

import os
import sys

from pipeline.admin.signals import stop_from_start

if os.path.basename(sys.argv[0]) == "score-plugins":  # the command itself, not a program that imports the CLI
    stop_from_start()  # first, before the imports below: a stop signal at any moment ends the command cleanly

from pipeline.cli import admin, config, db, notify, repository, results, run  # noqa: E402, F401 - they register commands
from pipeline.cli import board  # noqa: E402, F401 - models, benchmarks, hierarchy, export (issue 37)
from pipeline.cli.app import main  # noqa: E402

__all__ = ["main"]
