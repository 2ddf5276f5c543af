"""Submitter code outside scoring runs in the same sandbox: build scripts of requirements when locking (on the
coordinator) and when building the environment (in the job), and the plugins' own tests (`test-plugins`).

Run as root, as CI runs. A hostile package (a real git repository, required as `git+file`) whose setup.py tries
to read the coordinator's secrets file, its home, its environment and state database, a world-readable file
outside the sandbox's view (what a sandbox that only dropped root would show), to write into the state
folder and to plant a `.pth` in every environment it can reach; any success makes its build fail with LEAKED.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.conftest import commit_all, write

PROBES = r'''
import glob, os, pathlib, sys
leaks = []
def probe(name, action):
    try:
        out = action()
    except Exception:
        return
    if out:
        leaks.append(f"{name}: {str(out)[:60]}")
probe("secrets file", lambda: open(SECRETS).read())
probe("world-readable file", lambda: open(WORLD_SECRET).read())  # any user of the host may read it
probe("coordinator home", lambda: open(HOME_SECRET).read())
probe("coordinator environment", lambda: [k for k, v in os.environ.items() if k.startswith("SCORE_PLUGINS")
                                          or "Pa55" in v or v == HOME_DIR])
probe("root", lambda: os.getuid() == 0 and "uid 0")
probe("state database", lambda: open(os.path.join(STATE, "local.db"), "rb").read(16))
probe("write state folder", lambda: pathlib.Path(STATE, "planted-by-submitter").write_text("x") or "wrote")
for site in glob.glob(ENV_ROOT + "/*/lib/python*/site-packages"):
    try:
        pathlib.Path(site, "planted_by_submitter.pth").write_text("import os\n")
    except OSError:
        pass
'''


def probes_for(secrets: Path, home_secret: Path, state: Path, env_root: Path, world: Path, text: str = PROBES) -> str:
    return (text.replace("SECRETS", repr(str(secrets))).replace("HOME_SECRET", repr(str(home_secret)))
            .replace("HOME_DIR", repr(str(home_secret.parent))).replace("STATE", repr(str(state)))
            .replace("ENV_ROOT", repr(str(env_root))).replace("WORLD_SECRET", repr(str(world))))


def hostile_package(tmp_path: Path, secrets: Path, home_secret: Path, state: Path, env_root: Path,
                    world: Path) -> Path:
    repo = tmp_path / "evilpkg"
    probes = probes_for(secrets, home_secret, state, env_root, world)
    write(repo, "setup.py", probes + "if leaks:\n    sys.exit('LEAKED ' + '; '.join(leaks))\n"
          "from setuptools import setup\nsetup(name='evilpkg', version='1.0', py_modules=['evilpkg'])\n")
    write(repo, "evilpkg.py", "VALUE = 0.5\n")
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    commit_all(repo, "a package with a hostile setup.py", author="Mallory <mallory@example.org>")
    return repo


def secrets_and_home(tmp_path: Path) -> tuple[Path, Path]:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[db]\ndev = "postgresql://u:db-Pa55-1@127.0.0.1:1/x"\n')
    secrets.chmod(0o600)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / ".netrc").write_text("machine example.org password home-Pa55-2\n")
    return secrets, home / ".netrc"


@contextmanager
def world_readable_secret() -> Iterator[Path]:
    """A file every user of the host may read (0644, in a 0755 folder of /var/tmp), outside every sandbox's view:
    unlike the 0600 secrets file and the 0700 home, only the sandbox's own view keeps it from a build script (a
    sandbox that showed the host and only dropped root would let it be read). Checked readable by nobody here."""
    folder = Path(tempfile.mkdtemp(prefix="score-plugins-world-", dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        secret = folder / "secret.txt"
        secret.write_text("world-Pa55-3\n")
        secret.chmod(0o644)
        as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat",
                                    str(secret)], capture_output=True, text=True)
        assert as_nobody.stdout == "world-Pa55-3\n", as_nobody.stderr  # root dropped alone would not stop it
        yield secret
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_hostile_build_script_is_contained_at_lock_time_and_in_the_job(workspace, example_repo, tmp_path):
    with world_readable_secret() as world:
        _hostile_build_script(workspace, example_repo, tmp_path, world)


def _hostile_build_script(workspace, example_repo, tmp_path, world: Path) -> None:  # noqa: ANN001
    secrets, home_secret = secrets_and_home(tmp_path)
    env_root = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"])
    evil = hostile_package(tmp_path, secrets, home_secret, workspace.state, env_root, world)
    write(example_repo, "sklearn_scores/benchmarks/uses_evil/__init__.py",
          "from sklearn_scores import benchmark_registry\nimport evilpkg\n\n"
          "benchmark_registry['uses-evil'] = lambda: (lambda model: evilpkg.VALUE)\n")
    write(example_repo, "sklearn_scores/benchmarks/uses_evil/requirements.txt",
          f"scikit-learn>=1.3\nevilpkg @ git+file://{evil}\n")
    commit_all(example_repo, "a benchmark that needs the hostile package", author="Mallory <mallory@example.org>")
    workspace.env.update({"SCORE_PLUGINS_SECRETS": str(secrets), "HOME": str(home_secret.parent),
                          "SCORE_PLUGINS_REQUIREMENT_URL_SCHEMES": "git+https,git+file",
                          "SCORE_PLUGINS_SANDBOX_EXTRA_PATHS": str(evil)})
    # other environments exist before the hostile one is built (the run's own honest pair builds one too)
    workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks", "wine-accuracy")
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg,knn-5")
    # the lock solved (setup.py ran, found nothing, raised nothing) and the job built and scored with it
    assert {(p["model"], p["state"], p["score"]) for p in result["pairs"]} == {
        ("logreg", "COMPLETED", 0.5), ("knn-5", "COMPLETED", 0.5)}, result["pairs"]
    logs = "".join(p.read_text(errors="replace") for p in workspace.state.glob("runs/*/logs/env-*.log"))
    assert "sandbox: bubblewrap" in logs and "LEAKED" not in logs
    assert not list(workspace.state.rglob("planted-by-submitter"))
    planted = {p.parents[3].name for p in env_root.glob("*/lib/python*/site-packages/planted_by_submitter.pth")}
    evil_env = {Path(p).stem for p in (workspace.state / "runs").glob("*/locks/*.txt")
                if "evilpkg" in Path(p).read_text()}
    assert planted <= evil_env, (planted, evil_env)  # at most its own environment, never another one
    # every file of every environment is root's again after its build, nothing group- or world-writable
    odd = [str(p) for p in env_root.rglob("*") if not p.is_symlink() and (p.lstat().st_uid != 0
                                                                           or p.lstat().st_mode & 0o022)]
    assert odd == [], odd[:5]


HOSTILE_TEST = PROBES + '''

def test_nothing_of_the_coordinator_is_in_reach():
    assert leaks == []
'''


def test_hostile_plugin_test_is_contained(workspace, example_repo, tmp_path):
    with world_readable_secret() as world:
        _hostile_plugin_test(workspace, example_repo, tmp_path, world)


def _hostile_plugin_test(workspace, example_repo, tmp_path, world: Path) -> None:  # noqa: ANN001
    secrets, home_secret = secrets_and_home(tmp_path)
    env_root = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"])
    # the environment root is shared by the session: the hostile package of the test above planted into its own
    before = set(env_root.glob("*/lib/python*/site-packages/planted_by_submitter.pth"))
    body = probes_for(secrets, home_secret, workspace.state, env_root, world, HOSTILE_TEST)
    write(example_repo, "sklearn_scores/benchmarks/wine_cv/test.py", body)
    commit_all(example_repo, "a hostile plugin test", author="Mallory <mallory@example.org>")
    workspace.env.update({"SCORE_PLUGINS_SECRETS": str(secrets), "HOME": str(home_secret.parent)})
    workspace.state.mkdir(parents=True, exist_ok=True)
    (workspace.state / "local.db").write_bytes(b"SQLite format 3\x00")
    junit = tmp_path / "junit.xml"
    proc = workspace.cli("test-plugins", "--repo", str(example_repo), "--base", "HEAD~1", "--head", "HEAD",
                         "--junit", str(junit), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    assert [(r["plugin"], r["status"]) for r in results] == [("benchmarks/wine_cv", "passed")], results
    assert 'tests="1"' in junit.read_text() and "planted" not in junit.read_text()
    assert not list(workspace.state.rglob("planted-by-submitter"))
    assert set(env_root.glob("*/lib/python*/site-packages/planted_by_submitter.pth")) == before
    assert os.stat(secrets).st_mode & 0o777 == 0o600


# Issue 35, finding 5: build scripts wrote the shared lock cache. A requirement whose setup.py appends to every
# file of `six` (index pages, metadata, the unpacked wheel), plants a file in every folder and opens up the mode of
# every file of every cache it can name (uv's cache as it sees it, the lock folder, the site's package cache),
# run while locking and while building.
POISONER = r'''
import os, pathlib
for root in {roots!r} + [os.environ.get("UV_CACHE_DIR", "")]:
    for dirpath, dirnames, filenames in os.walk(root) if root else ():
        try:
            pathlib.Path(dirpath, "planted-by-build").write_text("x")
        except OSError:
            pass
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if "six" in path:  # what every later lock and build of six reads (the build's own tools left working)
                    with open(path, "ab") as f:
                        f.write(b"POISON")
            except OSError:
                pass
            try:
                os.chmod(path, 0o666)
            except OSError:
                pass
from setuptools import setup
setup(name="poisoner", version="1.0", py_modules=["poisoner"])
'''


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file under `folder` (the locks' own lockfiles and records left out): content, mode, owner."""
    import hashlib

    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.suffix in (".txt", ".failed", ".tmp"):
            continue
        info = path.lstat()
        found[str(path.relative_to(folder))] = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mode,
                                                info.st_uid)
    return found


