"""Slurm-style sizes ('4G', '800M', '957728K', '4Gn', '2Gc') as bytes: one parser for settings and sacct."""

from __future__ import annotations

import re

FACTORS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)B?[NC]?")


def size_bytes(text: str, default_unit: str = "M") -> int | None:
    """Bytes of a size; a bare number is in `default_unit` (Slurm's --mem: megabytes; sacct's MaxRSS: bytes).
    None for anything else ('UNLIMITED', '')."""
    match = SIZE.fullmatch(text.strip().upper())
    if not match:
        return None
    return int(float(match.group(1)) * FACTORS[match.group(2) or default_unit])
