"""The coordinator's side of the sandbox: refuse before anything is claimed when untrusted code could not be
confined, and tell the lock step how to confine the solver (pipeline/job/sandbox.py builds the sandbox itself)."""

from __future__ import annotations

from envs.lock import LockJail
from pipeline.job import sandbox as sb
from pipeline.config import Settings
from pipeline.errors import BadInput, InfrastructureError


def lock_jail(settings: Settings) -> LockJail:
    return LockJail(mode=settings.sandbox, extra_ro=tuple(settings.sandbox_extra_paths),
                    network=build_network(settings))


def build_network(settings: Settings) -> str:
    """The network of locks and environment builds: they need the index and git hosts, so `off` does not apply
    to them; the outside through slirp4netns, unless the administrator chose the node's own (`host`)."""
    return "host" if settings.sandbox_network == "host" else "on"


def require_sandbox(settings: Settings) -> str:
    """Set the sandbox up for real here (bwrap with the scoring flags, `true` inside) unless `sandbox = "off"`;
    its description, or InfrastructureError (exit 3) with the one line saying what is missing."""
    if settings.sandbox == "off":
        return "sandbox=off"
    try:
        how = sb.probe(settings.sandbox_network)
        if build_network(settings) != settings.sandbox_network:
            sb.probe(build_network(settings))  # locks and builds reach the index through the outside
        return how
    except sb.SandboxUnavailable as exc:
        raise InfrastructureError(f"{exc}. Nothing was claimed or run (or set sandbox = \"off\" to run plugins "
                                  "unconfined, never on prod)") from None


def refuse_unconfined_prod(profile: str, settings: Settings) -> None:
    if profile == "prod" and settings.sandbox == "off":
        raise BadInput("the prod profile refuses sandbox = \"off\": untrusted code runs only in the sandbox there")


def require_memory_bound(settings: Settings, executor: str) -> str | None:
    """How the local executor will bound each pair's memory, checked for real before anything is claimed: a
    memory cgroup below this process's own (`local_memory = "cgroup"`, the default), or RLIMIT_DATA alone
    (`local_memory = "rlimit"`, an explicit choice, said once here and recorded on the run). Where no cgroup can
    be made nothing untrusted runs: InfrastructureError (exit 3) with the one line that says why, unless the
    sandbox is off (then nothing is confined anyway: RLIMIT_DATA only, said and recorded the same way). None
    for the other executors: Slurm bounds its tasks itself."""
    from pipeline.job import memcg

    if executor != "local":
        return None
    if settings.local_memory == "rlimit":
        _say_once("memory of each pair is bounded by RLIMIT_DATA only (local_memory = \"rlimit\"): shared memory, "
                  "memfd and page cache are not bounded")
        return "rlimit"
    try:
        return memcg.probe()
    except memcg.CgroupUnavailable as exc:
        if settings.sandbox == "off":
            _say_once(f"no memory cgroup can be made here ({exc}); with the sandbox off, pairs run with RLIMIT_DATA "
                      "only")
            return "rlimit (no cgroup)"
        raise InfrastructureError(f"no memory cgroup can be made here: {exc}. Nothing was claimed or run (or set "
                                  "local_memory = \"rlimit\" to bound each pair by RLIMIT_DATA only, named in "
                                  "every record)") from None


def _say_once(line: str) -> None:
    import sys

    print(f"score-plugins: warning: {line}", file=sys.stderr, flush=True)
