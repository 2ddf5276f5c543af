"""Jinja2 job-script templates and the functions that render them (pure: values in, text out)."""

from jobscripts.render import (EnvLine, PluginTestJob, PluginTestTask, RenderError, ScoreJob, SlurmOptions,
                               SubmitArray, TaskLine, render_env_builder, render_plugin_test_job, render_score_job,
                               render_submit, sbatch_lines)

__all__ = ["EnvLine", "PluginTestJob", "PluginTestTask", "RenderError", "ScoreJob", "SlurmOptions", "SubmitArray",
           "TaskLine", "render_env_builder", "render_plugin_test_job", "render_score_job", "render_submit",
           "sbatch_lines"]
