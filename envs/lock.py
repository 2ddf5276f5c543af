"""Lock a plugin set's declared requirements, and hash the solution, not the inputs.

Two plugin sets that declare different ranges but solve to the same packages share
one environment: the environment key is a hash of the SOLVED package list (plus the
interpreter and backend), never of the declared inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from pipeline.atomic import write_atomically
from pipeline.errors import InfrastructureError
from pipeline.job.outage import classify, outage_kind


class EnvError(Exception):
    """An environment cannot be locked or built because of the plugins (no solution, their own build failed, a
    requirement we refuse); `stage` is recorded with the failure. Cached, and told to the submitter."""

    stage = "env_build"
    infrastructure = False


class EnvOutage(EnvError):
    """An environment cannot be locked or built for a reason that is not the plugins' (pipeline.job.outage: an
    unreachable index, TLS, DNS, a timeout, a full disk, a killed solver, an error we do not recognise): never
    cached, never mailed to a submitter; the run exits 3 and the next build tries again."""

    infrastructure = True


def failure(doing: str, what: str, detail: str, text: str, returncode: int | None = None) -> EnvError:
    """The error for a solver that failed `doing` `what` with `text` (`detail`: the lines the reason keeps): the
    plugins' (EnvError, "cannot solve ...") or an outage (EnvOutage, "infrastructure (<kind>): ... failed")."""
    kind = classify(text, returncode)
    if kind is None:
        return EnvError(f"cannot solve {what}: {detail}")
    return EnvOutage(f"infrastructure ({kind}): {doing} {what} failed: {detail}")


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


FAILURE_TTL = 3600.0  # a set the resolver found no solution for is not tried again for this long (outages never cached)


FAILED_SOLVES = ("use", "plan", "retry")
PLUGINS_FAILURE = "# the plugins' failure"  # first line of a cached failure (one without it is an older version's)


@dataclass(frozen=True)
class LockJail:
    """How `uv pip compile` is confined: it runs the build backends of git and sdist requirements, i.e. submitter
    code. `bwrap` (the default; `auto` is the same): inside the sandbox as an unprivileged user, network `network`, with a
    clean environment and only a scratch folder and the lock cache writable; `off`: unconfined (an explicit setting).
    `extra_ro`: node paths the build may read (sandbox_extra_paths)."""

    mode: str = "bwrap"
    extra_ro: tuple[str, ...] = ()
    network: str = "on"  # on: the index and git hosts through slirp4netns, never the node; host: the node's own


def lock_environment(spec: EnvSpec, locks_dir: Path, uv: str, timeout: int = 600,
                     failure_ttl: float = FAILURE_TTL, jail: LockJail = LockJail(),
                     failed_solves: str = "use") -> Lock:
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
            text = cached.read_text().strip()
            if text.startswith(PLUGINS_FAILURE):
                text = text[len(PLUGINS_FAILURE):].strip()
            elif classify(text) is not None:  # an outage cached by an older version: never the plugins' failure
                cached.unlink(missing_ok=True)
                continue
            if age < failure_ttl:
                raise EnvError(f"{text} (solve failed {int(age // 60)} min ago and is "
                               f"not tried again for {int((failure_ttl - age) // 60) + 1} min; "
                               "--retry-failed-solves or `rerun --failed` tries now)")
        except OSError:
            pass
    try:
        try:
            return _solve(spec, path, uv, timeout, jail)
        except OSError as exc:  # the lock's own files (a full disk, a read-only folder): not the plugins'
            raise EnvOutage(f"infrastructure ({outage_kind(str(exc))}): locking the plugins' requirements "
                            f"failed: {exc.strerror or exc}") from None
    except EnvError as exc:
        if not exc.infrastructure:  # only the plugins' own failures are cached: an outage is tried again next time
            try:
                mine.write_text(PLUGINS_FAILURE + "\n" + str(exc)[:4000] + "\n")
            except OSError:
                pass
        raise


def _solve(spec: EnvSpec, path: Path, uv: str, timeout: int, jail: LockJail = LockJail()) -> Lock:
    if spec.backend != "uv":
        raise EnvError(f"environment backend {spec.backend!r} cannot lock pip requirements")
    text = compile_requirements(spec.requirements, uv, ["--python-version", spec.python_version],
                                output="requirements.txt", cache=lock_cache(path.parent), jail=jail,
                                timeout=timeout, what="the plugins' requirements", step="locking")
    write_atomically(path, text)  # another coordinator may be writing the same solution right now
    return lock_from_file(spec, path)


def lock_cache(locks_dir: Path) -> Path:
    """uv's shared cache of the locks: written only by this (trusted) process, from solves that ran no build script;
    every solve sees it through a layer of its own (pipeline/job/cachelayer.py). `.sandbox-uv-cache`, the folder
    every solve could write before, is never read again."""
    return locks_dir / ".uv-cache"


def _needs_a_build(requirements: tuple[str, ...] | list[str]) -> bool:
    """A URL requirement (`name @ git+https://...`) is always built: a solve without builds cannot succeed."""
    for line in requirements:
        try:
            if Requirement(line).url:
                return True
        except InvalidRequirement:
            return True
    return False


