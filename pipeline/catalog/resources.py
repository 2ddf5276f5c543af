"""What a plugin declares it needs, read statically from its `metadata.yml` (Brain-Score's metadata file).

    resources:            # the whole plugin folder
      memory: 40G
      gpus: 1
      time: 3h            # or minutes: 180, or 02:30:00
    models:               # Brain-Score's per-identifier metadata; a `resources:` there wins for that id
      my-model:
        resources: {memory: 60G}

Plugin text is data: parsed by pipeline.safe_yaml (no aliases: nothing expands), size-capped, every value
checked; a bad value is one issue on the file, never an exception.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from pipeline import safe_yaml
from pipeline.tiers import Need
from pipeline.units import size_bytes

METADATA_FILES = ("metadata.yml", "metadata.yaml")
MAX_BYTES = 1_000_000
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|hours?|m|min|minutes?)?", re.IGNORECASE)


def _memory(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("memory is not a size")
    if isinstance(value, (int, float)):
        return int(value * 2**30)  # a bare number is gigabytes
    text = _text(value).strip().upper().replace(" ", "")
    size = size_bytes(text[:-1] if text.endswith("IB") else text, default_unit="G")
    if not size:
        raise ValueError(f"memory {_text(value)[:40]!r} is not a size (e.g. 40G, 800M)")
    return size


def _minutes(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("time is not a duration")
    if isinstance(value, int):
        return value
    text = _text(value).strip()
    if ":" in text:
        parts = [int(p) for p in text.split(":") if p.isdigit()]
        if len(parts) == 3:
            return parts[0] * 60 + parts[1] + (parts[2] > 0)
    match = DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"time {text[:40]!r} is not a duration (minutes, 3h, 90m, 02:30:00)")
    number = float(match.group(1))
    return int(number * 60) if (match.group(2) or "m").lower().startswith("h") else int(number)


def _text(value: Any) -> str:
    """A value as text for parsing and messages; a list or mapping is shown, never formatted whole."""
    return safe_yaml.shown(value, 200) if isinstance(value, (list, dict)) else str(value)


def need_of(block: Any) -> Need:
    """A `resources:` mapping as a Need (ValueError: what is wrong with it)."""
    if not isinstance(block, dict):
        raise ValueError("resources must be a mapping of memory, gpus, time")
    unknown = sorted(str(k) for k in block if k not in ("memory", "gpus", "time"))
    if unknown:
        raise ValueError(f"resources: unknown keys {', '.join(unknown)[:100]} (known: memory, gpus, time)")
    gpus = block.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 64:
        raise ValueError("resources: gpus must be a whole number from 0 to 64")
    return Need(_memory(block["memory"]) if block.get("memory") is not None else None, gpus,
                _minutes(block["time"]) if block.get("time") is not None else None)


def read_resources(text: str, plugin_type: str) -> tuple[dict[str, Need], str | None]:
    """{'' (the folder) or identifier: Need} from a metadata file's text, and the first problem found."""
    if len(text) > MAX_BYTES:
        return {}, f"larger than {MAX_BYTES} bytes; not read"
    try:
        data = safe_yaml.load(text)
    except safe_yaml.Refused as exc:
        return {}, str(exc)
    except yaml.YAMLError as exc:
        return {}, f"not valid YAML ({str(exc).splitlines()[0][:120]})"
    return resources_of(data, plugin_type)


def resources_of(data: Any, plugin_type: str) -> tuple[dict[str, Need], str | None]:
    """`read_resources` of an already loaded document."""
    if not isinstance(data, dict):
        return {}, None
    found: dict[str, Need] = {}
    try:
        if "resources" in data:
            found[""] = need_of(data["resources"])
        entries = data.get(plugin_type)
        if isinstance(entries, dict):
            for identifier, meta in entries.items():
                if isinstance(meta, dict) and "resources" in meta:
                    found[str(identifier)] = need_of(meta["resources"])
    except (ValueError, OverflowError) as exc:  # OverflowError: `memory: .inf`, or 400 digits
        return found, str(exc) if isinstance(exc, ValueError) else "resources: a value is too large"
    return found, None
