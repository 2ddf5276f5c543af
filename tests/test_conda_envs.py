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

from envs.conda import conda_lock_from_file, lock_conda, render_explicit
from envs.lock import EnvError
from jobscripts import render_env_builder
from pipeline.config import load_settings
from tests.conftest import commit_all, write

BASE_PYTHON = os.path.realpath(load_settings(environ={}).python)


def build_package(recipes: Path, channel: Path, name: str, version: str, script: list[str]) -> None:
    import rattler_build

    folder = recipes / f"{name}-{version}"
    folder.mkdir(parents=True)
    lines = "\n".join(f"    - {json.dumps(line)}" for line in script)
    (folder / "recipe.yaml").write_text(f"package:\n  name: {name}\n  version: \"{version}\"\n"
                                        f"build:\n  noarch: generic\n  script:\n{lines}\n")
    rattler_build.build_recipes([str(folder / "recipe.yaml")], output_dir=str(channel), test="skip")


@pytest.fixture(scope="session")
def conda_channel(tmp_path_factory) -> str:
    """A real conda channel: a `python` that runs this machine's interpreter with CONDA_PREFIX set
    (as activation would), and a data package in two versions."""
    root = tmp_path_factory.mktemp("channel")
    channel = root / "channel"
    shim = ("#!/bin/sh\nCONDA_PREFIX=\"$(cd \"$(dirname \"$0\")/..\" && pwd)\"\nexport CONDA_PREFIX\n"
            f"exec {BASE_PYTHON} \"$@\"\n")
    build_package(root / "recipes", channel, "python", "3.11.99", [
        "mkdir -p $PREFIX/bin", f"printf '%s' '{shim}' > $PREFIX/bin/python", "chmod 755 $PREFIX/bin/python"])
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
    assert '"$MICROMAMBA" create -y -p "$target" -f "$lockfile"' in micromamba
    assert '"$CONDA" create -y -p "$target" --file "$lockfile"' in conda
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
    shutil.copyfile(Path(__file__).resolve().parents[1] / "pipeline/sandbox.py", tmp_path / "sandbox.py")
    target = tmp_path / "envs" / lock.env_hash
    proc = subprocess.run(["bash", str(builder), str(target), str(lock.path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified 2 packages" in proc.stdout
    assert (target / "share/spdemo/version.txt").read_text().strip() == "spdemo 2.0.0"
    assert conda_lock_from_file(target / "score-plugins.lock", "rattler").env_hash == lock.env_hash
    corrupt = tmp_path / "corrupt.yml"
    corrupt.write_text(lock.path.read_text().replace("2.0.0", "9.9.9"))
    bad = subprocess.run(["bash", str(builder), str(tmp_path / "envs/bad"), str(corrupt)], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and not (tmp_path / "envs/bad/.score-plugins-complete").exists()


def test_conda_plugins_are_scored_in_their_environment(conda_channel, workspace, example_repo):
    env_yml = f"channels:\n  - {conda_channel}\ndependencies:\n  - python\n  - spdemo-data >=2\n"
    write(example_repo, "sklearn_scores/models/conda_model/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['conda-model'] = lambda: object()\n")
    write(example_repo, "sklearn_scores/models/conda_model/environment.yml", env_yml)
    write(example_repo, "sklearn_scores/benchmarks/conda_bench/__init__.py",
          "import os\nfrom pathlib import Path\nfrom sklearn_scores import benchmark_registry\n\n"
          "class Bench:\n    def __call__(self, model):\n"
          "        text = (Path(os.environ['CONDA_PREFIX']) / 'share/spdemo/version.txt').read_text()\n"
          "        return 0.25 if text.strip() == 'spdemo 2.0.0' else 0.0\n\n"
          "benchmark_registry['conda-bench'] = Bench\n")
    # this channel's `python` is a shim that runs the machine's interpreter: the sandbox must show it
    # (and the sandboxed installer reads the local channel)
    workspace.env["SCORE_PLUGINS_SANDBOX_EXTRA_PATHS"] = (f"{Path(BASE_PYTHON).parent.parent},"
                                                          f"{conda_channel.removeprefix('file://')}")
    write(example_repo, "sklearn_scores/benchmarks/conda_bench/environment.yml", env_yml)
    commit_all(example_repo, "plugins with conda environments")
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "conda-model",
                            "--benchmarks", "conda-bench")
    assert result["states"] == {"COMPLETED": 1}, result
    [row] = workspace.json("leaderboard")
    assert row["score"] == 0.25
    [run_dir] = list(workspace.state.glob("runs/*"))
    assert (run_dir / "build_env_conda.sh").exists()
    assert list(run_dir.glob("locks/*/conda-lock.yml"))
    # a pip model on a conda benchmark cannot share one environment: a clear, recorded refusal
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                          "--benchmarks", "conda-bench")
    assert "mixing requirements.txt and environment.yml" in plan["cannot_run"][0]["problem"]
