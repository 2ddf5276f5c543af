"""What a pair's result is made of and how it lands in the spool: atomic JSON files, the spool's index, log
tails and caps, the job's context (docs/spool.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .manifest import Manifest, SCHEMA


LOG_CAP_BYTES = 2_000_000  # a pair's log beyond this keeps its head and tail
TAIL_CHARS = 3000


# datetime, tempfile and socket are imported where they are used: only the worker writes results, and the
# benchmark's process (a new one for every pair) imports this module for StageError alone.

def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, data: dict) -> None:
    """Temporary file in the same folder, fsync, rename: readers never see half a file."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


SPOOL_INDEX = ".index"  # the spool's append-only list of finished result names (docs/spool.md)


def announce(spool: Path, name: str) -> None:
    """Append a finished result's name to the spool's index, so that the coordinator reads what is new instead
    of listing the whole folder every cycle. One short O_APPEND write; best effort: a line lost (e.g. on NFS)
    only delays that result to the coordinator's final listing of the folder."""
    try:
        fd = os.open(spool / SPOOL_INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name}\n".encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        print(f"[score-plugins] cannot announce {name} in the spool index: {exc}", file=sys.stderr)


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    """The last `chars` characters of a log, decoded leniently (plugins may print any bytes)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\x00", "")
    return text[-chars:]


def cap_log(path: Path, cap: int = LOG_CAP_BYTES) -> None:
    """Keep a huge log readable: its first and last `cap/2` bytes around a marker."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size <= cap:
        return
    half = cap // 2
    with open(path, "rb") as f:
        head = f.read(half)
        f.seek(size - half)
        end = f.read()
    marker = f"\n[... {size - 2 * half} bytes cut by score-plugins ...]\n".encode()
    tmp = path.with_suffix(".capped")
    tmp.write_bytes(head + marker + end)
    os.replace(tmp, path)


def job_context() -> dict:
    import socket

    env = os.environ
    index = env.get("SLURM_ARRAY_TASK_ID")
    return {
        "job_id": env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID") or "",
        "array_index": int(index) if index and index.isdigit() else None,
        "node": env.get("SLURMD_NODENAME") or socket.gethostname(),
        "attempt": int(env.get("SLURM_RESTART_COUNT") or 0) + 1,
    }


def base_result(manifest: Manifest, pair: dict) -> dict:
    keys = ("key", "model", "benchmark", "model_plugin", "benchmark_plugin", "model_code_hash",
            "benchmark_code_hash", "lock_hash", "env_hash", "submitters", "model_owner", "benchmark_owner")
    result = {k: pair.get(k) for k in keys}
    result["pair_key"] = result.pop("key")
    result.update({"schema": SCHEMA, "run_id": manifest.run_id, "commit": manifest.commit,
                   "domain": manifest.domain_root, "executor": manifest.executor})
    result.update(job_context())
    return result


class StageError(Exception):
    """A pair that cannot go on, at `stage`; `state` FAILED (the plugins') unless the node is to blame."""

    def __init__(self, stage: str, reason: str, state: str = "FAILED"):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.state = state
