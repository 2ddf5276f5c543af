"""A Brain-Score-shaped repository (tests/brainscore_like.py): what real plugins look like, end to end.

Detection: every real shape of folder and id, the dependency graph through f-strings, keywords, call
sites and data -> data, problems scoped to the change. Scoring: the domain's own dependencies from
`pyproject.toml` (brainscore-core from PyPI), `setup.py`, a `git+` requirement, Brain-Score's Score
semantics, in the bubblewrap sandbox, on the local executor and on Slurm; the stored values equal what
brainscore-core computes in the same environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.stages.detect import detect
from pipeline.catalog.plugins import load_catalog
from envs.sides import side_hashes
from tests.brainscore_like import ROOT, build, make_git_package
from tests.conftest import commit_all, write

MODELS = ["alexnet_z_axis_iteration=1", "convnext_base:clip_laiona_augreg_ft_in1k_384"]
BENCHMARKS = ["Derived-acc", "Iris.private-acc"]


@pytest.fixture
def bs_repo(tmp_path: Path) -> Path:
    return build(tmp_path / "bs-repo")


def test_catalog_has_every_real_shape_and_the_whole_dependency_graph(bs_repo, tmp_path):
    catalog = load_catalog(bs_repo, "HEAD", cache_dir=tmp_path / "cache")
    assert sorted(catalog.by_identifier("models")) == MODELS
    assert sorted(catalog.by_identifier("benchmarks")) == BENCHMARKS
    assert catalog.plugins[("data", "iris_like")].registered == {
        "data_registry": ["Iris.private", "Iris.public"], "stimulus_set_registry": ["Iris"]}
    edges = {f"{p.type}/{p.name}": sorted(f"{t}/{n}" for t, names in p.uses.items() for n in names)
             for p in catalog.plugins.values() if any(p.uses.values())}
    assert edges == {
        # f-string whose part comes from the only call site (`access='private'`), a ceiling, a metric
        "benchmarks/iris_like": ["data/iris_like", "metrics/accuracy", "metrics/internal_consistency"],
        # keyword loader; the test file's loads are not dependencies
        "benchmarks/derived-bench": ["data/derived", "metrics/accuracy"],
        "data/derived": ["data/iris_like"],  # data -> data
    }
    derived = catalog.plugins[("benchmarks", "derived-bench")]
    assert [f"{p.type}/{p.name}" for p in catalog.dependencies(derived)] == [
        "data/derived", "data/iris_like", "metrics/accuracy"]  # transitive
    # requirements: the domain's own (pyproject.toml), setup.py only, data plugin's through the graph, stdlib out
    assert catalog.domain_requirements == ["brainscore-core==2.5.0", "numpy<2", "scikit-learn<1.6"]
    assert catalog.plugins[("models", "antialiased-r50")].requirements == ["scikit-learn<1.6"]
    assert "joblib" in catalog.requirements(derived)
    assert catalog.plugins[("models", "20260408_2033_stl10")].requirements == []
    assert [(i.severity, i.file.rsplit("/", 2)[-2]) for i in catalog.issues] == [
        ("error", "broken_elsewhere"), ("warning", "20260408_2033_stl10")]
    # a warm read (facts cached by blob id) parses nothing and finds exactly the same
    assert catalog.parsed_files >= 10  # cold: every plugin's Python file was parsed
    again = load_catalog(bs_repo, "HEAD", cache_dir=tmp_path / "cache")
    assert again.parsed_files == 0
    assert {k: (p.identifiers, p.uses) for k, p in again.plugins.items()} == \
        {k: (p.identifiers, p.uses) for k, p in catalog.plugins.items()}
    # a change to one file: only that blob is parsed again, and its new facts are used
    path = bs_repo / ROOT / "benchmarks/derived-bench/__init__.py"
    path.write_text(path.read_text() + "\n# touched\n")
    commit_all(bs_repo, "touch one file")
    changed = load_catalog(bs_repo, "HEAD", cache_dir=tmp_path / "cache")
    assert changed.parsed_files == 1
    assert {k: p.uses for k, p in changed.plugins.items()} == {k: p.uses for k, p in catalog.plugins.items()}


def test_problems_elsewhere_are_warnings_and_changes_are_scoped(bs_repo, workspace):
    write(bs_repo, f"{ROOT}/models/convnextv2-tiny/__init__.py",
          "from bs_like import model_registry\nfrom sklearn.svm import SVC\n\n"
          "model_registry['convnextv2-tiny'] = lambda: SVC()\n")
    commit_all(bs_repo, "a new model")
    data = workspace.json("detect", "--repo", str(bs_repo), "--base", "HEAD~1")  # exit 0 despite the broken one
    assert data["new_models"] == ["convnextv2-tiny"]
    assert [(i["severity"], "outside this change" in i["message"]) for i in data["issues"]
            if "broken_elsewhere" in i["file"]] == [("warning", True)]
    # the change that added the broken plugin is the one that fails
    proc = workspace.cli("detect", "--repo", str(bs_repo), "--base", "HEAD~2", "--head", "HEAD~1")
    assert proc.returncode == 2 and "broken_elsewhere/__init__.py:2: error: syntax error" in proc.stderr
    # touching a data plugin re-scores every benchmark that reaches it, directly or through other plugins
    path = bs_repo / f"{ROOT}/data/iris_like/__init__.py"
    path.write_text(path.read_text() + "# tweak\n")
    commit_all(bs_repo, "touch the iris data")
    change, _ = detect(bs_repo, "HEAD~1", "HEAD")
    assert change.rescore_benchmarks == {
        "Derived-acc": ["uses changed data plugin iris_like (through data plugin derived)"],
        "Iris.private-acc": ["uses changed data plugin iris_like"]}


def reference_scores(env_python: Path, code_dir: Path) -> dict[tuple[str, str], tuple]:
    """What brainscore-core computes in the same environment: `score()` read by its own database helpers."""
    program = (
        "import json, bs_like\n"
        "from brainscore_core.submission.database import _retrieve_score_center, _retrieve_score_error\n"
        "out = []\n"
        f"for m in {MODELS!r}:\n"
        f"    for b in {BENCHMARKS!r}:\n"
        "        s = bs_like.score(m, b)\n"
        "        out.append([m, b, _retrieve_score_center(s), _retrieve_score_center(s.raw),\n"
        "                    _retrieve_score_center(s.attrs['ceiling']), _retrieve_score_error(s)])\n"
        "print(json.dumps(out))\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code_dir), "BS_INSTALL_DEPENDENCIES": "no", "HOME": "/tmp"}
    proc = subprocess.run([str(env_python), "-c", program], capture_output=True, text=True, env=env, check=True)
    return {(m, b): tuple(v) for m, b, *v in json.loads(proc.stdout.strip().splitlines()[-1])}


def check_against_brainscore_core(workspace, repo: Path, executor: str) -> None:
    result = workspace.json("run", "--repo", str(repo), "--base", "HEAD~2", "--head", "HEAD~1",
                            "--executor", executor)
    assert result["states"] == {"COMPLETED": 4}, json.dumps(result["pairs"], indent=1)
    board = workspace.json("leaderboard")
    assert sorted((r["model"], r["benchmark"]) for r in board) == [(m, b) for m in MODELS for b in BENCHMARKS]
    run_dir = next(workspace.state.glob("runs/*/"))
    root = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"])
    envs = {r["model"]: root / side_hashes(r["env_hash"])[0] for r in board}  # each model's side
    assert len(set(envs.values())) == 2  # one per model: only one of them has the git requirement
    benchmark_sides = {root / side_hashes(r["env_hash"])[1] for r in board}
    assert all("tinypkg" not in (env / "score-plugins.lock").read_text() for env in benchmark_sides)
    lock = (envs["alexnet_z_axis_iteration=1"] / "score-plugins.lock").read_text()
    for pin in ("brainscore-core==2.5.0", "joblib=="):
        assert pin in lock, pin  # the domain's pins, a data plugin's
    tinypkg = repo.parent / "tinypkg"  # the git requirement, pinned to the exact commit it resolved to
    commit = subprocess.run(["git", "-C", str(tinypkg), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert f"tinypkg @ git+file://{tinypkg}@{commit}\n" in lock, lock
    assert "numpy==1." in lock and "scikit-learn==1.5" in lock  # the repository's own pins hold
    assert "tinypkg" not in (envs[MODELS[1]] / "score-plugins.lock").read_text()
    for model, env in envs.items():
        reference = reference_scores(env / "bin/python", run_dir / "code")
        for row in (r for r in board if r["model"] == model):
            score, raw, ceiling, error = reference[(row["model"], row["benchmark"])]
            assert (row["score"], row["score_raw"], row["ceiling"], row["error"]) == (score, raw, ceiling, error)
            assert 0 < row["score"] < 1
            assert (row["score_raw"] != row["score"]) == (row["benchmark"] != "Derived-acc")  # ceiling 1.0
    logs = "".join(p.read_text() for p in run_dir.glob("logs/*.log"))
    assert "sandbox: bubblewrap" in logs and "no sandbox" not in logs


@pytest.fixture
def bs_workspace(workspace, tmp_path):
    git_req = make_git_package(tmp_path / "tinypkg")
    repo = build(tmp_path / "bs-scored", git_requirement=git_req)
    workspace.env.update({"SCORE_PLUGINS_SANDBOX": "bwrap", "SCORE_PLUGINS_REQUIREMENT_URL_SCHEMES": "git+https,git+file",
                          "SCORE_PLUGINS_PAIR_TIMEOUT": "600",
                          # locking and building run in the sandbox: it reads a git+file repository only if let
                          "SCORE_PLUGINS_SANDBOX_EXTRA_PATHS": str(tmp_path / "tinypkg")})
    return workspace, repo


def test_scores_equal_brainscore_core_locally_in_the_sandbox(bs_workspace):
    workspace, repo = bs_workspace
    check_against_brainscore_core(workspace, repo, "local")
    cache = workspace.state / "shared-cache"
    assert cache.is_dir()  # the shared cache exists and was mounted for the plugins


def test_scores_equal_brainscore_core_on_slurm(slurm_cluster, bs_workspace):
    workspace, repo = bs_workspace
    check_against_brainscore_core(workspace, repo, "slurm")


def test_git_requirements_need_an_allowed_scheme(bs_workspace):
    workspace, repo = bs_workspace
    workspace.env.pop("SCORE_PLUGINS_REQUIREMENT_URL_SCHEMES")
    data = workspace.json("plan", "--pairs", "--repo", str(repo), "--base", "HEAD~2", "--head", "HEAD~1")
    problems = {p["problem"] for p in data["cannot_run"]}
    assert any("URL scheme 'git+file' is not allowed" in (p or "") for p in problems), problems
    assert data["counts"]["to_run"] == 2  # pairs of the other model still run


def test_plugins_see_the_domain_package_and_brainscore_env(bs_workspace):
    """In the sandbox the type-level modules stay importable and BS_INSTALL_DEPENDENCIES is 'no'."""
    workspace, repo = bs_workspace
    write(repo, f"{ROOT}/benchmarks/probe/__init__.py",
          "import os\nfrom bs_like import benchmark_registry\nfrom bs_like.metrics import Ceiling\n"
          "from bs_like.benchmarks import BenchmarkBase, ceil_score\nfrom brainscore_core.metrics import Score\n\n"
          "class Probe:\n    def __call__(self, model):\n"
          "        assert os.environ['BS_INSTALL_DEPENDENCIES'] == 'no'\n"
          "        assert os.environ['BRAINIO_HOME'].startswith(os.environ['SCORE_PROBE_CACHE'])\n"
          "        assert not os.path.exists(os.path.join(os.path.dirname(__file__), '..', 'iris_like'))\n"
          "        return Score(0.5)\n\nbenchmark_registry['probe'] = Probe\n")
    commit_all(repo, "a probe benchmark")
    workspace.env["SCORE_PLUGINS_PLUGIN_ENV"] = \
        f"BS_INSTALL_DEPENDENCIES=no,SCORE_PROBE_CACHE={workspace.state / 'shared-cache'}"
    result = workspace.json("run", "--repo", str(repo), "--base", "HEAD~1", "--models",
                            "alexnet_z_axis_iteration=1")
    [pair] = result["pairs"]
    assert pair["state"] == "COMPLETED", pair
    assert os.path.isdir(workspace.state / "shared-cache")


def test_a_setup_py_that_cannot_be_read_statically_is_installed_in_the_job(bs_workspace):
    """Its requirements are read by running setup.py inside the sandbox (setup() captured, nothing built),
    installed there into the pair's work folder, and recorded in the pair's log."""
    workspace, repo = bs_workspace
    write(repo, f"{ROOT}/models/dynamic_setup/__init__.py",
          "from bs_like import model_registry\nimport six\nfrom sklearn.tree import DecisionTreeClassifier\n\n"
          "model_registry['dynamic-setup'] = lambda: DecisionTreeClassifier(max_depth=2, random_state=0)\n")
    write(repo, f"{ROOT}/models/dynamic_setup/setup.py",
          "from setuptools import setup\n\nwith open('reqs.txt') as f:\n    requirements = f.read().split()\n\n"
          "setup(name='dynamic-setup', install_requires=requirements)\n")
    write(repo, f"{ROOT}/models/dynamic_setup/reqs.txt", "six\n")
    commit_all(repo, "a model whose setup.py reads a file")
    proc = workspace.cli("detect", "--repo", str(repo), "--base", "HEAD~1", "--format", "json")
    assert "it is pip-installed inside the job (sandboxed)" in proc.stderr
    result = workspace.json("run", "--repo", str(repo), "--base", "HEAD~1", "--benchmarks", "Derived-acc")
    assert result["states"] == {"COMPLETED": 1}, result["pairs"]
    logs = "".join(p.read_text() for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "installing in the job (setup.py not readable statically): six" in logs
    spool = [json.loads(p.read_text()) for p in workspace.state.glob("runs/*/spool/*.json")]
    assert any(any(i.startswith("six==") for i in (r.get("installed_in_job") or [])) for r in spool)
