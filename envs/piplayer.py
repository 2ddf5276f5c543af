"""The pip layer of a conda environment, locked into the same conda-lock file as `manager: pip` entries.

`uv pip compile --format pylock.toml --generate-hashes` solves the pip requirements for the interpreter the
conda part locked (`--python-version`) on the nodes' platform (`--python-platform`); each package becomes one
conda-lock pip entry: the wheel the node will install (or the sdist when there is no wheel), with its sha256,
or a VCS requirement pinned to the commit it resolved to (conda-lock's `source: {type: url}`, no hash).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from envs.lock import EnvError, LockJail, compile_requirements

# The nodes' wheel platform: glibc 2.28 (RHEL 8 and newer), x86_64 -- the `linux-64` conda subdir.
PIP_PLATFORM = "x86_64-manylinux_2_28"
MANYLINUX = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def _tag_rank(python_version: str) -> dict[Tag, int]:
    version = tuple(int(part) for part in python_version.split(".")[:2])
    tags = [*cpython_tags(version, platforms=MANYLINUX), *compatible_tags(version, platforms=MANYLINUX)]
    return {tag: index for index, tag in enumerate(tags)}


def compile_pip_layer(requirements: tuple[str, ...] | list[str], python_version: str, uv: str, *, cache: Path,
                      jail: LockJail = LockJail(), platform: str = "linux-64", timeout: int = 600) -> list[dict]:
    """conda-lock `manager: pip` entries for `requirements`, solved for `python_version` on linux x86_64, by
    `uv pip compile` in the same jail as the uv backend's locks (envs/lock.py: it runs build backends)."""
    text = compile_requirements(requirements, uv, ["--format", "pylock.toml", "--python-version", python_version,
                                                   "--python-platform", PIP_PLATFORM],
                                output="pylock.toml", cache=cache, jail=jail, timeout=timeout,
                                what=f"the plugins' pip requirements for python {python_version}",
                                step="locking the pip layer of")
    try:
        pylock = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EnvError(f"the pip layer's solver wrote no valid pylock.toml ({exc})") from None
    rank = _tag_rank(python_version)
    return [_entry(package, rank, platform) for package in pylock.get("packages", [])]


def _entry(package: dict, rank: dict[Tag, int], platform: str) -> dict:
    name, version = package["name"], str(package.get("version", ""))
    entry = {"name": name, "version": version, "manager": "pip", "platform": platform, "dependencies": {}}
    vcs = package.get("vcs")
    if vcs:  # pinned to the commit the lock resolved; pip cannot hash a VCS checkout
        url = vcs["url"] if vcs["url"].startswith("git+") else f"git+{vcs['url']}"
        url = f"{url}@{vcs['commit-id']}"
        if vcs.get("subdirectory"):
            url += f"#subdirectory={vcs['subdirectory']}"
        entry.update({"version": version or vcs["commit-id"][:12], "url": url, "hash": {},
                      "source": {"type": "url", "url": url}})
    else:
        artifact = _best_wheel(package.get("wheels") or [], rank) or package.get("sdist") or package.get("archive")
        sha256 = (artifact or {}).get("hashes", {}).get("sha256") if artifact else None
        if not artifact or not artifact.get("url") or not sha256:
            raise EnvError(f"pip package {name} {version} has no wheel or sdist with a sha256 for {PIP_PLATFORM}")
        entry.update({"url": artifact["url"], "hash": {"sha256": sha256}})
    entry.update({"category": "main", "optional": False})
    return entry


def _best_wheel(wheels: list[dict], rank: dict[Tag, int]) -> dict | None:
    best, best_rank = None, len(rank)
    for wheel in wheels:
        filename = wheel.get("name") or wheel.get("url", "").rsplit("/", 1)[-1]
        try:
            tags = parse_wheel_filename(filename)[3]
        except ValueError:
            continue
        found = min((rank[tag] for tag in tags if tag in rank), default=len(rank))
        if found < best_rank:
            best, best_rank = wheel, found
    return best

