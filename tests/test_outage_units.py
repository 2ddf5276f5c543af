"""Whose failure is it (fast): the classification of lock, build and download failures (pipeline/job/outage.py)
on the words uv and rattler really print, the worker's result for a failed environment build, and the lock cache
that keeps only the plugins' own failures. The end-to-end proof with a real index is tests/test_outages.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from envs.lock import EnvError, EnvOutage, EnvSpec, LockJail, lock_environment
from pipeline.job.outage import classify, key_line

# What uv 0.13 printed here for each case (uv pip compile --quiet; the index at a closed port, a name that does
# not resolve, a package the index does not have, a version it does not have, a git requirement whose setup.py
# exits with an error).
REFUSED = """error: Request failed after 3 retries in 7.8s
  cause: Failed to fetch: http://127.0.0.1:9/simple/tinydep/
  cause: error sending request for url (http://127.0.0.1:9/simple/tinydep/)
  cause: client error (Connect)
  cause: tcp connect error
  cause: Connection refused (os error 111)"""
DNS = """error: Request failed after 3 retries in 5.0s
  cause: Failed to fetch: http://nonexistent.invalid/simple/tinydep/
  cause: error sending request for url (http://nonexistent.invalid/simple/tinydep/)
  cause: client error (Connect)
  cause: dns error
  cause: error resolving DNS
  cause: failed to lookup address information: Name or service not known"""
TLS = """error: Request failed after 3 retries
  cause: Failed to fetch: https://127.0.0.1:8443/simple/tinydep/
  cause: error sending request for url (https://127.0.0.1:8443/simple/tinydep/)
  cause: client error (Connect)
  cause: invalid peer certificate: UnknownIssuer"""
NOT_FOUND = """error: No solution found when resolving dependencies
  cause: Because scorepluginsnonexistentpkg was not found in the package registry and you require
scorepluginsnonexistentpkg==1.0, we can conclude that your requirements are unsatisfiable."""
NO_VERSION = """error: No solution found when resolving dependencies
  cause: Because there is no version of six==99.0 and you require six==99.0, we can conclude that your
requirements are unsatisfiable."""
BUILD = """error: Failed to build `badpkg @ git+file:///tmp/uvx/badpkg`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta:__legacy__.get_requires_for_build_wheel` failed (exit status: 1)

         [stderr]
         setup exploded"""
DISK = "error: Failed to write to the client cache\n  cause: No space left on device (os error 28)"
TIMEOUT = "error: Failed to fetch: https://pypi.org/simple/numpy/\n  cause: operation timed out"
RATTLER_UNSOLVABLE = "SolverError: Cannot solve the request because of: No candidates were found for nosuchpkg *."
RATTLER_FETCH = "FetchRepoDataError: failed to fetch repodata: error sending request: Connection refused"


@pytest.mark.parametrize("text, returncode, kind", [
    (REFUSED, 2, "index unreachable"), (DNS, 2, "DNS failure"), (TLS, 2, "TLS error"), (DISK, 2, "disk full"),
    (TIMEOUT, 2, "timeout"), (RATTLER_FETCH, 1, "index unreachable"),
    ("", -9, "killed by signal 9"), (BUILD, 137, "killed by signal 9"),  # killed: whatever it printed
    ("error: something new and strange", 2, "unrecognised failure"),  # unknown: infrastructure, never blamed
    (NOT_FOUND, 1, None), (NO_VERSION, 1, None), (BUILD, 1, None), (RATTLER_UNSOLVABLE, 1, None),
    # a build script cannot print its way out of its own failure: the plugin's marker wins
    (BUILD + "\n         Connection refused (os error 111)", 1, None),
])
def test_failures_are_the_plugins_only_for_no_solution_or_their_own_build(text, returncode, kind):
    assert classify(text, returncode) == kind


def test_the_reason_names_the_deepest_cause():
    assert key_line(REFUSED) == "cause: Connection refused (os error 111)"
    assert key_line("one\n\ntwo\n") == "two"


def _worker_result(tmp_path: Path, log_text: str, status: int) -> dict:
    from pipeline.job.manifest import Manifest
    from pipeline.job.worker import env_failure_result

    log = tmp_path / "env-0.log"
    log.write_text("score-plugins: building environment /envs/x from /locks/x.txt\n" + log_text + "\n")
    pair = {"key": "k" * 32, "model": "m", "benchmark": "b", "model_plugin": "m", "benchmark_plugin": "b"}
    where = str(tmp_path)
    manifest = Manifest(run_id="r", commit="c" * 40, domain_root="d", executor="local", code_dir=where,
                        spool_dir=where, log_dir=where, worker=where, env_root=where, env_mode="cached",
                        env_backend="uv", state_dir=where, created_at="2026-01-01T00:00:00+00:00",
                        tasks=[{"index": 0, "pairs": [pair]}])
    return env_failure_result(manifest, pair, log, status)


@pytest.mark.parametrize("log_text, status, state, words", [
    (REFUSED, 2, "INFRA_FAIL", "infrastructure (index unreachable)"),
    (TLS, 2, "INFRA_FAIL", "infrastructure (TLS error)"),
    ("", 137, "INFRA_FAIL", "infrastructure (killed by signal 9)"),
    ("score-plugins: the sandbox cannot be set up: no bwrap", 3, "INFRA_FAIL", "infrastructure (sandbox unavailable)"),
    (BUILD, 1, "FAILED", "building the environment failed (exit 1)"),
    ("score-plugins: the build changed the environment's interpreter; refused", 1, "FAILED", "exit 1"),
])
def test_a_failed_environment_build_on_the_node_is_blamed_where_it_belongs(tmp_path, log_text, status, state, words):
    result = _worker_result(tmp_path, log_text, status)
    assert result["state"] == state and result["stage"] == "env_build" and words in result["reason"], result


def test_only_the_plugins_own_solve_failures_are_cached(tmp_path, monkeypatch):
    """A lock whose index is unreachable raises EnvOutage and leaves no `.failed` file; a set with no solution
    raises EnvError and is cached; an outage cached by an older version is not trusted (and removed)."""
    import socket

    from pipeline.config import _default_uv

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = sock.getsockname()[1]
    sock.close()
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"http://127.0.0.1:{closed}/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # the refusal at once, not after three retries
    locks = tmp_path / "locks"
    off = LockJail(mode="off")  # no sandbox needed to read uv's words (the jail is tested elsewhere)
    spec = EnvSpec(("tinydep==1.0",), "3.11")
    with pytest.raises(EnvOutage) as outage:
        lock_environment(spec, locks, _default_uv(), jail=off)
    assert str(outage.value).startswith(
        "infrastructure (index unreachable): locking the plugins' requirements failed: "), outage.value
    assert not list(locks.glob("*.failed"))
    # a failure file written by a version that cached outages: ignored and removed, the set solved again
    (locks / f"{spec.spec_hash}.failed").write_text(f"cannot solve the plugins' requirements: {TLS}\n")
    with pytest.raises(EnvOutage):
        lock_environment(spec, locks, _default_uv(), jail=off)
    assert not list(locks.glob("*.failed"))
    # the plugins' own: cached, and the cache is what the next run reads
    no_solution = EnvSpec(("tinydep==1.0",), "3.11", backend="uv")
    failed = locks / f"{no_solution.spec_hash}.failed"
    failed.write_text(f"cannot solve the plugins' requirements: {NO_VERSION}\n")
    os.utime(failed, (time.time(), time.time()))
    with pytest.raises(EnvError) as cached:
        lock_environment(no_solution, locks, _default_uv(), jail=off)
    assert not isinstance(cached.value, EnvOutage) and "solve failed 0 min ago" in str(cached.value)


SDIST_BACKEND = '''"""An in-tree PEP 517 backend (nothing to download): a wheel of one module; an error when BROKEN."""
import base64, hashlib, os, zipfile

NAME, VERSION, BROKEN = {name!r}, "0.1", {broken!r}
META = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(directory, config_settings=None):
    if BROKEN:
        raise SystemExit("this build script fails on purpose")
    info = os.path.join(directory, f"{{NAME}}-{{VERSION}}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(META)
    return os.path.basename(info)


def build_wheel(directory, config_settings=None, metadata_directory=None):
    wheel = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    files = {{f"{{NAME}}.py": b"VALUE = 1\\n", f"{{NAME}}-{{VERSION}}.dist-info/METADATA": META.encode(),
             f"{{NAME}}-{{VERSION}}.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = "".join(f"{{p}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()}},"
                     f"{{len(d)}}\\n" for p, d in files.items())
    with zipfile.ZipFile(os.path.join(directory, wheel), "w") as w:
        for p, d in files.items():
            w.writestr(p, d)
        w.writestr(f"{{NAME}}-{{VERSION}}.dist-info/RECORD", record + f"{{NAME}}-{{VERSION}}.dist-info/RECORD,,\\n")
    return wheel
'''


def sdist_index(root: Path) -> Path:
    """A PEP 503 folder index (file://) of two packages published as sdists only, each built by an in-tree backend:
    `tinysdist` builds, `brokensdist`'s build script fails."""
    import tarfile

    for name, broken in (("tinysdist", False), ("brokensdist", True)):
        src = root / "src" / f"{name}-0.1"
        src.mkdir(parents=True)
        (src / "pyproject.toml").write_text(f'[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                            f'backend-path = ["."]\n\n[project]\nname = "{name}"\nversion = "0.1"\n'
                                            'dynamic = ["dependencies"]\n')  # so uv must run the build
        (src / "backend.py").write_text(SDIST_BACKEND.format(name=name, broken=broken))
        folder = root / "simple" / name
        folder.mkdir(parents=True)
        with tarfile.open(folder / f"{name}-0.1.tar.gz", "w:gz") as tar:
            tar.add(src, arcname=src.name)
        (folder / "index.html").write_text(f'<html><body><a href="{name}-0.1.tar.gz">{name}-0.1.tar.gz</a>'
                                           '</body></html>\n')
    return root / "simple"


def test_a_failed_solve_without_builds_is_never_judged_the_solve_with_builds_is(tmp_path, monkeypatch):
    """Locks solve with `--no-build` first (issue 35: nothing but uv runs, so its downloads may join the shared
    cache). For a package published only as an sdist that solve says "No solution found", which alone would read
    as the plugins' failure (cached for an hour, mailed): it is not judged, the solve with builds runs and its
    result is the answer. A set that solves once built is locked, nothing cached as failed; a build script that
    fails is the plugins' failure, with its own words, cached. Real uv in the real sandbox; the index is a
    folder (file://), bound read-only."""
    from pipeline.config import _default_uv

    index = sdist_index(tmp_path / "index")
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"file://{index}")
    jail = LockJail(extra_ro=(str(tmp_path / "index"),))
    locks = tmp_path / "locks"
    built = lock_environment(EnvSpec(("tinysdist",), "3.11"), locks, _default_uv(), jail=jail)
    assert built.packages == ("tinysdist==0.1",)
    assert not list(locks.glob("*.failed"))
    broken = EnvSpec(("brokensdist",), "3.11")
    with pytest.raises(EnvError) as failed:
        lock_environment(broken, locks, _default_uv(), jail=jail)
    assert not isinstance(failed.value, EnvOutage), failed.value
    assert "this build script fails on purpose" in str(failed.value) or "build backend" in str(failed.value), \
        failed.value
    assert "--no-build" not in str(failed.value) and "without builds" not in str(failed.value), failed.value
    assert (locks / f"{broken.spec_hash}.failed").exists()
