"""Check a request (time, memory) against the Slurm partition's limits before anything is submitted."""

from __future__ import annotations

import re
import shutil
import subprocess

from pipeline.errors import BadInput
from pipeline.units import size_bytes

def mem_mb(text: str) -> int | None:
    """'4G' -> 4096, '800M' -> 800, '21694' (MB) -> 21694; 'UNLIMITED' -> None."""
    size = size_bytes(text)
    return None if size is None else size // 2**20


def time_minutes(text: str) -> int | None:
    """Slurm times: 'UNLIMITED', 'MM', 'HH:MM:SS', 'D-HH:MM:SS' -> minutes (None: no limit)."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    elif len(parts) == 2:
        minutes = parts[0] + parts[1] / 60
    else:
        minutes = parts[0] * 60 + parts[1] + parts[2] / 60
    return int(days * 1440 + minutes)


def partition_limits(partition: str = "") -> dict[str, object] | None:
    """The partition's MaxTime and memory per node from `scontrol show partition` (None: no scontrol)."""
    if shutil.which("scontrol") is None:
        return None
    proc = subprocess.run(["scontrol", "show", "partition", *([partition] if partition else [])],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise BadInput(f"partition {partition!r}: {proc.stderr.strip()}")
    blocks = [b for b in proc.stdout.split("\n\n") if b.strip()]
    block = next((b for b in blocks if "Default=YES" in b), blocks[0]) if not partition else blocks[0]
    fields = dict(re.findall(r"(\w+)=(\S+)", block))
    tres_mem = re.search(r"mem=([\d.]+[KMGT]?)", fields.get("TRES", ""))
    node_mem = mem_mb(tres_mem.group(1)) if tres_mem else None
    per_node = mem_mb(fields.get("MaxMemPerNode", "UNLIMITED"))
    return {"name": fields.get("PartitionName", partition), "max_minutes": time_minutes(fields.get("MaxTime", "")),
            "max_mem_mb": min(x for x in (per_node, node_mem) if x) if (per_node or node_mem) else None}


def check_request(partition: str, minutes: int, mem: str, what: str = "") -> None:
    """Bad input when the request can never run in the partition (sbatch would queue it forever or refuse)."""
    limits = partition_limits(partition)
    if limits is None:
        return
    if limits["max_minutes"] is not None and minutes > limits["max_minutes"]:
        raise BadInput(f"time_minutes={minutes}{what} exceeds partition {limits['name']}'s MaxTime of "
                       f"{limits['max_minutes']} minutes")
    wanted = mem_mb(mem)
    if wanted is not None and limits["max_mem_mb"] is not None and wanted > limits["max_mem_mb"]:
        raise BadInput(f"mem={mem}{what} exceeds the {limits['max_mem_mb']} MB a node of partition {limits['name']} has")