def poisoned(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name == "planted-by-build" or
            (p.is_file() and not p.is_symlink() and p.read_bytes().endswith(b"POISON"))]


def test_build_scripts_never_write_a_cache_another_lock_or_build_reads(tmp_path):
    import shutil
    import sys

    from envs.lock import EnvSpec, LockJail, lock_environment
    from jobscripts.render import render_env_builder
    from pipeline.config import _default_uv

    uv = _default_uv()
    locks, package_cache = tmp_path / "locks", tmp_path / "package-cache"
    repo = tmp_path / "poisoner"
    write(repo, "setup.py", POISONER.format(roots=[str(locks), str(package_cache)]))
    write(repo, "poisoner.py", "VALUE = 1\n")
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    commit_all(repo, "a package whose build script poisons caches", author="Mallory <mallory@example.org>")
    jail = LockJail(extra_ro=(str(repo),))

    # locking: an honest set fills the shared lock cache; the hostile set's build script runs, and changes nothing
    honest = lock_environment(EnvSpec(("six",), "3.11"), locks, uv, jail=jail)
    before = snapshot(locks)
    assert before, "the honest lock left nothing in the lock cache"
    hostile = lock_environment(EnvSpec(("six", f"poisoner @ git+file://{repo}"), "3.11"), locks, uv, jail=jail)
    assert any(p.startswith("poisoner @ git+file://") for p in hostile.packages), hostile.packages
    assert snapshot(locks) == before and poisoned(locks) == []
    later = lock_environment(EnvSpec(("six>=1.0",), "3.11"), locks, uv, jail=jail)  # reads the unaltered cache
    assert any(p.startswith("six==") for p in later.packages) and poisoned(locks) == []

    # building on the node: the same, with the site's package cache
    bundle = tmp_path / "bundle"
    shutil.copytree(Path(sb_module().__file__).parent, bundle / "job", ignore=shutil.ignore_patterns("__pycache__"))
    script = bundle / "build_env.sh"
    script.write_text(render_env_builder(backend="uv", uv=uv, python=os.path.realpath(sys._base_executable),
                                         package_cache=str(package_cache), extra_ro=(str(repo),)))

    def build(name: str, lockfile: Path, check: bool = True) -> Path:
        target = tmp_path / "envs" / name
        proc = subprocess.run(["bash", str(script), str(target), str(lockfile)], capture_output=True, text=True,
                              timeout=600, env={**{k: v for k, v in os.environ.items()
                                                   if not k.startswith("SCORE_PLUGINS_")}, "HOME": str(tmp_path)})
        assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
        return target

    build("honest", honest.path)
    before = snapshot(package_cache)
    assert before, "the honest build left nothing in the package cache"
    build("hostile", hostile.path, check=False)  # it may break its own build (six in its own layer): its affair
    after = snapshot(package_cache)
    # uv alone (no build yet) may have refreshed an index page or fetched the git requirement, and that joined the
    # cache; nothing the build script wrote did: no planted file, no POISON, nothing opened up, and every file
    # that was there (the unpacked wheel of six a later build installs) as it was
    assert poisoned(package_cache) == []
    assert [k for k, (_, mode, uid) in after.items() if uid != 0 or mode & 0o022] == []
    assert {k: v for k, v in after.items() if k in before and not k.startswith("simple-v")} == \
        {k: v for k, v in before.items() if not k.startswith("simple-v")}
    later_env = build("later", later.path)  # built from the unaltered cache
    six = next(later_env.glob("lib/python*/site-packages/six.py"))
    assert b"POISON" not in six.read_bytes()
    assert six.read_bytes() == next((tmp_path / "envs" / "honest").glob("lib/python*/site-packages/six.py")).read_bytes()


def sb_module():
    from pipeline.job import sandbox

    return sandbox
