"""Conda environments without a conda binary: a local channel built here with py-rattler-build,
locked with py-rattler into conda-lock.yml, rendered with the real `conda-lock render`, installed
with py-rattler, and used by a scoring job. No micromamba or conda binary can be installed on this
machine: their job-script lines are checked as text (and by shellcheck), not run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envs.conda import conda_lock_from_file, lock_conda, render_explicit, stage_lockfile
from envs.lock import EnvError, LockJail
from envs.sides import side_hashes
from jobscripts import render_env_builder
from pipeline.executors.base import job_environment
from pipeline.config import load_settings
from tests.conftest import commit_all, write

SETTINGS = load_settings(environ={})
BASE_PYTHON = os.path.realpath(SETTINGS.python)
ROOT = Path(__file__).resolve().parents[1]


def build_package(recipes: Path, channel: Path, name: str, version: str, script: list[str]) -> None:
    import rattler_build

    folder = recipes / f"{name}-{version}"
    folder.mkdir(parents=True)
    lines = "\n".join(f"    - {json.dumps(line)}" for line in script)
    (folder / "recipe.yaml").write_text(f"package:\n  name: {name}\n  version: \"{version}\"\n"
                                        f"build:\n  noarch: generic\n  script:\n{lines}\n")
    rattler_build.build_recipes([str(folder / "recipe.yaml")], output_dir=str(channel), test="skip",
                                allow_symlinks_on_windows=True)


@pytest.fixture(scope="session")
def conda_channel(tmp_path_factory) -> str:
    """A real conda channel: a `python` (a stand-in, named so: conda-forge cannot be reached from here) whose
    prefix is an environment of its own -- `bin/python` is a copy of this machine's interpreter (a file of the
    prefix, as a real conda python is: the sandboxed build refuses one pointing outside) and a `pyvenv.cfg`
    makes the prefix its `sys.prefix`, so what uv installs lands in the prefix as in a real conda
    environment -- and a data package in two versions."""
    root = tmp_path_factory.mktemp("channel")
    channel = root / "channel"
    home = os.path.dirname(BASE_PYTHON)
    build_package(root / "recipes", channel, "python", "3.11.99", [
        "mkdir -p $PREFIX/bin", f"cp {BASE_PYTHON} $PREFIX/bin/python",
        f"printf 'home = {home}\\ninclude-system-site-packages = false\\nversion = 3.11.99\\n' > $PREFIX/pyvenv.cfg"])
    for version in ("1.0.0", "2.0.0"):
        build_package(root / "recipes", channel, "spdemo-data", version, [
            "mkdir -p $PREFIX/share/spdemo", f"echo 'spdemo {version}' > $PREFIX/share/spdemo/version.txt"])
    for package in channel.rglob("*.conda"):  # rattler-build writes 0600; the sandboxed installer is another user
        package.chmod(0o644)
    return channel.as_uri()


def test_lock_is_keyed_by_the_solution_and_renders_with_conda_lock(conda_channel, tmp_path):
    a = lock_conda([conda_channel], ["spdemo-data"], tmp_path / "locks", "rattler")
    b = lock_conda([conda_channel], ["spdemo-data >=2"], tmp_path / "locks", "rattler")
    assert a.path != b.path and a.env_hash == b.env_hash  # different inputs, same solution
    assert a.packages == ("spdemo-data==2.0.0=" + a.packages[0].split("=")[-1],)
    older = lock_conda([conda_channel], ["spdemo-data <2"], tmp_path / "locks", "rattler")
    assert older.env_hash != a.env_hash
    explicit = render_explicit(a.path, tmp_path)  # the real conda-lock, offline
    text = explicit.read_text()
    assert "@EXPLICIT" in text and "spdemo-data-2.0.0" in text and "#" in text.split("spdemo-data-2.0.0")[1]
    with pytest.raises(EnvError, match="cannot solve"):
        lock_conda([conda_channel], ["no-such-conda-package"], tmp_path / "locks", "rattler")


def test_micromamba_and_conda_lines_as_text(tmp_path):
    micromamba = render_env_builder(backend="micromamba", micromamba="/opt/mm/bin/micromamba")
    conda = render_env_builder(backend="conda", conda="/opt/conda/bin/conda")
    assert '"$MICROMAMBA" create -y -p "$target" -f "$scratch/conda-explicit.txt"' in micromamba
    assert '"$CONDA" create -y -p "$target" --file "$scratch/conda-explicit.txt"' in conda
    for text in (micromamba, conda):  # both layers: conda packages by the node's tool, then the pip layer by uv
        assert "grep -v '^# pip ' \"$explicit\" > \"$scratch/conda-explicit.txt\"" in text
        assert "sed -n 's/^# pip //p' \"$explicit\" > \"$scratch/pip-requirements.txt\"" in text
        assert ('"$uv" pip install --quiet --no-deps --python "$target/bin/python" "$hash_mode" '
                '-r "$requirements"') in text
        # both in one sandboxed step (the installer is its command, after the pip layer's arguments), as the
        # unprivileged user; root checks the interpreter after, and marks complete only after both layers are in
        step = text.index('"${sandboxed[@]}" /bin/sh -c "$build" sh "$target" "$uv_path" "$hash_mode" '
                          '"$scratch/pip-requirements.txt"')
        assert text.index('sandboxed=("$SANDBOX_PYTHON" "$SANDBOX" exec --network on --rw "$scratch" '
                          '--rw "$target"') < step
        assert text.index('sandboxed+=(--ro "$uv_path"') < step < text.index("create -y -p")
        assert step < text.index("the environment's python points outside it") < text.index('> "$marker"')
        assert text.count("trap ") == 1
    for name, text in (("mm.sh", micromamba), ("conda.sh", conda)):
        (tmp_path / name).write_text(text)
        proc = subprocess.run(["shellcheck", str(tmp_path / name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_rattler_install_then_verify_and_a_corrupt_lock(conda_channel, tmp_path):
    lock = lock_conda([conda_channel], ["spdemo-data", "python"], tmp_path / "locks", "rattler")
    builder = tmp_path / "build_env_conda.sh"
    tool = Path(__file__).resolve().parents[1] / "envs/rattler_tool.py"
    channel = conda_channel.removeprefix("file://")  # a local channel: the sandboxed installer reads it
    builder.write_text(render_env_builder(backend="rattler", rattler_python=sys.executable, rattler_tool=str(tool),
                                          python=BASE_PYTHON, extra_ro=(channel,)))
    shutil.copytree(Path(__file__).resolve().parents[1] / "pipeline/job", tmp_path / "job")
    target = tmp_path / "envs" / lock.env_hash
    staged = stage_lockfile(lock.path, tmp_path / "run-locks")
    proc = subprocess.run(["bash", str(builder), str(target), str(staged)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified 2 packages" in proc.stdout
    assert (target / "share/spdemo/version.txt").read_text().strip() == "spdemo 2.0.0"
    assert conda_lock_from_file(target / "score-plugins.lock", "rattler").env_hash == lock.env_hash
    # A corrupt lock that still installs: its spdemo-data says version 2.0, which the solver matches to the locked
    # file (2.0 == 2.0.0 for conda), whose URL and sha256 check out: the installer succeeds, the build step ends,
    # and only `verify` sees that what the lock names is not what is in the environment.
    corrupt = tmp_path / "corrupt" / "conda-lock.yml"
    corrupt.parent.mkdir()
    text = lock.path.read_text()
    assert text.count("version: 2.0.0") == 1
    corrupt.write_text(text.replace("version: 2.0.0", "version: '2.0'"))
    (corrupt.parent / "conda-linux-64.lock").write_text((staged.parent / "conda-linux-64.lock").read_text())
    bad = subprocess.run(["bash", str(builder), str(tmp_path / "envs/bad"), str(corrupt)], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and not (tmp_path / "envs/bad/.score-plugins-complete").exists()
    # (py-rattler at times crashes as it exits, after a finished install: "installer exited 139", tolerated)
    assert "score-plugins: environment python" in bad.stdout, bad.stdout + bad.stderr
    assert (tmp_path / "envs/bad/share/spdemo/version.txt").read_text().strip() == "spdemo 2.0.0"  # installed
    assert bad.stderr.strip().splitlines()[-1] == \
        f"environment {tmp_path / 'envs/bad'} lacks locked packages: spdemo-data", bad.stderr  # verify's refusal


BENCH = """import sys
from pathlib import Path

