"""`score-plugins`: a thin click layer over the pipeline (pipeline.cli.app declares the group and what every
command shares; each command group has its own module, imported here so that it registers its commands)."""

from pipeline.cli.app import main

__all__ = ["main"]
