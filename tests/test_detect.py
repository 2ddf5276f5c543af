"""Detection rules on real git histories: additions, helpers, data/metric dependencies,
renames, deletions, metadata, and bad input."""

from __future__ import annotations

import json
import shutil

from pipeline.stages.detect import detect
from tests.conftest import commit_all, git, write


def run_detect(repo, base="HEAD~1", head="HEAD"):
    change, _ = detect(repo, base, head)
    return change


def test_new_model_commit(example_repo):
    change = run_detect(example_repo, "HEAD~2", "HEAD~1")
    assert change.modifies_plugins and change.run_score and change.is_automergeable
    assert change.changed_plugins == {"models": ["gaussian_nb"], "benchmarks": [], "data": [], "metrics": []}
    assert change.new_models == ["gaussian-nb"] and change.new_benchmarks == []
    assert change.test_all_plugins == [] and change.rescore_benchmarks == {}


def test_new_benchmark_commit(example_repo):
    change = run_detect(example_repo)
    assert change.new_benchmarks == ["iris-accuracy"] and change.new_models == []
    assert change.changed_plugins["benchmarks"] == ["iris_cv"]


def test_changed_data_plugin_rescores_exactly_the_benchmarks_that_use_it(example_repo):
    write(example_repo, "sklearn_scores/data/extra_toy/__init__.py",
          "from sklearn import datasets\nfrom sklearn_scores import data_registry\n\n"
          "data_registry['digits-small'] = lambda: datasets.load_digits(n_class=4, return_X_y=True)\n")
    write(example_repo, "sklearn_scores/benchmarks/small_digits/__init__.py",
          "from sklearn_scores import benchmark_registry, load_dataset, load_metric\n"
          "from sklearn_scores.benchmark_helpers import CrossValidatedBenchmark\n\n"
          "benchmark_registry['digits4-accuracy'] = lambda: CrossValidatedBenchmark(\n"
          "    'digits4-accuracy', data=lambda: load_dataset('digits-small'), metric=lambda: load_metric('accuracy'))\n")
    commit_all(example_repo, "add a data plugin used by one benchmark")
    write(example_repo, "sklearn_scores/data/extra_toy/__init__.py",
          "from sklearn import datasets\nfrom sklearn_scores import data_registry\n\n"
          "data_registry['digits-small'] = lambda: datasets.load_digits(n_class=5, return_X_y=True)\n")
    commit_all(example_repo, "change that data plugin")
    change = run_detect(example_repo)
    assert change.changed_plugins["data"] == ["extra_toy"]
    assert change.new_models == [] and change.new_benchmarks == []
    assert change.rescore_benchmarks == {"digits4-accuracy": ["uses changed data plugin extra_toy"]}
    assert change.run_score and change.is_automergeable

    # the shared metric plugin is used by every benchmark
    path = example_repo / "sklearn_scores/metrics/classification/__init__.py"
    path.write_text(path.read_text() + "\n# tweak\n")
    commit_all(example_repo, "touch the metric plugin")
    change = run_detect(example_repo)
    assert sorted(change.rescore_benchmarks) == ["breast_cancer-balanced_accuracy", "digits-accuracy",
                                                 "digits4-accuracy", "iris-accuracy", "wine-accuracy"]


def test_helpers_and_type_level_files_mean_test_all(example_repo):
    path = example_repo / "sklearn_scores/benchmark_helpers/__init__.py"
    path.write_text(path.read_text() + "\n# tweak\n")
    commit_all(example_repo, "touch benchmark helpers")
    change = run_detect(example_repo)
    assert change.test_all_plugins == ["benchmarks"]
    assert not change.is_automergeable and change.modifies_plugins

    write(example_repo, "sklearn_scores/data/README.md", "about data plugins\n")
    commit_all(example_repo, "a file directly in data/")
    change = run_detect(example_repo)
    assert change.test_all_plugins == ["benchmarks", "data"]
    assert change.rescore_benchmarks == {} and not change.run_score  # tested, not re-scored