from sklearn_scores import benchmark_registry


class Bench:
    def __call__(self, model):
        import six  # the domain's pip dependency, installed into the conda prefix

        if not six.__file__.startswith(sys.prefix):
            return 0.0
        data = Path(sys.prefix) / 'share/spdemo/version.txt'
        if not data.exists():
            return 0.5  # a pip-only pair in a conda environment (env_backend = conda)
        return 0.25 if data.read_text().strip() == 'spdemo 2.0.0' else 0.0


benchmark_registry['conda-bench'] = Bench
"""


def brainscore_shaped_pair(example_repo: Path, channel: str) -> None:
    """Like a Brain-Score plugin repository: the domain's pip dependencies and interpreter in its root
    `pyproject.toml`; a benchmark plugin with an `environment.yml` (a conda package); a model without one. Each
    side has its own environment: the benchmark's is the conda one (it checks what its own process sees)."""
    write(example_repo, "pyproject.toml", '[project]\nname = "sklearn-scores"\nversion = "0.1"\n'
          'requires-python = ">=3.11"\ndependencies = ["six==1.16.0"]\n')
    write(example_repo, "sklearn_scores/models/conda_model/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['conda-model'] = lambda: object()\n")
    write(example_repo, "sklearn_scores/benchmarks/conda_bench/__init__.py", BENCH)
    write(example_repo, "sklearn_scores/benchmarks/conda_bench/environment.yml",
          f"channels:\n  - {channel}\ndependencies:\n  - spdemo-data >=2\n")
    commit_all(example_repo, "a benchmark with a conda environment, a domain with pip dependencies")


