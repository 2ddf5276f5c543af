"""Site settings, layered the dask-jobqueue way.

package defaults < TOML site config (`SCORE_PLUGINS_CONFIG`) < environment
(`SCORE_PLUGINS_<FIELD>`) < command-line flags. One `Settings` type feeds the CLI,
the job-script templates and the docs (`score-plugins config show`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from jobscripts.render import SlurmOptions
from pipeline.errors import BadInput
from pipeline.tiers import Tier, parse_tiers

ENV_PREFIX = "SCORE_PLUGINS_"
# Variables that name credentials or the layering itself, never a settings field.
RESERVED_ENV = {"CONFIG", "SECRETS", "SMTP_URL"}


def _default_uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except Exception:  # uv not importable: rely on PATH
        return "uv"


@dataclass
class Settings:
    """Everything a run needs to know about the site; every field can be set at each layer."""

    state_dir: Path = field(default=Path(".score-plugins"), metadata={"help": "runs, envs, outbox, local database"})
    env_backend: str = field(default="uv", metadata={
        "help": "job environments: uv (a venv on `python`; conda only for plugins with environment.yml) or conda "
                "(every pair: one conda-lock file with the interpreter, conda packages and the pip layer)"})
    conda_channels: list[str] = field(default_factory=lambda: ["conda-forge"], metadata={
        "help": "conda channels of an environment whose plugins name none (env_backend = conda)"})
    conda_backend: str = field(default="rattler", metadata={
        "help": "how plugins with environment.yml are built: rattler (py-rattler), micromamba or conda"})
    rattler_python: str = field(default="", metadata={"help": "interpreter with py-rattler for the rattler backend"})
    micromamba: str = field(default="micromamba", metadata={"help": "micromamba binary on the cluster"})
    conda: str = field(default="conda", metadata={"help": "conda binary on the cluster"})
    env_mode: str = field(default="cached", metadata={"help": "cached (build once, reuse) or fresh (per job)"})
    env_root: Path | None = field(default=None, metadata={"help": "where cached environments live"})
    python: str = field(default="", metadata={"help": "base interpreter for job environments, as the nodes see it"})
    python_version: str = field(default="", metadata={
        "help": "its version (e.g. 3.11); needed when that interpreter exists only on the cluster"})
    uv: str = field(default="", metadata={"help": "uv binary used by job scripts"})
    package_cache: Path | None = field(default=None, metadata={"help": "package download cache (UV_CACHE_DIR)"})
    partition: str = field(default="", metadata={"help": "Slurm partition"})
    account: str = field(default="", metadata={"help": "Slurm account"})
    qos: str = field(default="", metadata={"help": "Slurm QOS"})
    time_minutes: int = field(default=60, metadata={"help": "time limit of one array task"})
    mem: str = field(default="4G", metadata={"help": "memory of one array task"})
    cpus_per_task: int = field(default=1, metadata={"help": "CPUs of one array task"})
    gpus: int = field(default=0, metadata={"help": "GPUs of one array task"})
    tiers: list[dict] = field(default_factory=list, metadata={
        "help": "memory tiers, smallest first: [[tiers]] tables of name, mem, time_minutes, gpus, gpu_type, gpu_mem, "
                "partition, qos (none: one tier of mem, time_minutes, gpus)"})
    tier_margin_percent: int = field(default=10, metadata={
        "help": "head room over a measured peak when choosing a pair's first tier"})
    tier_unseen_percentile: int = field(default=75, metadata={
        "help": "a pair's never-measured model (or benchmark) counts as this percentile of those measured "
                "(higher: fewer out-of-memory retries, more GB-hours requested)"})
    pairs_per_task: int = field(default=4, metadata={"help": "pairs packed into one array task"})
    array_throttle: int = field(default=0, metadata={"help": "at most this many array tasks at once (0: no limit)"})
    max_retries: int = field(default=2, metadata={"help": "resubmissions of a task lost to NODE_FAIL or PREEMPTED"})
    sandbox: str = field(default="bwrap", metadata={
        "help": "untrusted code's sandbox: bwrap (required: nothing runs without it; 'auto' is the same), or off "
                "(unconfined, named in every record; refused by the prod profile)"})
    sandbox_network: str = field(default="on", metadata={
        "help": "network inside the sandbox: on (the outside through slirp4netns: weights and data, never this "
                "node's own addresses or services), off (loopback only) or host (the node's own network, its local "
                "services included: the former 'on', named in every record)"})
    pair_max_processes: int = field(default=512, metadata={
        "help": "processes (and threads) one pair may have at once; past it the pair is stopped"})
    pair_disk_limit: str = field(default="20G", metadata={
        "help": "bytes one pair may write: its work folder in all, and any one file (also in the caches)"})
    plugin_cache_limit: str = field(default="100G", metadata={
        "help": "bytes one model or benchmark plugin's own cache folder may hold, over all its pairs; a pair that "
                "grows it past this is stopped, and a plugin whose folder is over it is not run"})
    pair_output_limit: str = field(default="200M", metadata={
        "help": "bytes one pair may print (its log keeps the first and last 1 MB); past it the pair is stopped"})
    pair_shm: str = field(default="512M", metadata={
        "help": "size of the pair's private /dev/shm (multiprocessing, joblib, DataLoader workers; counts as memory)"})
    sandbox_uid_base: int = field(default=2_000_000_000, metadata={
        "help": "first of 4096 user ids given one per running pair when the worker is root (never in /etc/passwd)"})
    sandbox_extra_paths: list[str] = field(default_factory=list, metadata={
        "help": "more node paths the plugin process may read (e.g. /opt/cuda); the rest of the node is hidden"})
    local_memory: str = field(default="cgroup", metadata={
        "help": "how the local executor bounds a pair's memory (its tier's mem): cgroup (a memory cgroup per pair "
                "below the coordinator's own, counting shared memory, memfd and page cache; nothing runs where none "
                "can be made) or rlimit (RLIMIT_DATA per process only, named in every record)"})
    plugin_maintainers: list[str] = field(default_factory=list, metadata={
        "help": "emails whose commits count as an owner's for every plugin (a change to a plugin folder by anyone "
                "else who is not among its owners is held until an administrator approves it)"})
    pair_timeout: int = field(default=900, metadata={
        "help": "seconds one pair may score before it is stopped (pairs_per_task x pair_timeout fits time_minutes)"})
    extra_sbatch: list[str] = field(default_factory=list, metadata={"help": "extra #SBATCH lines"})
    drop_sbatch: list[str] = field(default_factory=list, metadata={"help": "#SBATCH options to leave out"})
    modules: list[str] = field(default_factory=list, metadata={"help": "environment modules to load"})
    local_workers: int = field(default=0, metadata={"help": "parallel tasks on the local executor (0: CPUs)"})
    local_gpus: str = field(default="", metadata={
        "help": "the local executor's GPUs, e.g. '0,1' (empty: every /dev/nvidia[0-9]* node present); each task "
                "of a GPU tier gets its own, and waits for a free one rather than share"})
    gpu_dev_dir: str = field(default="/dev", metadata={
        "help": "where the NVIDIA device nodes are (/dev on every real node): a GPU pair's sandbox gets its GPUs' "
                "nodes from here"})
    admin_email: str = field(default="", metadata={"help": "address alerted on infrastructure failures"})
    sender_email: str = field(default="score-plugins@localhost", metadata={"help": "From: of every email"})
    leaderboard_url: str = field(default="", metadata={"help": "link to the leaderboard in emails"})
    mail_submitters: list[str] = field(default_factory=lambda: ["prod"], metadata={
        "help": "profiles whose emails go to the submitters; every other profile emails only mail_allow and "
                "admin_email, and keeps the rest in the outbox's held/ folder"})
    mail_allow: list[str] = field(default_factory=list, metadata={
        "help": "addresses (or @domain) that any profile may email, e.g. the team testing the dev job"})
    mail_max_age_hours: int = field(default=72, metadata={
        "help": "a waiting email older than this is not sent (outbox expired/ folder; 0: no limit); one whose "
                "pairs newer waiting emails to the same person all report is not sent either"})
    requirement_url_schemes: list[str] = field(default_factory=lambda: ["git+https"], metadata={
        "help": "URL schemes plugin requirements may use (the lock pins the resolved commit)"})
    lock_workers: int = field(default=4, metadata={"help": "environments solved at once while planning"})
    plugin_env: list[str] = field(default_factory=lambda: ["BS_INSTALL_DEPENDENCIES=no"], metadata={
        "help": "NAME=value variables given to the plugin process (Brain-Score: do not pip-install at import)"})
    hierarchy: Path | None = field(default=None, metadata={
        "help": "TOML file of leaderboard levels per domain, merged over Brain-Score's (see README)"})
    shared_cache: Path | None = field(default=None, metadata={
        "help": "persistent cache for data, weights and activations, shared by pairs, writable by plugins "
                "(default: <state_dir>/shared-cache); each model and benchmark plugin has its own folder in it"})
    trusted_caches: list[str] = field(default_factory=list, metadata={
        "help": "cache variables (e.g. BRAINIO_HOME) an admin trusts to be shared read-write by every plugin; "
                "each run's manifest and result files name them"})
    boundary_cap: str = field(default="4G", metadata={
        "help": "largest message between a model's process and its benchmark's (e.g. 4G)"})

    def __post_init__(self) -> None:
        self.state_dir = find_state_dir(Path(self.state_dir))
        if self.env_root is None:
            self.env_root = self.state_dir / "envs"
        if not self.python:
            self.python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        if not self.uv:
            self.uv = _default_uv()
        if not self.rattler_python:
            self.rattler_python = sys.executable  # the coordinator's own environment has py-rattler
        if self.env_backend not in ("uv", "conda"):
            raise BadInput(f"env_backend must be uv or conda, not {self.env_backend!r}")
        if self.conda_backend not in ("rattler", "micromamba", "conda"):
            raise BadInput(f"conda_backend must be rattler, micromamba or conda, not {self.conda_backend!r}")
        if self.local_workers <= 0:
            self.local_workers = os.cpu_count() or 1
        if self.env_mode not in ("cached", "fresh"):
            raise BadInput(f"env_mode must be 'cached' or 'fresh', not {self.env_mode!r}")
        if self.sandbox not in ("auto", "bwrap", "off"):
            raise BadInput(f"sandbox must be bwrap (or its alias auto) or off, not {self.sandbox!r}")
        if self.sandbox_network not in ("on", "off", "host"):
            raise BadInput(f"sandbox_network must be on, off or host, not {self.sandbox_network!r}")
        if self.local_memory not in ("cgroup", "rlimit"):
            raise BadInput(f"local_memory must be cgroup or rlimit, not {self.local_memory!r}")
        if self.pairs_per_task < 1:
            raise BadInput("pairs_per_task must be at least 1")
        for item in self.plugin_env:
            name = item.split("=", 1)[0]
            if "=" not in item or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise BadInput(f"plugin_env entry {item!r} is not NAME=value")
        if self.shared_cache is None:
            self.shared_cache = self.state_dir / "shared-cache"
        from pipeline.units import size_bytes

        for name in ("mem", "pair_disk_limit", "plugin_cache_limit", "pair_output_limit", "pair_shm"):
            if size_bytes(getattr(self, name)) is None:
                raise BadInput(f"setting {name}: {getattr(self, name)!r} is not a size (e.g. 4G, 800M)")
        if not 0 < self.sandbox_uid_base <= 2**32 - 2 - 4096:
            raise BadInput(f"setting sandbox_uid_base: {self.sandbox_uid_base} is not a user id with 4096 after it")
        from pipeline.job.pair_sandbox import CACHE_HOMES

        unknown = sorted(set(self.trusted_caches) - set(CACHE_HOMES))
        if unknown:
            raise BadInput(f"setting trusted_caches: {', '.join(unknown)} not among {', '.join(CACHE_HOMES)}")
        if not size_bytes(self.boundary_cap):
            raise BadInput(f"setting boundary_cap: {self.boundary_cap!r} is not a size (e.g. 4G, 800M)")
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value and not re.fullmatch(r"[A-Za-z0-9_.,:+-]+", value):
                raise BadInput(f"setting {name}: {value!r} is not a Slurm name (letters, digits, _ . , : + -)")
        for name in ("time_minutes", "cpus_per_task", "max_retries", "pair_timeout", "lock_workers",
                     "pair_max_processes"):
            if getattr(self, name) < (0 if name == "max_retries" else 1):
                raise BadInput(f"setting {name}: {getattr(self, name)} is too small")
        if self.gpus < 0 or self.array_throttle < 0 or self.tier_margin_percent < 0:
            raise BadInput("settings gpus, array_throttle and tier_margin_percent cannot be negative")
        if self.local_gpus and not re.fullmatch(r"\d+(,\d+)*", self.local_gpus):
            raise BadInput(f"setting local_gpus: {self.local_gpus!r} is not a list of GPU numbers (e.g. 0,1)")
        if not os.path.isabs(self.gpu_dev_dir):
            raise BadInput(f"setting gpu_dev_dir: {self.gpu_dev_dir!r} is not an absolute path")
        if not 0 <= self.tier_unseen_percentile <= 100:
            raise BadInput(f"setting tier_unseen_percentile: {self.tier_unseen_percentile} is not 0 to 100")
        if self.mail_max_age_hours < 0:
            raise BadInput(f"setting mail_max_age_hours: {self.mail_max_age_hours} cannot be negative")
        for entry in self.mail_allow:
            if not re.fullmatch(r"[A-Za-z0-9._%+-]*@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", entry.strip()):
                raise BadInput(f"setting mail_allow: {entry!r} is neither an address nor @domain")
        for entry in self.mail_submitters:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", entry):
                raise BadInput(f"setting mail_submitters: {entry!r} is not a profile name")
        self.tier_list  # checked now: a bad [[tiers]] table is one clear line before anything runs

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    @property
    def coordinator_uv(self) -> str:
        """The uv this process locks with (`uv` names the one job scripts run on the nodes)."""
        return _default_uv()

    @property
    def cache_dir(self) -> Path:
        """Parsed-source facts (by git blob id): safe to delete, rebuilt on the next run."""
        return self.state_dir / "cache"

    @property
    def tier_list(self) -> list[Tier]:
        """The tiers, smallest first (one `default` tier of mem/time_minutes/gpus when none is configured)."""
        return parse_tiers(self.tiers, mem=self.mem, time_minutes=self.time_minutes, gpus=self.gpus,
                           partition=self.partition, qos=self.qos)

    def slurm_options(self, job_name: str, array: str = "0", tier: Tier | None = None) -> SlurmOptions:
        """The Slurm request these settings make (the `#SBATCH` header, submitit's and pyslurm's parameters);
        with a configured `tier`, that tier's memory, time, GPUs (as --gres), partition and QOS."""
        opts = SlurmOptions(job_name=job_name, array=array, partition=self.partition, account=self.account,
                            qos=self.qos, time_minutes=self.time_minutes, mem=self.mem,
                            cpus_per_task=self.cpus_per_task, gpus=self.gpus, extra=tuple(self.extra_sbatch),
                            drop=tuple(self.drop_sbatch))
        if tier is None or not self.tiers:
            return opts
        return dataclasses.replace(opts, partition=tier.partition, qos=tier.qos, time_minutes=tier.time_minutes,
                                   mem=tier.mem, gpus=0, gres=tier.gres)

    def public(self) -> dict[str, Any]:
        """All fields as plain values (none of them is a secret)."""
        return {f.name: (str(v) if isinstance(v, Path) else v) for f in fields(self) for v in [getattr(self, f.name)]}


