"""Lock a plugin set's declared requirements, and hash the solution, not the inputs.

Two plugin sets that declare different ranges but solve to the same packages share
one environment: the environment key is a hash of the SOLVED package list (plus the
interpreter and backend), never of the declared inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement


class EnvError(Exception):
    """An environment cannot be locked or built; `stage` is recorded with the failure."""

    stage = "env_build"


@dataclass(frozen=True)
class EnvSpec:
    """What a set of plugins asks for: PEP 508 requirements and a Python version."""

    requirements: tuple[str, ...]
    python_version: str
    backend: str = "uv"

    @property
    def spec_hash(self) -> str:
        text = "\n".join([self.backend, self.python_version, *sorted(self.requirements)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Lock:
    """A solved environment: the lockfile on disk and the hashes that identify it."""

    spec: EnvSpec
    path: Path
    packages: tuple[str, ...]  # "name==version", sorted
    lock_hash: str  # the lockfile's content (with its artifact hashes)
    env_hash: str  # the solved package list + interpreter + backend: the environment's identity
    kind: str = "pip"


DEFAULT_URL_SCHEMES = ("git+https",)


def validate_requirements(requirements: list[str] | tuple[str, ...],
                          url_schemes: tuple[str, ...] | list[str] = DEFAULT_URL_SCHEMES) -> tuple[str, ...]:
    """PEP 508 requirements from the index, or from a VCS URL whose scheme is allowed (`git+https` by
    default; the lock pins the commit it resolved to). Pip options, local paths and other URLs are refused."""
    clean = []
    for line in requirements:
        if line.startswith("-"):
            raise EnvError(f"requirement {line!r}: pip options are not allowed in plugin requirements")
        if line.startswith((".", "/", "~")) or line.startswith("file:"):
            raise EnvError(f"requirement {line!r}: local paths are not allowed in plugin requirements")
        if re.match(r"^[a-z][a-z0-9+.-]*://", line):  # a bare URL: `git+https://host/repo@rev#egg=name`
            egg = re.search(r"#egg=([A-Za-z0-9._-]+)", line)
            if not egg:
                raise EnvError(f"requirement {line!r}: a URL needs a name (write `name @ {line}`)")
            line = f"{egg.group(1)} @ {line.split('#', 1)[0]}"
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise EnvError(f"requirement {line!r} is not valid: {exc}") from exc
        if req.url:
            scheme = req.url.split("://", 1)[0].lower() if "://" in req.url else ""
            if scheme not in url_schemes:
                allowed = ", ".join(f"{s}://" for s in url_schemes) or "none"
                raise EnvError(f"requirement {line!r}: URL scheme {scheme or req.url!r} is not allowed "
                               f"(allowed: {allowed}; local paths never are)")
        clean.append(str(req))
    return tuple(sorted(set(clean)))


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
URL_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*@\s*(\S+)")


def solved_packages(lock_text: str) -> tuple[str, ...]:
    """`name==version` lines of a uv/pip-compile lockfile, normalised and sorted."""
    found = []
    for line in lock_text.splitlines():
        match = PIN.match(line.strip())
        if match:
            found.append(f"{match.group(1).lower().replace('_', '-')}=={match.group(2)}")
            continue
        match = URL_PIN.match(line.strip())  # `name @ git+https://host/repo@<commit>`: the lock pins the commit
        if match:
            found.append(f"{match.group(1).lower().replace('_', '-')} @ {match.group(2)}")
    return tuple(sorted(found))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def lock_from_file(spec: EnvSpec, path: Path) -> Lock:
    text = path.read_text()
    packages = solved_packages(text)
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return Lock(spec, path, packages, _digest(body), _digest(spec.backend, spec.python_version, *packages))


FAILURE_TTL = 3600.0  # a set that did not solve is not tried again for this long (it may be a network outage)


FAILED_SOLVES = ("use", "plan", "retry")


def lock_environment(spec: EnvSpec, locks_dir: Path, uv: str, timeout: int = 600,
                     failure_ttl: float = FAILURE_TTL, failed_solves: str = "use") -> Lock:
    """Solve `spec` with `uv pip compile --generate-hashes`, cached by the spec's hash (failures too, for
    `failure_ttl` seconds: a real repository has dozens of sets that do not solve, and each costs a solve).

    `failed_solves`: "use" (a run) trusts failures a run cached; "plan" (`plan`, `--dry-run`) also trusts its
    own and caches its failures apart, so a plan never makes the first real run report a cached failure;
    "retry" (`--retry-failed-solves`, `rerun --failed`) solves again whatever was cached."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = locks_dir / f"{spec.spec_hash}.txt"
    if path.exists():
        return lock_from_file(spec, path)
    failed = locks_dir / f"{spec.spec_hash}.failed"
    mine = locks_dir / f"{spec.spec_hash}.plan-failed" if failed_solves == "plan" else failed
    trusted = {"use": [failed], "plan": [failed, mine], "retry": []}[failed_solves]
    for cached in trusted:
        try:
            age = time.time() - cached.stat().st_mtime
            if age < failure_ttl:
                raise EnvError(f"{cached.read_text().strip()} (solve failed {int(age // 60)} min ago and is "
                               f"not tried again for {int((failure_ttl - age) // 60) + 1} min; "
                               "--retry-failed-solves or `rerun --failed` tries now)")
        except OSError:
            pass
    try:
        return _solve(spec, path, uv, timeout)
    except EnvError as exc:
        try:
            mine.write_text(str(exc)[:4000] + "\n")
        except OSError:
            pass
        raise


def _solve(spec: EnvSpec, path: Path, uv: str, timeout: int) -> Lock:
    if spec.backend != "uv":
        raise EnvError(f"environment backend {spec.backend!r} cannot lock pip requirements")
    with tempfile.TemporaryDirectory() as tmp:
        infile = Path(tmp) / "requirements.in"
        infile.write_text("\n".join(spec.requirements) + "\n")
        outfile = Path(tmp) / "requirements.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
        env["UV_PYTHON_DOWNLOADS"] = "never"
        cmd = [uv, "pip", "compile", "--quiet", "--generate-hashes", "--no-header", "--python-version",
               spec.python_version, "-o", str(outfile), str(infile)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise EnvError(f"locking timed out after {timeout} s") from exc
        except FileNotFoundError as exc:
            raise EnvError(f"uv not found at {uv}") from exc
        if proc.returncode != 0:
            message = proc.stderr.strip().splitlines()
            raise EnvError("cannot solve the plugins' requirements: " + " ".join(message[-6:]))
        tmp_final = path.with_suffix(".tmp")
        tmp_final.write_text(outfile.read_text())
        os.replace(tmp_final, path)
    return lock_from_file(spec, path)