def check_one_environment_with_both_layers(workspace, repo: Path, executor: str) -> Path:
    result = workspace.json("run", "--repo", str(repo), "--base", "HEAD~1", "--models", "conda-model",
                            "--benchmarks", "conda-bench", "--executor", executor)
    assert result["states"] == {"COMPLETED": 1}, result
    [row] = workspace.json("leaderboard")
    assert row["score"] == 0.25  # spdemo-data 2.0.0 from the conda part, six from the pip part, one prefix
    model_side, bench_side = side_hashes(row["env_hash"])
    assert model_side != bench_side  # the model's side: a uv environment of the domain's pip dependencies
    [run_dir] = list(workspace.state.glob("runs/*"))
    [lockfile] = run_dir.glob("locks/*/conda-lock.yml")
    import yaml

    managers = {p["name"]: p["manager"] for p in yaml.safe_load(lockfile.read_text())["package"]}
    assert managers == {"python": "conda", "spdemo-data": "conda", "six": "pip"}  # the lock records both layers
    env = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"]) / bench_side
    assert (env / "score-plugins.lock").read_text() == lockfile.read_text()
    assert "pip layer of 1 packages installed" in (run_dir / "logs/env-0.log").read_text()
    [task] = json.loads((run_dir / "manifest.json").read_text())["tasks"]  # the run's provenance, by layer
    packages = task["envs"]["benchmark"]["packages"]
    assert packages["kind"] == "conda" and packages["pip"] == ["six==1.16.0"]
    assert [p.split("==")[0] for p in packages["conda"]] == ["python", "spdemo-data"]
    assert task["envs"]["model"]["packages"] == {"kind": "pip", "conda": [], "pip": ["six==1.16.0"]}
    return env


