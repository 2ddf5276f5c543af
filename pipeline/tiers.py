"""Memory tiers: the sizes a site offers, which one a pair starts on, and where it goes after running out.

A tier is one Slurm request (memory, time, GPUs, optionally its own partition and QOS). Tiers are ordered
smallest first. A pair starts on the smallest tier that fits (with a margin) the highest peak measured for
it (else for its model or its benchmark), else what its plugins declare, else the smallest tier; an
out-of-memory attempt moves it one tier up, a timeout to the next tier with a longer limit. Pure functions:
the settings, the plan, the escalation loop and the benchmark all ask here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pipeline.errors import BadInput
from pipeline.units import size_bytes

TIER_KEYS = {"name", "mem", "time_minutes", "gpus", "gpu_type", "gpu_mem", "partition", "qos"}
NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:+-]*")
GB = 2**30


@dataclass(frozen=True)
class Tier:
    """One size of request."""

    name: str
    mem: str
    time_minutes: int
    gpus: int = 0
    gpu_type: str = ""
    partition: str = ""
    qos: str = ""
    gpu_mem: str = ""  # memory of each of its GPUs (e.g. 40G): where a pair out of GPU memory goes next

    @property
    def mem_bytes(self) -> int:
        return size_bytes(self.mem) or 0

    @property
    def gpu_mem_bytes(self) -> int | None:
        return size_bytes(self.gpu_mem) if self.gpu_mem else None

    @property
    def gres(self) -> str:
        """Slurm's generic-resource request for this tier's GPUs ('' without GPUs)."""
        if not self.gpus:
            return ""
        return f"gpu:{self.gpu_type}:{self.gpus}" if self.gpu_type else f"gpu:{self.gpus}"

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU" + ("s" if self.gpus > 1 else "") + (f" of {self.gpu_mem}" if self.gpu_mem else "") \
            if self.gpus else ""
        return f"{self.name} ({self.mem}, {self.time_minutes} min{gpus})"

    def to_json(self) -> dict:
        return {"name": self.name, "mem": self.mem, "mem_bytes": self.mem_bytes, "time_minutes": self.time_minutes,
                "gpus": self.gpus, "gpu_type": self.gpu_type, "gpu_mem": self.gpu_mem, "partition": self.partition,
                "qos": self.qos}


def parse_tiers(raw: Iterable[Any], *, mem: str, time_minutes: int, gpus: int, partition: str = "",
                qos: str = "") -> list[Tier]:
    """The site's `[[tiers]]` tables, checked; none: one tier `default` made of the plain settings, so a site
    without tiers requests exactly what it did before."""
    items = list(raw or [])
    if not items:
        return [Tier("default", mem, time_minutes, gpus, "", partition, qos)]
    tiers = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise BadInput(f"tiers: entry {n} is not a table (name, mem, time_minutes, gpus...)")
        unknown = sorted(set(item) - TIER_KEYS)
        if unknown:
            raise BadInput(f"tiers: entry {n} has unknown keys {', '.join(map(str, unknown))} "
                           f"(known: {', '.join(sorted(TIER_KEYS))})")
        name = str(item.get("name", ""))
        if not NAME.fullmatch(name):
            raise BadInput(f"tiers: entry {n} needs a name of letters, digits, _ and - (got {name!r})")
        tier_mem = str(item.get("mem", ""))
        if not size_bytes(tier_mem):
            raise BadInput(f"tiers: {name}: mem {tier_mem!r} is not a size (e.g. 8G, 800M)")
        try:
            minutes = int(item.get("time_minutes", time_minutes))
            tier_gpus = int(item.get("gpus", 0))
        except (TypeError, ValueError):
            raise BadInput(f"tiers: {name}: time_minutes and gpus must be whole numbers") from None
        if minutes < 1 or tier_gpus < 0:
            raise BadInput(f"tiers: {name}: time_minutes must be at least 1 and gpus not negative")
        fields = {k: str(item.get(k, default)) for k, default in (("gpu_type", ""), ("partition", partition),
                                                                   ("qos", qos))}
        for key, value in fields.items():
            if not SLURM_NAME.fullmatch(value):
                raise BadInput(f"tiers: {name}: {key} {value!r} is not a Slurm name")
        gpu_mem = str(item.get("gpu_mem", ""))
        if gpu_mem and (not size_bytes(gpu_mem) or not tier_gpus):
            raise BadInput(f"tiers: {name}: gpu_mem {gpu_mem!r} needs gpus and a size (e.g. 80G)")
        tiers.append(Tier(name, tier_mem, minutes, tier_gpus, **fields, gpu_mem=gpu_mem))
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise BadInput(f"tiers: names repeat ({', '.join(names)})")
    for smaller, larger in zip(tiers, tiers[1:]):
        if larger.mem_bytes < smaller.mem_bytes:
            raise BadInput(f"tiers: list them smallest first ({larger.name} has less memory than {smaller.name})")
    return tiers


@dataclass(frozen=True)
class Need:
    """What a pair needs, as far as it is known: bytes of memory, GPUs, minutes (None: not known)."""

    mem_bytes: int | None = None
    gpus: int = 0
    time_minutes: int | None = None

    def merge(self, other: "Need") -> "Need":
        """Both plugins of a pair run in one process: the pair needs the larger of each."""
        def most(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else max(a, b)

        return Need(most(self.mem_bytes, other.mem_bytes), max(self.gpus, other.gpus),
                    most(self.time_minutes, other.time_minutes))


def fits(tier: Tier, need: Need, margin: float = 0.0) -> bool:
    if tier.gpus < need.gpus:
        return False
    if need.time_minutes is not None and tier.time_minutes < need.time_minutes:
        return False
    return need.mem_bytes is None or need.mem_bytes * (1 + margin) <= tier.mem_bytes


def largest(tiers: list[Tier]) -> Tier:
    return tiers[-1]


def too_large(tiers: list[Tier], need: Need) -> str | None:
    """Why no tier can ever hold this need (None: one can)."""
    if any(fits(t, need) for t in tiers):
        return None
    top = max(tiers, key=lambda t: t.mem_bytes)
    parts = []
    if need.mem_bytes is not None and need.mem_bytes > top.mem_bytes:
        parts.append(f"{need.mem_bytes / GB:.1f} GB of memory")
    if need.gpus and not any(t.gpus >= need.gpus for t in tiers):
        parts.append(f"{need.gpus} GPU(s)")
    if need.time_minutes is not None and not any(t.time_minutes >= need.time_minutes for t in tiers):
        parts.append(f"{need.time_minutes} minutes")
    what = " and ".join(parts) or "this combination of memory, GPUs and time"
    return f"declares {what}; the largest tier is {top.describe()}"


def first_tier(tiers: list[Tier], measured: int | None, declared: Need, margin: float,
               exact: bool = False) -> tuple[Tier, str]:
    """The tier a pair starts on, and why. A peak measured for the pair itself (`exact`) wins over everything;
    a peak measured only for its model or its benchmark wins unless the declaration asks for more (a model
    measured at 2 GB elsewhere still needs a benchmark's declared 70 GB of fixed cost). A need beyond every
    tier starts on the largest that meets the rest."""
    constraint = Need(None, declared.gpus, declared.time_minutes)
    eligible = [t for t in tiers if fits(t, constraint)] or tiers
    if measured is not None and not exact and declared.mem_bytes is not None \
            and declared.mem_bytes > measured * (1 + margin):
        measured = None  # the declaration is the larger, and nothing measured this very pair
    if measured is not None:
        need = Need(measured, declared.gpus, declared.time_minutes)
        chosen = next((t for t in eligible if fits(t, need, margin)), eligible[-1])
        return chosen, f"measured: peak {measured / GB:.2f} GB + {margin:.0%} margin"
    if declared.mem_bytes is not None or declared.gpus or declared.time_minutes is not None:
        chosen = next((t for t in eligible if fits(t, declared)), eligible[-1])
        return chosen, "declared in metadata.yml"
    return eligible[0], "default: nothing measured or declared"


def next_tier(tiers: list[Tier], current: str, kind: str) -> Tier | None:
    """Where an attempt that ended `kind` (OOM, GPU_OOM or TIMEOUT) goes next: the next tier with more memory
    (OOM), more memory per GPU (GPU_OOM: both tiers declare `gpu_mem`), or a longer time limit (TIMEOUT),
    keeping at least the GPUs it had; None at the top."""
    names = [t.name for t in tiers]
    if current not in names:
        return None
    now = tiers[names.index(current)]
    for tier in tiers[names.index(current) + 1:]:
        if tier.gpus < now.gpus:
            continue
        if kind == "OOM" and tier.mem_bytes > now.mem_bytes:
            return tier
        if kind == "GPU_OOM" and (tier.gpu_mem_bytes or 0) > (now.gpu_mem_bytes or 0) and now.gpu_mem_bytes:
            return tier
        if kind == "TIMEOUT" and tier.time_minutes > now.time_minutes:
            return tier
    return None


def top_reason(tiers: list[Tier], kind: str) -> str:
    """The reason a pair that outgrew every tier ends FAILED with."""
    if kind == "TIMEOUT":
        longest = max(tiers, key=lambda t: t.time_minutes)
        return f"needs more than the longest tier ({longest.name}: {longest.time_minutes} minutes)"
    if kind == "GPU_OOM":
        most = max(tiers, key=lambda t: t.gpu_mem_bytes or 0)
        if not most.gpu_mem_bytes:
            return "ran out of GPU memory, and no tier declares more GPU memory (gpu_mem) to move it to"
        return f"needs more GPU memory than the largest GPU tier ({most.name}: {most.gpus} x {most.gpu_mem})"
    top = max(tiers, key=lambda t: t.mem_bytes)
    return f"needs more than the largest tier ({top.name}: {top.mem_bytes / GB:g} GB)"


def time_budget_problems(tiers: list[Tier], named: bool, pair_timeout: int, pairs_per_task: int,
                         tasks: list[dict] | None = None) -> list[str]:
    """A task of n pairs, each allowed `pair_timeout` seconds, must fit its tier's time limit, or Slurm may stop
    it (TIMEOUT) before its last pairs had their chance. Checked per tier, with each task's real pair count
    when the tasks are known (a rendered bundle: `tier` and `pairs` of each), else `pairs_per_task`; one line per
    tier that does not fit (`named`: the site configured tiers, so the line names the tier)."""
    counts: dict[str, int] = {}
    for task in tasks if tasks is not None else ({"tier": t.name, "pairs": [None] * pairs_per_task} for t in tiers):
        counts[task["tier"]] = max(counts.get(task["tier"], 0), len(task["pairs"]))
    problems = []
    for tier in tiers:
        n = counts.get(tier.name, 0)
        worst = n * pair_timeout
        if not n or worst <= tier.time_minutes * 60:
            continue
        where, limit = (f"tier {tier.name}: ", "its time_minutes") if named else ("", "time_minutes")
        problems.append(f"{where}a task of {n} pair(s) x pair_timeout ({pair_timeout} s) = {worst / 60:g} min "
                        f"exceeds {limit} ({tier.time_minutes}): Slurm may stop a task before its last pairs are "
                        f"scored; lower pairs_per_task or pair_timeout, or raise "
                        f"{'the tier' + chr(39) + 's time_minutes' if named else 'time_minutes'}")
    return problems
