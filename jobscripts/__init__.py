"""Jinja2 job-script templates and the functions that render them (pure: values in, text out)."""

from jobscripts.render import (RenderError, ScoreJob, SlurmOptions, TaskLine, render_env_builder,
                               render_score_job, sbatch_lines)

__all__ = ["RenderError", "ScoreJob", "SlurmOptions", "TaskLine", "render_env_builder", "render_score_job",
           "sbatch_lines"]
