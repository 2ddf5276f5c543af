"""A run's manifest (`manifest.json`), its typed schema: written by the coordinator, read by the worker on the
node. Standard library only (the coordinator imports it to write the manifest; the job reads it)."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from . import boundary
from . import sandbox as sb


SCHEMA = 1  # of a result file in the spool (docs/spool.md)
MANIFEST_SCHEMA = 1


class ManifestError(ValueError):
    """A manifest this worker cannot read: another schema, a missing or unknown field, a wrong type."""


@dataclass
class Manifest:
    """A run's manifest (`manifest.json`): written by the coordinator (`pipeline.stages.bundle`), read here in the
    job. One typed schema for both sides; a field added on one side and not the other fails loudly."""

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
    tasks: list  # [{"index": int, "lock": {...}, "pairs": [{"key", "model", "benchmark", ...}]}]
    pair_timeout: int = 1800
    cpus_per_task: int = 1
    array_throttle: int = 0
    sandbox: str = "auto"  # auto (= bwrap) | bwrap | off
    sandbox_network: str = "on"  # on | off (loopback only)
    max_processes: Optional[int] = 512  # per pair (a per-pair user when the worker is root)
    disk_limit_bytes: Optional[int] = None  # per pair: its work folder, and any one file it writes
    output_limit_bytes: Optional[int] = None  # per pair: what it prints; the pair is stopped past it
    shm_bytes: int = 256 << 20  # its private /dev/shm
    uid_base: int = sb.UID_BASE
    mem_limit_bytes: Optional[int] = None  # the plugin's data limit (local executor; Slurm enforces its own)
    shared_cache: Optional[str] = None
    trusted_caches: list = field(default_factory=list)  # cache variables an admin shares between all plugins
    boundary_cap_bytes: int = boundary.DEFAULT_CAP  # largest message between the model's and benchmark's process
    plugin_env: dict = field(default_factory=dict)
    sandbox_extra_paths: list = field(default_factory=list)
    uv: str = ""  # installs what a dynamic setup.py asks for, inside the job's sandbox
    schema: int = MANIFEST_SCHEMA
    path: str = field(default="", compare=False)  # where it was read from; never written

    def to_json(self) -> str:
        data = asdict(self)
        del data["path"]
        return json.dumps(data, indent=1)

    @classmethod
    def from_dict(cls, data: dict, path: str = "") -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("a manifest is a JSON object")
        if data.get("schema") != MANIFEST_SCHEMA:
            raise ManifestError(f"manifest schema {data.get('schema')!r}; this worker reads schema "
                                f"{MANIFEST_SCHEMA} (render the bundle again)")
        known = {f.name: f for f in fields(cls) if f.name != "path"}
        unknown = sorted(set(data) - set(known))
        missing = sorted(n for n, f in known.items() if n not in data and f.default is MISSING
                         and f.default_factory is MISSING)
        if unknown or missing:
            raise ManifestError("manifest fields " + "; ".join(
                x for x in (f"unknown: {', '.join(unknown)}" if unknown else "",
                            f"missing: {', '.join(missing)}" if missing else "") if x))
        for name, value in data.items():
            kinds = _MANIFEST_TYPES[str(known[name].type)]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ManifestError(f"manifest field {name}: {type(value).__name__} is not {known[name].type}")
        return cls(**data, path=path)

    @classmethod
    def load(cls, path: "str | Path") -> "Manifest":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), str(Path(path).resolve()))


_MANIFEST_TYPES = {"str": (str,), "int": (int,), "list": (list,), "dict": (dict,),
                   "Optional[int]": (int, type(None)), "Optional[str]": (str, type(None))}