DEFAULT_STATE = Path(".score-plugins")


def find_state_dir(configured: Path, cwd: Path | None = None) -> Path:
    """The state folder: as configured when set; by default the nearest `.score-plugins` in the working
    directory or one of its parents (as git finds `.git`), else a new one in the working directory.
    Always absolute, so every command finds the same database from any folder below it."""
    cwd = (cwd or Path.cwd()).resolve()
    if configured != DEFAULT_STATE:
        return (cwd / configured).resolve() if not configured.is_absolute() else configured
    for folder in (cwd, *cwd.parents):
        if (folder / DEFAULT_STATE).is_dir():
            return folder / DEFAULT_STATE
    return cwd / DEFAULT_STATE


def _coerce(name: str, value: Any, annotation: str) -> Any:
    try:
        if annotation.startswith("int"):
            return int(value)
        if annotation.startswith("list[dict"):  # [[tiers]] tables; in the environment, their JSON
            import json

            return json.loads(value) if isinstance(value, str) else list(value)
        if annotation.startswith("list"):
            if isinstance(value, str):
                return [v for v in (s.strip() for s in value.split(",")) if v]
            return [str(v) for v in value]
        if "Path" in annotation:
            return Path(value) if value not in (None, "") else None
        return str(value)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"setting {name}: cannot use {value!r} ({exc})") from exc


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from the four layers; unknown keys in the site file are an error, not ignored."""
    environ = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    site = environ.get(ENV_PREFIX + "CONFIG")
    if site:
        path = Path(site)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BadInput(f"{ENV_PREFIX}CONFIG={site}: no such file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"{site}: not valid TOML: {exc}") from exc
        data = data.get("score-plugins", data)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BadInput(f"{site}: unknown settings {', '.join(unknown)}")
        values.update({k: _coerce(k, v, str(known[k].type)) for k, v in data.items()})
    for name, f in known.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and name.upper() not in RESERVED_ENV:
            values[name] = _coerce(name, raw, str(f.type))
    check_variable_names(environ, known)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, str(known[name].type))
    return Settings(**values)


# Variables of ours that are not settings: credentials per profile, the profile, and what job scripts read.
OTHER_VARIABLES = re.compile(r"(DB|SMTP)_[A-Z0-9_]+|SMTP_URL|SECRETS|CONFIG|PROFILE|TASK_OFFSET|BIN|HOME")


def check_variable_names(environ: Mapping[str, str], known: Mapping[str, Any]) -> None:
    """Our variables are upper-case and name a setting (or a credential, the profile...): a lower-case one would be
    silently ignored, so it is refused; an unknown one is refused with the nearest setting's name."""
    import difflib

    wrong_case = sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and not k.startswith(ENV_PREFIX))
    if wrong_case:
        raise BadInput(f"variable(s) {', '.join(wrong_case)}: names are upper-case "
                       f"({', '.join(k.upper() for k in wrong_case)})")
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and not _known_variable(k[len(ENV_PREFIX):], known))
    if unknown:
        hints = []
        for k in unknown:
            near = difflib.get_close_matches(k[len(ENV_PREFIX):].lower(), list(known), n=1, cutoff=0.6)
            hints.append(f"{k} (did you mean {ENV_PREFIX}{near[0].upper()}?)" if near else k)
        raise BadInput(f"unknown variable(s) {', '.join(hints)}: not a setting (see `score-plugins config`)")


def _known_variable(suffix: str, known: Mapping[str, Any]) -> bool:
    return suffix.lower() in known or bool(OTHER_VARIABLES.fullmatch(suffix))


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)


def python_version(python: str, configured: str = "") -> str:
    """The jobs' Python version: the `python_version` setting, else asked of the job interpreter when it exists
    here (a cluster interpreter that exists only on the nodes needs the setting)."""
    if configured:
        return configured
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BadInput(f"the job interpreter {python} cannot be run here ({type(exc).__name__}); set python_version "
                       "(e.g. SCORE_PLUGINS_PYTHON_VERSION=3.11) for a cluster-only interpreter") from None
    return out.stdout.strip()
