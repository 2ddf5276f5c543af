"""Environments: lock by solution, build once under flock, never use a half-built one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from envs.lock import EnvError, EnvSpec, lock_environment, solved_packages, validate_requirements
from jobscripts import render_env_builder
from pipeline.config import load_settings

SETTINGS = load_settings(environ={})


def write_builder(path: Path, **kw: object) -> Path:
    """A builder as a bundle holds it: the script, and the sandbox module it runs the build in beside it."""
    path.write_text(render_env_builder(backend="uv", **{"uv": SETTINGS.uv, "python": SETTINGS.python, **kw}))
    shutil.copytree(Path(__file__).resolve().parents[1] / "pipeline" / "job", path.with_name("job"), dirs_exist_ok=True)
    return path


@pytest.fixture
def builder(tmp_path) -> Path:
    return write_builder(tmp_path / "build_env.sh")


@pytest.fixture(scope="module")
def small_lock(tmp_path_factory):
    return lock_environment(EnvSpec(("six==1.16.0",), "3.11"), tmp_path_factory.mktemp("locks"), SETTINGS.uv)


def build(builder: Path, target: Path, lockfile: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(builder), str(target), str(lockfile)], capture_output=True, text=True, **kw)


def test_environment_key_is_the_solution_not_the_inputs(tmp_path):
    a = lock_environment(EnvSpec(("six>=1.0",), "3.11"), tmp_path, SETTINGS.uv)
    b = lock_environment(EnvSpec(("six",), "3.11"), tmp_path, SETTINGS.uv)
    assert a.spec.spec_hash != b.spec.spec_hash  # different declarations...
    assert a.env_hash == b.env_hash and a.packages == b.packages  # ...same solved environment
    assert solved_packages("six==1.16.0 \\\n    --hash=sha256:abc\nNumPy==2.0 ; python_version>'3'\n") == (
        "numpy==2.0", "six==1.16.0")


@pytest.mark.parametrize("bad", ["-e .", "--index-url http://evil/", "pkg @ https://example.org/x.whl", "not a req!"])
def test_requirement_lines_that_are_not_plain_pep508_are_refused(bad):
    with pytest.raises(EnvError):
        validate_requirements([bad])


def test_unsolvable_requirements_are_a_clear_error(tmp_path):
    with pytest.raises(EnvError, match="cannot solve"):
        lock_environment(EnvSpec(("six<1.0", "six>1.0"), "3.11"), tmp_path, SETTINGS.uv)
    with pytest.raises(EnvError, match="cannot solve"):
        lock_environment(EnvSpec(("no-such-package-score-plugins-test==1.0",), "3.11"), tmp_path, SETTINGS.uv)


def test_build_once_reuse_and_rebuild_after_a_killed_build(small_lock, tmp_path):
    target = tmp_path / "envs" / small_lock.env_hash
    # killed half-way, for certain: a uv that creates the venv for real, then stops inside `pip sync` (its
    # readiness file says so) until it is killed; the kill hits a build that has not finished
    # (the build runs in the sandbox: the readiness file goes into the environment, the one folder it may write)
    ready = target / ".inside-pip-sync"
    stalling_uv = tmp_path / "uv-that-stalls"
    stalling_uv.write_text(f"#!/bin/sh\nif [ \"$1\" = pip ]; then touch {ready}; exec sleep 600; fi\n"
                           f"exec {os.path.realpath(SETTINGS.uv)} \"$@\"\n")
    stalling_uv.chmod(0o755)
    stalling = write_builder(tmp_path / "build_env_stalling.sh", uv=str(stalling_uv),
                             extra_ro=(os.path.realpath(SETTINGS.uv),))
    proc = subprocess.Popen(["bash", str(stalling), str(target), str(small_lock.path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists() and proc.poll() is None, "the build never reached pip sync"
    assert (target / "pyvenv.cfg").exists()  # half-built: a venv without its packages
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (target / ".score-plugins-complete").exists()
    builder = write_builder(tmp_path / "build_env.sh")
    first = build(builder, target, small_lock.path)
    assert first.returncode == 0 and "building environment" in first.stdout, first.stderr  # not "reusing"
    assert (target / ".score-plugins-complete").exists()
    check = subprocess.run([str(target / "bin/python"), "-c", "import six; print(six.__version__)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "1.16.0"
    again = build(builder, target, small_lock.path)
    assert again.returncode == 0 and "reusing environment" in again.stdout


def test_concurrent_jobs_wait_for_one_build(builder, small_lock, tmp_path):
    target = tmp_path / "envs" / "shared"
    procs = [subprocess.Popen(["bash", str(builder), str(target), str(small_lock.path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum("building environment" in o for o in outputs) == 1
    assert sum("built by another job" in o or "reusing" in o for o in outputs) == 2


def test_corrupt_lockfile_fails_the_env_build_stage(builder, tmp_path, workspace, example_repo):
    corrupt = tmp_path / "corrupt.txt"
    corrupt.write_text("this is not==a lockfile\n\x00\x01 garbage --hash=nothing\n")
    result = build(builder, tmp_path / "envs" / "bad", corrupt)
    assert result.returncode != 0
    assert not (tmp_path / "envs" / "bad" / ".score-plugins-complete").exists()

    # through the pipeline: the lock cache corrupted after planning -> every pair fails at env_build, with the log;
    # the lock cache is ours, not the plugins': an infrastructure failure (b34-outage), exit 3, nothing blamed
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(tmp_path / "fresh-envs")
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "logreg",
                          "--benchmarks", "iris-accuracy")
    assert plan["counts"]["to_run"] == 1
    for lock in (workspace.state / "locks").glob("*.txt"):
        lock.write_text(lock.read_text().replace("--hash=sha256:", "--hash=sha256:0"))
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg",
                            "--benchmarks", "iris-accuracy", expect=3)
    [pair] = result["pairs"]
    assert pair["state"] == "INFRA_FAIL" and pair["stage"] == "env_build", pair
    assert pair["reason"].startswith("infrastructure (") and "Invalid hash digest" in pair["reason"], pair
    status = workspace.json("status")
    assert status["jobs"][0]["stage"] == "env_build"


def test_fresh_mode_builds_in_the_job_and_removes_it(workspace, example_repo, tmp_path):
    workspace.env["SCORE_PLUGINS_ENV_MODE"] = "fresh"
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(tmp_path / "never-used")
    workspace.env["TMPDIR"] = str(tmp_path)
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg",
                            "--benchmarks", "wine-accuracy")
    assert result["states"] == {"COMPLETED": 1}
    assert not (tmp_path / "never-used").exists()
    assert not list(tmp_path.glob("score-plugins-env-*"))  # the job cleaned up its environment


def test_coordinators_solving_the_same_set_at_once_all_get_the_lock(tmp_path):
    """Two coordinators started on the same change solve the same set at the same moment: each writes the
    solution beside the cache under a name of its own and moves it into place, so none finds the other's
    half-moved file (CI, 2026-12: "locking the plugins' requirements failed: No such file or directory", an
    INFRA_FAIL of every pair of one of the two runs)."""
    from concurrent.futures import ThreadPoolExecutor

    for round_ in range(6):
        locks = tmp_path / f"locks-{round_}"
        spec = EnvSpec(("six==1.16.0",), "3.11")
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda _: lock_environment(spec, locks, SETTINGS.uv), range(16)))
        assert {lock.env_hash for lock in got} == {got[0].env_hash} and got[0].packages == ("six==1.16.0",)
        assert sorted(p.name for p in locks.iterdir() if not p.name.startswith(".")) == [f"{spec.spec_hash}.txt"]