@pytest.fixture
def conda_workspace(conda_channel, workspace, example_repo, tmp_path):
    brainscore_shaped_pair(example_repo, conda_channel)
    # this channel's `python` links the machine's interpreter: the sandbox must show it
    # (and the sandboxed installer reads the local channel)
    workspace.env["SCORE_PLUGINS_SANDBOX_EXTRA_PATHS"] = (f"{Path(BASE_PYTHON).parent.parent},"
                                                          f"{conda_channel.removeprefix('file://')}")
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(tmp_path / "envs")  # built by this test, not found ready
    return workspace, example_repo


def test_brainscore_shaped_pair_builds_one_conda_environment_with_both_layers(conda_workspace, conda_channel):
    workspace, repo = conda_workspace
    env = check_one_environment_with_both_layers(workspace, repo, "local")
    # reproduce: the run's own lockfile (both layers), a fresh environment root, the identical score
    [row] = workspace.json("leaderboard")
    out = workspace.path / "reproduced"
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(workspace.path / "envs-again")
    channel = Path(conda_channel.removeprefix("file://"))
    channel.rename(channel.with_name("away"))  # nothing is solved again: with the channel gone, a solve would fail
    try:
        data = workspace.json("reproduce", str(row["id"]), "--out", str(out))
    finally:
        channel.with_name("away").rename(channel)
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(env.parent)
    [original] = workspace.state.glob("runs/*/locks/*/conda-lock.yml")
    assert (out / "locks" / env.name / "conda-lock.yml").read_text() == original.read_text()
    proc = subprocess.run(["bash", data["job_script"]], env=job_environment({"SLURM_ARRAY_TASK_ID": "0"}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + (out / "logs/task-0.out").read_text()
    assert (workspace.path / "envs-again" / env.name / ".score-plugins-complete").exists()  # rebuilt, same key
    [result] = [json.loads(p.read_text()) for p in (out / "spool").glob("*.json")]
    assert result["status"] == "ok" and result["score_ceiled"] == row["score"]
    # a second benchmark whose declarations differ but solve the same: the same environment, reused
    write(repo, "sklearn_scores/benchmarks/conda_bench_2/__init__.py", BENCH.replace("conda-bench", "conda-bench-2"))
    write(repo, "sklearn_scores/benchmarks/conda_bench_2/environment.yml",
          f"channels:\n  - {conda_channel}\ndependencies:\n  - spdemo-data\n")
    # env_backend = conda: a side without environment.yml gets a conda environment too (default channels)
    write(repo, "sklearn_scores/benchmarks/plain_bench/__init__.py", BENCH.replace("conda-bench", "plain-bench"))
    commit_all(repo, "two more benchmarks")
    workspace.env.update({"SCORE_PLUGINS_ENV_BACKEND": "conda", "SCORE_PLUGINS_CONDA_CHANNELS": conda_channel})
    result = workspace.json("run", "--repo", str(repo), "--base", "HEAD~1", "--models", "conda-model")
    assert result["states"] == {"COMPLETED": 2}, result
    rows = {r["benchmark"]: r for r in workspace.json("leaderboard")}
    assert side_hashes(rows["conda-bench-2"]["env_hash"])[1] == env.name and rows["conda-bench-2"]["score"] == 0.25
    plain = side_hashes(rows["plain-bench"]["env_hash"])[1]
    assert rows["plain-bench"]["score"] == 0.5 and plain != env.name
    assert (env.parent / plain / "conda-meta").is_dir()  # a conda prefix, not a venv
    assert (env.parent / side_hashes(rows["plain-bench"]["env_hash"])[0] / "conda-meta").is_dir()  # the model's too
    run_dir = max(workspace.state.glob("runs/*"), key=lambda p: p.stat().st_mtime)
    logs = [p.read_text() for p in run_dir.glob("logs/env-*.log")]
    assert any(f"score-plugins: reusing environment {env}\n" in text for text in logs), logs


def test_brainscore_shaped_pair_on_slurm(slurm_cluster, conda_workspace):
    check_one_environment_with_both_layers(*conda_workspace, "slurm")


def test_one_lockfile_holds_both_layers_and_the_node_installs_both(conda_channel, tmp_path):
    """The conda part (interpreter, data package) and the pip part (an index package with its sha256, a git
    requirement pinned to its commit) in ONE conda-lock file, which the real conda-lock reads; rattler builds
    the prefix, uv installs the pip part into the prefix's own interpreter, hashes required."""
    from tests.brainscore_like import make_git_package

    git_req = make_git_package(tmp_path / "tinypkg")
    lock = lock_conda([conda_channel], ["python 3.11.*", "spdemo-data"], tmp_path / "locks", "rattler",
                      pip_requirements=("six==1.16.0", git_req), uv=SETTINGS.uv,
                      jail=LockJail(extra_ro=(str(tmp_path / "tinypkg"),)))  # uv builds it in the lock's sandbox
    import yaml

    entries = {p["name"]: p for p in yaml.safe_load(lock.path.read_text())["package"]}
    assert {n: p["manager"] for n, p in entries.items()} == {
        "python": "conda", "spdemo-data": "conda", "six": "pip", "tinypkg": "pip"}
    six = entries["six"]
    assert six["url"].endswith("six-1.16.0-py2.py3-none-any.whl") and len(six["hash"]["sha256"]) == 64
    assert entries["tinypkg"]["url"].startswith("git+file://") and "@" in entries["tinypkg"]["url"].split("//")[1]
    assert lock.pip_packages[0].startswith("six==1.16.0") and "tinypkg @ git+file://" in lock.pip_packages[1]
    staged = stage_lockfile(lock.path, tmp_path / "run-locks")  # the real conda-lock renders our file
    explicit = (staged.parent / "conda-linux-64.lock").read_text()
    assert f"# pip six @ {six['url']}#sha256={six['hash']['sha256']}" in explicit
    assert "# pip tinypkg @ git+file://" in explicit

    builder = tmp_path / "build_env_conda.sh"
    # in the sandbox: the sandboxed installer reads the local channel, uv the git repository
    readable = (conda_channel.removeprefix("file://"), str(tmp_path / "tinypkg"))
    builder.write_text(render_env_builder(backend="rattler", rattler_python=sys.executable,
                                          rattler_tool=str(ROOT / "envs/rattler_tool.py"), uv=SETTINGS.uv,
                                          python=BASE_PYTHON, extra_ro=readable))
    shutil.copytree(ROOT / "pipeline/job", tmp_path / "job")
    target = tmp_path / "envs" / lock.env_hash
    proc = subprocess.run(["bash", str(builder), str(target), str(staged)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pip layer of 2 packages installed" in proc.stdout
    check = subprocess.run([str(target / "bin/python"), "-c", "import six, sys, tinypkg; "
                            "print(sys.prefix, six.__file__, tinypkg.__file__)"], capture_output=True, text=True)
    prefix, six_file, tiny_file = check.stdout.split()
    assert Path(prefix) == target and six_file.startswith(str(target)) and tiny_file.startswith(str(target))

    # a pip artifact whose hash is not the locked one: the build fails and the environment is not marked complete
    tampered = tmp_path / "tampered" / "conda-lock.yml"
    tampered.parent.mkdir()
    tampered.write_text(staged.read_text())
    (tampered.parent / "conda-linux-64.lock").write_text(explicit.replace(six["hash"]["sha256"], "0" * 64))
    bad = subprocess.run(["bash", str(builder), str(tmp_path / "envs/tampered"), str(tampered)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "Hash mismatch" in bad.stderr, bad.stdout + bad.stderr
    assert not (tmp_path / "envs/tampered/.score-plugins-complete").exists()

    # a node without uv: one clear line, and the environment is not marked complete
    no_uv = tmp_path / "build_env_no_uv.sh"
    no_uv.write_text(render_env_builder(backend="rattler", rattler_python=sys.executable,
                                        rattler_tool=str(ROOT / "envs/rattler_tool.py"), uv=str(tmp_path / "no/uv"),
                                        python=BASE_PYTHON, extra_ro=readable))
    missing = subprocess.run(["bash", str(no_uv), str(tmp_path / "envs/no-uv"), str(staged)], capture_output=True,
                             text=True)
    assert missing.returncode != 0 and f"no uv at '{tmp_path / 'no/uv'}'" in missing.stderr, missing.stderr
    assert not (tmp_path / "envs/no-uv/.score-plugins-complete").exists()


def test_hostile_pip_layer_build_script_is_contained_at_lock_time_and_in_the_job(conda_channel, tmp_path):
    """The pip layer of a conda lock runs build scripts twice: `uv pip compile` on the coordinator (in the lock
    jail, like the uv backend's) and `uv pip install` in the job (in the build's sandbox, with the conda
    installer). A hostile git requirement whose setup.py fails the build with LEAKED on any success (root, the
    secrets file, the home, the state folder, another environment, a world-readable file outside the sandbox's view)
    locks, builds and leaves everything root's."""
    from tests.test_sandbox_builds import world_readable_secret

    with world_readable_secret() as world:
        _hostile_pip_layer(conda_channel, tmp_path, world)


def _hostile_pip_layer(conda_channel: str, tmp_path: Path, world: Path) -> None:
    from tests.test_sandbox_builds import hostile_package, secrets_and_home

    secrets, home_secret = secrets_and_home(tmp_path)
    state, env_root = tmp_path / "state", tmp_path / "envs"
    state.mkdir()
    (state / "local.db").write_bytes(b"SQLite format 3\x00")
    other = env_root / "other/lib/python3.11/site-packages"  # an environment built before, by someone else
    other.mkdir(parents=True)
    evil = hostile_package(tmp_path, secrets, home_secret, state, env_root, world)
    lock = lock_conda([conda_channel], ["python 3.11.*"], tmp_path / "locks", "rattler",
                      pip_requirements=(f"evilpkg @ git+file://{evil}",), uv=SETTINGS.uv,
                      jail=LockJail(extra_ro=(str(evil),)))
    assert "evilpkg @ git+file://" in lock.pip_packages[0]  # solved: its setup.py ran and found nothing
    staged = stage_lockfile(lock.path, tmp_path / "run-locks")
    builder = tmp_path / "build_env_conda.sh"
    builder.write_text(render_env_builder(backend="rattler", rattler_python=sys.executable,
                                          rattler_tool=str(ROOT / "envs/rattler_tool.py"), uv=SETTINGS.uv,
                                          python=BASE_PYTHON,
                                          extra_ro=(conda_channel.removeprefix("file://"), str(evil))))
    shutil.copytree(ROOT / "pipeline/job", tmp_path / "job")
    target = env_root / lock.env_hash
    proc = subprocess.run(["bash", str(builder), str(target), str(staged)], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(home_secret.parent)})
    assert proc.returncode == 0 and "LEAKED" not in proc.stderr, proc.stdout + proc.stderr
    assert "sandbox: bubblewrap" in proc.stderr and "pip layer of 1 packages installed" in proc.stdout
    assert list(target.glob("lib/python*/site-packages/evilpkg.py")) or list(target.rglob("evilpkg.py"))
    assert not list(state.rglob("planted-by-submitter")) and not list(other.iterdir())
    odd = [str(p) for p in target.rglob("*") if not p.is_symlink() and (p.lstat().st_uid != 0
                                                                         or p.lstat().st_mode & 0o022)]
    assert odd == [], odd[:5]  # every file of the environment root's again, nothing group- or world-writable
