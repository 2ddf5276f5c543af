"""Submitter code outside scoring runs in the same sandbox: build scripts of requirements when locking (on the
coordinator) and when building the environment (in the job), and the plugins' own tests (`test-plugins`).

Run as root, as CI runs. A hostile package (a real git repository, required as `git+file`) whose setup.py tries
to read the coordinator's secrets file, its home, its environment and state database, to write into the state
folder and to plant a `.pth` in every environment it can reach; any success makes its build fail with LEAKED.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

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


def hostile_package(tmp_path: Path, secrets: Path, home_secret: Path, state: Path, env_root: Path) -> Path:
    repo = tmp_path / "evilpkg"
    probes = (PROBES.replace("SECRETS", repr(str(secrets))).replace("HOME_SECRET", repr(str(home_secret)))
              .replace("HOME_DIR", repr(str(home_secret.parent))).replace("STATE", repr(str(state)))
              .replace("ENV_ROOT", repr(str(env_root))))
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


def test_hostile_build_script_is_contained_at_lock_time_and_in_the_job(workspace, example_repo, tmp_path):
    secrets, home_secret = secrets_and_home(tmp_path)
    env_root = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"])
    evil = hostile_package(tmp_path, secrets, home_secret, workspace.state, env_root)
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
    secrets, home_secret = secrets_and_home(tmp_path)
    env_root = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"])
    # the environment root is shared by the session: the hostile package of the test above planted into its own
    before = set(env_root.glob("*/lib/python*/site-packages/planted_by_submitter.pth"))
    body = (HOSTILE_TEST.replace("SECRETS", repr(str(secrets))).replace("HOME_SECRET", repr(str(home_secret)))
            .replace("HOME_DIR", repr(str(home_secret.parent))).replace("STATE", repr(str(workspace.state)))
            .replace("ENV_ROOT", repr(str(env_root))))
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
