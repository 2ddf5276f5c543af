"""Render job scripts from typed parameters.

A sandboxed Jinja2 environment with `StrictUndefined`; every value that reaches the
shell goes through the `q` filter (POSIX single-quoting), and `#SBATCH` values,
which sbatch reads without a shell, are checked by `sbatch_lines` instead.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).parent / "templates"
SBATCH_SAFE = re.compile(r"^[A-Za-z0-9_.,:=%/+@-]*$")


class RenderError(ValueError):
    """A value cannot be placed in a job script safely."""


def shell_quote(value: object) -> str:
    text = str(value)
    if "\x00" in text:
        raise RenderError("a value for the job script contains a NUL byte")
    return shlex.quote(text)


_env = SandboxedEnvironment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, autoescape=False,
                            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_env.filters["q"] = shell_quote


@dataclass(frozen=True)
class SlurmOptions:
    """What goes into the `#SBATCH` header."""

    job_name: str
    array: str
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_minutes: int = 60
    mem: str = "4G"
    cpus_per_task: int = 1
    gpus: int = 0
    gres: str = ""  # e.g. gpu:1 or gpu:a100:1 (a tier's GPUs)
    extra: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


def sbatch_lines(opts: SlurmOptions) -> list[str]:
    """`--option=value` strings for the header; a value sbatch could misread is refused, not quoted."""
    # No --output here: the job writes logs/task-<index>.out itself, and executors pass --output as an
    # argument (no shell), so a run folder with spaces or quotes never has to fit in a header line.
    pairs = [("job-name", opts.job_name), ("array", opts.array),
             ("partition", opts.partition), ("account", opts.account), ("qos", opts.qos),
             ("time", str(opts.time_minutes)), ("mem", opts.mem), ("cpus-per-task", str(opts.cpus_per_task)),
             ("gpus", str(opts.gpus) if opts.gpus else ""), ("gres", opts.gres)]
    dropped = {d.lstrip("-").split("=")[0] for d in opts.drop}
    lines = []
    for name, value in pairs:
        if not value or name in dropped:
            continue
        if not SBATCH_SAFE.match(value):
            raise RenderError(f"#SBATCH --{name} value {value!r} has characters sbatch would misread")
        lines.append(f"--{name}={value}")
    for line in opts.extra:
        line = line.strip()
        if line.startswith("#SBATCH"):
            line = line[len("#SBATCH"):].strip()
        if not line.startswith("--") or "\n" in line or "\r" in line:
            raise RenderError(f"extra #SBATCH line {line!r} must be one '--option[=value]'")
        if line.lstrip("-").split("=")[0] not in dropped:
            lines.append(line)
    return lines


@dataclass(frozen=True)
class EnvLine:
    """One environment a task needs: its key (its folder under env_root) and lockfile."""

    env_key: str
    lockfile: str
    builder: str = ""  # the environment step for this kind of lock (default: the job's)


@dataclass(frozen=True)
class TaskLine:
    """One array task: the environment of each side of its pairs, the model's and the benchmark's (the same
    environment twice when both sides lock the same, or for a score made before the split)."""

    index: int
    model: EnvLine
    benchmark: EnvLine


@dataclass(frozen=True)
class ScoreJob:
    """Everything the scoring job script is rendered from."""

    run_id: str
    run_dir: str
    manifest: str
    worker: str
    python: str
    build_env: str
    log_dir: str
    env_root: str
    env_mode: str
    tasks: tuple[TaskLine, ...]
    n_pairs: int
    slurm: SlurmOptions
    modules: tuple[str, ...] = field(default=())
    first_task: int = 0  # this script's array task 0 is the run's task `first_task` (one array per tier)


def render_score_job(job: ScoreJob) -> str:
    if job.env_mode not in ("cached", "fresh"):
        raise RenderError(f"env_mode {job.env_mode!r}")
    for task in job.tasks:
        for env in (task.model, task.benchmark):
            if not re.match(r"^[A-Za-z0-9_-]+$", env.env_key):
                raise RenderError(f"environment key {env.env_key!r}")
    return _env.get_template("score_job.sh.j2").render(job=job, sbatch=sbatch_lines(job.slurm))


def render_env_builder(*, backend: str, uv: str = "uv", python: str = "python3", package_cache: str = "",
                       rattler_python: str = "python3", rattler_tool: str = "", micromamba: str = "micromamba",
                       conda: str = "conda", sandbox: str = "bwrap", extra_ro: tuple[str, ...] = (),
                       network: str = "on") -> str:
    """The environment step: build (or reuse) one environment from a lockfile, under flock.

    uv: a hashed requirements lock. rattler, micromamba, conda: a conda-lock.yml whose conda part the node
    tool installs (rattler from the yml, micromamba and conda from the `conda-linux-64.lock` that
    `conda-lock render --kind explicit` made beside it) and whose pip part uv installs into that prefix.
    `network`: the build's sandbox network, on (the outside, not the node) or host (the node's own).
    """
    if network not in ("on", "host"):
        raise RenderError(f"build network {network!r}")
    if backend == "uv":
        return _env.get_template("build_env_uv.sh.j2").render(backend=backend, uv=uv, python=python,
                                                              package_cache=package_cache, sandbox=sandbox,
                                                              extra_ro=extra_ro, network=network)
    if backend in ("rattler", "micromamba", "conda"):
        return _env.get_template("build_env_conda.sh.j2").render(
            backend=backend, rattler_python=rattler_python, rattler_tool=rattler_tool, micromamba=micromamba,
            conda=conda, uv=uv, package_cache=package_cache, sandbox=sandbox, extra_ro=extra_ro,
            python=python, network=network)
    raise RenderError(f"unknown environment backend {backend!r}")


@dataclass(frozen=True)
class PluginTestTask:
    """One plugin's tests: its environment and its test files."""

    index: int
    plugin: str
    env_key: str
    lockfile: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class PluginTestJob:
    code_dir: str
    report_dir: str
    build_env: str
    env_root: str
    tasks: tuple[PluginTestTask, ...]
    slurm: SlurmOptions
    python: str = "python3"  # the base interpreter that runs sandbox.py (never the plugin environment's)
    sandbox: str = "bwrap"  # off: pytest runs unconfined (an explicit setting)
    network: str = "on"  # the tests' sandbox network: on (the outside, not the node), off, host (the node's own)


def render_plugin_test_job(job: PluginTestJob) -> str:
    if job.network not in ("on", "off", "host"):
        raise RenderError(f"sandbox network {job.network!r}")
    for task in job.tasks:
        if not re.match(r"^[A-Za-z0-9_-]+$", task.env_key):
            raise RenderError(f"environment key {task.env_key!r}")
    return _env.get_template("plugin_test_job.sh.j2").render(job=job, sbatch=sbatch_lines(job.slurm))


@dataclass(frozen=True)
class SubmitArray:
    """One tier's job script of a bundle: its name, its first task in the run, its task count."""

    script: str
    first: int
    count: int


def render_submit(run_id: str, run_dir: str, arrays: tuple[SubmitArray, ...]) -> str:
    """The bundle's submit.sh: sbatch each array, and record each Slurm job id in the bundle (slurm-jobs)."""
    for array in arrays:
        if not re.match(r"^job[A-Za-z0-9_-]*\.sh$", array.script):
            raise RenderError(f"job script name {array.script!r}")
    return _env.get_template("submit.sh.j2").render(run_id=run_id, run_dir=run_dir, arrays=arrays)
