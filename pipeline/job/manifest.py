"""A run's manifest (`manifest.json`), its typed schema: written by the coordinator, read by the worker on the
node. Standard library only (the coordinator imports it to write the manifest; the job reads it). A plain class,
not a dataclass: both processes of every pair import this module, and `dataclasses` (with `inspect`) would be a
third of what they import before the plugins."""

from __future__ import annotations

import json
from pathlib import Path

from .defaults import DEFAULT_CAP, UID_BASE


SCHEMA = 1  # of a result file in the spool (docs/spool.md)
MANIFEST_SCHEMA = 1


class ManifestError(ValueError):
    """A manifest this worker cannot read: another schema, a missing or unknown field, a wrong type."""


_REQUIRED = object()  # a field's default when it has none


class Manifest:
    """A run's manifest (`manifest.json`): written by the coordinator (`pipeline.stages.bundle`), read here in the
    job. One typed schema for both sides; a field added on one side and not the other fails loudly. The fields are
    the annotations below (a class attribute is a field's default; a list or dict default is copied)."""

    run_id: str
    commit: str
    domain_root: str
    executor: str
    code_dir: str
    spool_dir: str
    log_dir: str
    worker: str
    env_root: str
    env_mode: str
    env_backend: str
    state_dir: str
    created_at: str
    tasks: list  # [{"index": int, "envs": {"model": {...}, "benchmark": {...}}, "pairs": [{"key", "model", ...}]}]
    pair_timeout: int = 1800
    cpus_per_task: int = 1
    array_throttle: int = 0
    sandbox: str = "auto"  # auto (= bwrap) | bwrap | off
    sandbox_network: str = "on"  # on (the outside, not the node) | off (loopback only) | host (the node's own)
    max_processes: int | None = 512  # per pair (a per-pair user when the worker is root)
    disk_limit_bytes: int | None = None  # per pair: its work folder, and any one file it writes
    output_limit_bytes: int | None = None  # per pair: what it prints; the pair is stopped past it
    cache_limit_bytes: int | None = None  # per plugin: what its own cache folder holds, over all its pairs
    shm_bytes: int = 256 << 20  # its private /dev/shm
    uid_base: int = UID_BASE
    mem_limit_bytes: int | None = None  # the plugin's data limit (local executor; Slurm enforces its own)
    local_memory: str = "cgroup"  # how mem_limit_bytes is enforced: cgroup (a memory cgroup per pair) | rlimit
    shared_cache: str | None = None
    trusted_caches: list = []  # cache variables an admin shares between all plugins
    boundary_cap_bytes: int = DEFAULT_CAP  # largest message between the model's and benchmark's process
    plugin_env: dict = {}
    sandbox_extra_paths: list = []
    uv: str = ""  # installs what a dynamic setup.py asks for, inside the job's sandbox
    gpu_dev_dir: str = "/dev"  # where a GPU pair's device nodes are found (pipeline/job/gpus.py)
    schema: int = MANIFEST_SCHEMA
    path: str = ""  # where it was read from; never written, never compared

    def __init__(self, path: str = "", **values: object):
        unknown = sorted(set(values) - set(FIELDS))
        missing = sorted(n for n, (_, default) in FIELDS.items() if default is _REQUIRED and n not in values)
        if unknown or missing:
            raise TypeError(f"Manifest() got unknown fields {unknown} and lacks {missing}")
        for name, (_, default) in FIELDS.items():
            value = values[name] if name in values else default
            setattr(self, name, value.copy() if isinstance(value, (list, dict)) and name not in values else value)
        self.path = path

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def replace(self, **changes: object) -> "Manifest":
        """A copy with `changes` (what `dataclasses.replace` did): the worker's per-task and per-pair views."""
        return Manifest(path=self.path, **{**self.to_dict(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Manifest(run_id={self.run_id!r}, {len(self.tasks)} task(s), path={self.path!r})"

    @classmethod
    def from_dict(cls, data: dict, path: str = "") -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("a manifest is a JSON object")
        if data.get("schema") != MANIFEST_SCHEMA:
            raise ManifestError(f"manifest schema {data.get('schema')!r}; this worker reads schema "
                                f"{MANIFEST_SCHEMA} (render the bundle again)")
        unknown = sorted(set(data) - set(FIELDS))
        missing = sorted(n for n, (_, default) in FIELDS.items() if n not in data and default is _REQUIRED)
        if unknown or missing:
            raise ManifestError("manifest fields " + "; ".join(
                x for x in (f"unknown: {', '.join(unknown)}" if unknown else "",
                            f"missing: {', '.join(missing)}" if missing else "") if x))
        for name, value in data.items():
            kind = FIELDS[name][0]
            kinds = _MANIFEST_TYPES[kind]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ManifestError(f"manifest field {name}: {type(value).__name__} is not {kind}")
        return cls(**data, path=path)

    @classmethod
    def load(cls, path: "str | Path") -> "Manifest":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), str(Path(path).resolve()))


_MANIFEST_TYPES = {"str": (str,), "int": (int,), "list": (list,), "dict": (dict,),
                   "int | None": (int, type(None)), "str | None": (str, type(None))}
# name -> (its annotation, its default or _REQUIRED), in the order the class declares them; `path` is not a field
FIELDS: dict[str, tuple[str, object]] = {
    name: (kind, Manifest.__dict__.get(name, _REQUIRED))
    for name, kind in Manifest.__annotations__.items() if name != "path"}