def compile_requirements(requirements: tuple[str, ...] | list[str], uv: str, options: list[str], *, output: str,
                         cache: Path, jail: LockJail, timeout: int, what: str, step: str) -> str:
    """What `uv pip compile --generate-hashes OPTIONS` wrote for `requirements`, run confined by `jail` (it runs
    the build backends of git and sdist requirements: submitter code). Every lock on the coordinator goes through
    here: the uv backend's and the pip layer of a conda lock (envs/piplayer.py).

    Confined, wheels are preferred, as pip's `--prefer-binary`: first a solve with `--no-build`, which runs no
    submitter code, so what uv fetched (index pages, metadata) is merged into the shared `cache` afterwards; only
    when that fails (an sdist or a git requirement must be built, or the set does not solve) a solve with builds,
    whose writes to the cache land in a layer of its own that is thrown away. No build script ever writes a file
    another solve reads."""
    with tempfile.TemporaryDirectory(prefix="lock-") as tmp:
        infile = Path(tmp) / "requirements.in"
        infile.write_text("\n".join(requirements) + "\n")
        outfile = Path(tmp) / output
        cmd = [uv, "pip", "compile", "--quiet", "--generate-hashes", "--no-header", *options,
               "-o", str(outfile), str(infile)]
        if jail.mode == "off":
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
            env["UV_PYTHON_DOWNLOADS"] = "never"
            return _run_solver(cmd, env, (), None, tmp, timeout, what, step, outfile)
        if not _needs_a_build(requirements):
            try:
                return _confined(cmd + ["--no-build"], tmp, cache, jail, timeout, what, step, outfile, trusted=True)
            except NoBuildFailed:
                pass  # something must be built (or nothing solves, or the index failed): the solve with builds says
                # which, and only its failure is classified (the plugins' is cached, an outage never)
        return _confined(cmd, tmp, cache, jail, timeout, what, step, outfile, trusted=False)


def _confined(cmd: list[str], tmp: str, cache: Path, jail: LockJail, timeout: int, what: str, step: str,
              outfile: Path, *, trusted: bool) -> str:
    """One solve in the sandbox as an unprivileged user: the scratch folder writable, the shared cache seen
    through a layer of its own, merged back only when `trusted` (no build could run) and the solver ended. A
    `trusted` solve that exits non-zero raises NoBuildFailed, unjudged: the solve with builds comes next."""
    from pipeline.job import sandbox as sb
    from pipeline.job.cachelayer import CacheLayer

    uv = os.path.realpath(cmd[0])
    fds: tuple[int, ...] = ()
    try:
        os.chmod(tmp, 0o755)
        if not os.path.lexists(os.path.join(tmp, ".gitconfig")):
            sb.write_gitconfig(tmp)
        sb.give(tmp, sb.NOBODY)
        with CacheLayer(str(cache), uid=sb.NOBODY, trusted=trusted) as layer:
            python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
            view = sb.View(ro=[uv], rw=[tmp], rw_at=[(layer.path, layer.shared)], cwd=tmp, network=jail.network)
            sb.python_view(python, view)
            argv, fds, _how = sb.command(view, [uv, *cmd[1:], "--python", python], extra_ro=jail.extra_ro)
            env = sb.clean_env(tmp, {"UV_CACHE_DIR": layer.shared, "UV_PYTHON_DOWNLOADS": "never",
                                     "UV_NO_CONFIG": "1"})
            preexec = sb.Limits(processes=4096 if sb.running_as_root() else None, file_bytes=4 << 30).preexec()
            ended = True  # the solver ended by itself: a solver killed mid-write leaves its layer unmerged
            try:
                return _run_solver(argv, env, fds, preexec, tmp, timeout, what, step, outfile, judged=not trusted)
            except SolveTimeout:
                ended = False
                raise
            finally:
                if trusted and ended:
                    layer.merge()
    except sb.SandboxUnavailable as exc:
        raise InfrastructureError(f"locking runs build scripts of plugin requirements, and the sandbox "
                                  f"cannot be set up: {exc}; nothing was run") from None
    except OSError as exc:
        raise InfrastructureError(f"the lock cache {cache} cannot be used: {exc}") from None


class SolveTimeout(EnvOutage):
    """The solver ran past its time and was killed: infrastructure, never the plugins' (pipeline.job.outage)."""


class NoBuildFailed(EnvError):
    """The solve without builds ended non-zero: not judged (an sdist to build reads as "no solution" there)."""


def _run_solver(argv: list[str], env: dict[str, str], fds: tuple[int, ...], preexec, tmp: str,  # noqa: ANN001
                timeout: int, what: str, step: str, outfile: Path, judged: bool = True) -> str:
    """Run one solve; its failure classified (the plugins' EnvError or an EnvOutage) unless not `judged`."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, pass_fds=fds,
                              preexec_fn=preexec, cwd=tmp)
    except subprocess.TimeoutExpired as exc:
        raise SolveTimeout(f"infrastructure (timeout): {step} {what} timed out after {timeout} s") from exc
    except FileNotFoundError as exc:
        raise EnvOutage(f"infrastructure (no solver): uv not found at {argv[0]}") from exc
    except OSError as exc:  # e.g. a full disk while the lock's scratch files were written
        raise EnvOutage(f"infrastructure ({outage_kind(str(exc))}): {step} {what} could not start: {exc}") from exc
    finally:
        for fd in fds:
            os.close(fd)
    if proc.returncode != 0:
        message = [line for line in proc.stderr.strip().splitlines() if not line.startswith("score-plugins:")]
        if not judged:
            raise NoBuildFailed(f"cannot solve {what} without builds: " + " ".join(message[-6:]))
        raise failure(step, what, " ".join(message[-6:]), proc.stderr, proc.returncode)
    return _read_own_file(outfile)


def _read_own_file(path: Path, cap: int = 50 << 20) -> str:
    """The lockfile the sandboxed solver wrote, never through a link it could have planted instead."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise EnvError(f"the solver wrote no lockfile ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise EnvError("the solver's lockfile is not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise EnvError("the solver's lockfile is too large")
    return data.decode("utf-8", "replace")
