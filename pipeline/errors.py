"""Errors that map onto the CLI's exit codes (contract: 2 bad input, 3 infrastructure)."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadInput(PipelineError):
    """The caller's input is wrong: a revision, a repository, a plugin file, a flag."""

    exit_code = 2


class InfrastructureError(PipelineError):
    """A service the run needs cannot be reached: database, Slurm, SMTP."""

    exit_code = 3
