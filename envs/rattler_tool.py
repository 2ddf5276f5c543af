#!/usr/bin/env python3
"""Solve conda specs to a conda-lock.yml, and install its conda part, with py-rattler (no conda binary).

Run as a subprocess (`python -m envs.rattler_tool` or as a file): a rare crash of py-rattler
after a finished install was seen, so the caller verifies the result instead of trusting the
exit alone. Needs py-rattler and PyYAML in the interpreter that runs it.

  solve   --channel URL ... --platform linux-64 --out conda-lock.yml SPEC ...
  install LOCKFILE TARGET
  verify  LOCKFILE TARGET
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path


def build_of(package: dict) -> str:
    """conda-lock v1 keeps no build string: it is the last field of the file name (name-version-build.conda)."""
    stem = package["url"].rsplit("/", 1)[-1]
    for ext in (".conda", ".tar.bz2"):
        stem = stem[: -len(ext)] if stem.endswith(ext) else stem
    return stem.rsplit("-", 1)[-1]


def conda_part(lock: dict) -> list[dict]:
    """The lock's conda packages (its `manager: pip` entries are installed by uv afterwards)."""
    return [p for p in lock["package"] if p.get("manager", "conda") == "conda"]


def _records_to_lock(records, channels: list[str], platform: str, specs: list[str]) -> dict:  # noqa: ANN001
    packages = []
    for r in sorted(records, key=lambda r: r.name.normalized):
        packages.append({
            "name": str(r.name.normalized), "version": str(r.version), "manager": "conda", "platform": platform,
            "dependencies": {str(d).split()[0]: " ".join(str(d).split()[1:]) for d in r.depends},
            "url": str(r.url), "hash": {"md5": r.md5.hex() if r.md5 else "", "sha256": r.sha256.hex() if r.sha256 else ""},
            "category": "main", "optional": False,
        })
    content = hashlib.sha256(json.dumps({"channels": channels, "specs": sorted(specs)}).encode()).hexdigest()
    return {"version": 1,
            "metadata": {"content_hash": {platform: content}, "channels": [{"url": c, "used_env_vars": []}
                                                                        for c in channels],
                         "platforms": [platform], "sources": ["environment.yml"]},
            "package": packages}


async def solve(channels: list[str], specs: list[str], platform: str, out: Path) -> None:
    import rattler
    import yaml

    records = await rattler.solve(channels, specs, platforms=[platform, "noarch"])
    out.write_text(yaml.safe_dump(_records_to_lock(records, channels, platform, specs), sort_keys=False))


async def install(lockfile: Path, target: Path) -> None:
    """Install exactly the locked packages: solve the pins again, check every URL and sha256, install."""
    import rattler
    import yaml

    lock = yaml.safe_load(lockfile.read_text())
    channels = [c["url"] for c in lock["metadata"]["channels"]]
    platform = lock["metadata"]["platforms"][0]
    conda = conda_part(lock)
    pins = [f"{p['name']} =={p['version']} {build_of(p)}" for p in conda]
    records = await rattler.solve(channels, pins, platforms=[platform, "noarch"])
    wanted = {p["name"]: p for p in conda}
    got = {str(r.name.normalized): r for r in records}
    if set(got) != set(wanted):
        raise SystemExit(f"locked packages {sorted(wanted)} resolved to {sorted(got)}")
    for name, record in got.items():
        sha = record.sha256.hex() if record.sha256 else ""
        if str(record.url) != wanted[name]["url"] or (wanted[name]["hash"].get("sha256") and
                                                 sha != wanted[name]["hash"]["sha256"]):
            raise SystemExit(f"{name}: the channel's package differs from the locked one")
    await rattler.install(records, str(target), show_progress=False)


def verify(lockfile: Path, target: Path) -> None:
    """Every locked package is recorded in the environment's conda-meta (name-version-build.json)."""
    import yaml

    lock = yaml.safe_load(lockfile.read_text())
    conda = conda_part(lock)
    missing = [p["name"] for p in conda
               if not (target / "conda-meta" / f"{p['name']}-{p['version']}-{build_of(p)}.json").exists()]
    if missing:
        raise SystemExit(f"environment {target} lacks locked packages: {', '.join(missing)}")
    print(f"score-plugins: verified {len(conda)} packages in {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve")
    s.add_argument("--channel", action="append", required=True)
    s.add_argument("--platform", default="linux-64")
    s.add_argument("--out", required=True)
    s.add_argument("specs", nargs="+")
    i = sub.add_parser("install")
    i.add_argument("lockfile")
    i.add_argument("target")
    v = sub.add_parser("verify")
    v.add_argument("lockfile")
    v.add_argument("target")
    args = parser.parse_args(argv)
    try:
        if args.command == "solve":
            asyncio.run(solve(args.channel, args.specs, args.platform, Path(args.out)))
        elif args.command == "verify":
            verify(Path(args.lockfile), Path(args.target))
        else:
            asyncio.run(install(Path(args.lockfile), Path(args.target)))
    except SystemExit:
        raise
    except Exception as exc:  # one clear line for the caller's error message
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