def test_non_plugin_change(example_repo):
    write(example_repo, "README.md", "changed\n")
    commit_all(example_repo, "docs")
    change = run_detect(example_repo)
    assert not change.modifies_plugins and not change.is_automergeable and not change.run_score
    assert change.changed_plugins == {"models": [], "benchmarks": [], "data": [], "metrics": []}


def test_mixed_change_is_not_automergeable_but_still_scored(example_repo):
    write(example_repo, "README.md", "changed\n")
    path = example_repo / "sklearn_scores/models/knn/__init__.py"
    path.write_text(path.read_text().replace("n_neighbors=5", "n_neighbors=7"))
    commit_all(example_repo, "docs and a model")
    change = run_detect(example_repo)
    assert change.new_models == ["knn-5"] and not change.is_automergeable


def test_rename_and_delete(example_repo):
    git(example_repo, "mv", "sklearn_scores/models/knn", "sklearn_scores/models/nearest_neighbours")
    shutil.rmtree(example_repo / "sklearn_scores/models/random_forest")
    commit_all(example_repo, "rename knn, drop random forest")
    change = run_detect(example_repo)
    assert change.changed_plugins["models"] == ["nearest_neighbours"]
    assert change.removed_plugins == {"models": ["knn", "random_forest"]}
    assert change.new_models == ["knn-5"]


def test_metadata_only_change_is_never_automergeable_and_not_rescored(example_repo):
    write(example_repo, "sklearn_scores/models/knn/metadata.yaml", "architecture: knn\n")
    commit_all(example_repo, "metadata")
    change = run_detect(example_repo)
    assert change.modifies_plugins and not change.is_automergeable
    assert change.metadata_only_plugins == {"models": ["knn"]}
    assert change.new_models == [] and not change.run_score


def test_invalid_identifier_is_refused_and_valid_plugins_in_the_change_still_count(example_repo, workspace):
    write(example_repo, "sklearn_scores/models/evil/__init__.py",
          "from sklearn_scores import model_registry\n"
          "model_registry['x\\nrm -rf $(pwd)'] = lambda: None\n"
          "model_registry['fine-model'] = lambda: None\n")
    write(example_repo, "sklearn_scores/models/also_fine/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['also-fine'] = lambda: None\n")
    commit_all(example_repo, "one bad id, two good ones")
    proc = workspace.cli("detect", "--repo", str(example_repo), "--base", "HEAD~1", "--head", "HEAD",
                         "--format", "json")
    assert proc.returncode == 2
    assert "sklearn_scores/models/evil/__init__.py:2: error" in proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert data["new_models"] == ["also-fine", "fine-model"]
    assert [(i["line"], i["severity"]) for i in data["issues"]] == [(2, "error")]


def test_bad_repository_and_revision_exit_2(workspace, example_repo, tmp_path):
    proc = workspace.cli("detect", "--repo", str(tmp_path), "--base", "HEAD~1")
    assert proc.returncode == 2 and "not a git repository" in proc.stderr
    proc = workspace.cli("detect", "--repo", str(example_repo), "--base", "no-such-rev")
    assert proc.returncode == 2 and "unknown revision 'no-such-rev'" in proc.stderr
    proc = workspace.cli("detect", "--repo", str(example_repo), "--base", "--upload-pack=evil")
    assert proc.returncode == 2
    proc = workspace.cli("detect", "--repo", str(tmp_path / "missing"), "--base", "HEAD")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_an_id_cannot_be_taken_over_by_another_folder(example_repo, workspace):
    write(example_repo, "sklearn_scores/models/impostor/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.svm import SVC\n\n"
          "model_registry['knn-5'] = lambda: SVC()\nmodel_registry['impostor-own'] = lambda: SVC()\n")
    commit_all(example_repo, "register somebody else's id", author="Mallory <mallory@example.org>")
    proc = workspace.cli("detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["new_models"] == ["impostor-own"]  # its own id is fine; knn-5 stays with its owner
    [issue] = [i for i in data["issues"] if i["severity"] == "error"]
    assert "impostor/__init__.py" in issue["file"] and "'knn-5' is already registered by" in issue["message"]
