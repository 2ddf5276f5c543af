"""Our `detect` against brainscore-core's `get_scoring_info`, the reference implementation.

brainscore-core is installed from PyPI into a scratch environment (without its heavy
dependencies, with what its plugin_management module imports), run on a checkout of the same
repository and change, and compared key by key. The documented differences are
the cases where brainscore-core is wrong; each is asserted here too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pipeline.stages.detect import detect
from tests.conftest import commit_all, git, write

BRAINSCORE_CORE = "brainscore-core==2.5.0"


@pytest.fixture(scope="session")
def brainscore_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    from uv import find_uv_bin

    venv = tmp_path_factory.mktemp("brainscore-core") / "venv"
    uv = find_uv_bin()
    subprocess.run([uv, "venv", "--quiet", str(venv)], check=True)
    python = str(venv / "bin/python")
    # brainscore-core's own dependencies are heavy (xarray, boto3, ...) and unused by its change parser
    subprocess.run([uv, "pip", "install", "--quiet", "--python", python, "--no-deps", BRAINSCORE_CORE], check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", python, "pytest-check", "pyyaml"], check=True)
    return str(venv / "bin/python")


def reference(python: str, repo: Path, base: str, head: str) -> dict:
    git(repo, "checkout", "--quiet", head)
    changed = git(repo, "diff", "--name-only", base, head)
    code = ("import sys\nfrom brainscore_core.plugin_management.parse_plugin_changes import get_scoring_info\n"
            "get_scoring_info(sys.argv[1], 'sklearn_scores')\n")
    out = subprocess.run([python, "-c", code, changed], cwd=repo, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def ours(repo: Path, base: str, head: str) -> dict:
    change, _ = detect(repo, base, head)
    return change.to_json()


def assert_agree(ref: dict, mine: dict, skip: tuple[str, ...] = ()) -> None:
    assert ref["modifies_plugins"] == mine["modifies_plugins"]
    assert ref["is_automergeable"] == mine["is_automergeable"]
    assert sorted(ref["test_all_plugins"]) == sorted(mine["test_all_plugins"])
    assert (ref["run_score"] == "True") == mine["run_score"]
    if "changed_plugins" not in skip:
        assert {k: sorted(v) for k, v in ref["changed_plugins"].items()} == mine["changed_plugins"]
    if ref["run_score"] == "True" and "ids" not in skip:
        assert sorted(ref["new_models"].split()) == sorted(mine["new_models"])
        assert sorted(ref["new_benchmarks"].split()) == sorted(mine["new_benchmarks"])


def test_agrees_on_the_example_history(brainscore_python, example_repo):
    for base, head in (("main~2", "main~1"), ("main~1", "main"), ("main~2", "main")):
        head_sha = git(example_repo, "rev-parse", head)
        base_sha = git(example_repo, "rev-parse", base)
        assert_agree(reference(brainscore_python, example_repo, base_sha, head_sha),
                     ours(example_repo, base_sha, head_sha))


def test_agrees_on_helpers_readme_data_metadata_and_multi_registration(brainscore_python, example_repo):
    cases = []

    def step(message, edit):
        before = git(example_repo, "rev-parse", "HEAD")
        edit()
        cases.append((message, before, commit_all(example_repo, message)))

    step("helpers", lambda: write(example_repo, "sklearn_scores/model_helpers/util.py", "X = 1\n"))
    step("readme", lambda: write(example_repo, "README.md", "new readme\n"))
    step("type-level file", lambda: write(example_repo, "sklearn_scores/metrics/README.md", "about metrics\n"))
    step("two models in one plugin", lambda: write(
        example_repo, "sklearn_scores/models/pair/__init__.py",
        "from sklearn_scores import model_registry\n"
        "model_registry['pair-a'] = lambda: None\n"
        'model_registry["pair-b"] = lambda: None\n'))
    step("metadata and code", lambda: (
        write(example_repo, "sklearn_scores/models/pair/metadata.yaml", "a: 1\n"),
        write(example_repo, "sklearn_scores/models/pair/model.py", "Z = 3\n")))
    for message, base, head in cases:
        ref, mine = reference(brainscore_python, example_repo, base, head), ours(example_repo, base, head)
        assert_agree(ref, mine), message


def test_where_brainscore_core_is_wrong(brainscore_python, example_repo):
    """Documented differences: three bugs in the reference, and one rule it lacks."""
    # 1. A commented-out registration is counted by its line regex; ast ignores comments.
    before = git(example_repo, "rev-parse", "HEAD")
    write(example_repo, "sklearn_scores/models/legacy/__init__.py",
          "from sklearn_scores import model_registry\n"
          "# model_registry['retired-model'] = lambda: None\n"
          "model_registry['current-model'] = lambda: None\n")
    head = commit_all(example_repo, "legacy")
    ref, mine = reference(brainscore_python, example_repo, before, head), ours(example_repo, before, head)
    assert "retired-model" in ref["new_models"].split()
    assert mine["new_models"] == ["current-model"]
    assert_agree(ref, mine, skip=("ids",))

    # 2. A metadata-only change is scored again by the reference, though no code changed.
    before = head
    write(example_repo, "sklearn_scores/models/knn/metadata.yaml", "architecture: knn\n")
    head = commit_all(example_repo, "metadata only")
    ref, mine = reference(brainscore_python, example_repo, before, head), ours(example_repo, before, head)
    assert ref["run_score"] == "True" and ref["changed_plugins"]["models"] == ["knn"]
    assert mine["run_score"] is False and mine["metadata_only_plugins"] == {"models": ["knn"]}
    assert ref["is_automergeable"] is mine["is_automergeable"] is False

    # 3. A deleted plugin is reported as changed (and would be scored); we report it as removed.
    before = head
    git(example_repo, "rm", "--quiet", "-r", "sklearn_scores/models/legacy")
    head = commit_all(example_repo, "remove legacy")
    ref, mine = reference(brainscore_python, example_repo, before, head), ours(example_repo, before, head)
    assert ref["changed_plugins"]["models"] == ["legacy"]
    assert mine["changed_plugins"]["models"] == [] and mine["removed_plugins"] == {"models": ["legacy"]}

    # 4. A changed data plugin: the reference scores nothing; we re-score the benchmarks that use it
    #    (DEVELOPERS.md: "a changed data/metric plugin re-scores the benchmarks that use it").
    before = head
    write(example_repo, "sklearn_scores/data/sklearn_toy/extra.py", "Y = 2\n")
    head = commit_all(example_repo, "data plugin")
    ref, mine = reference(brainscore_python, example_repo, before, head), ours(example_repo, before, head)
    assert ref["run_score"] == "False" and ref["changed_plugins"]["data"] == ["sklearn_toy"]
    assert mine["run_score"] is True and len(mine["rescore_benchmarks"]) == 4
    assert mine["changed_plugins"] == ref["changed_plugins"] and mine["is_automergeable"] == ref["is_automergeable"]
