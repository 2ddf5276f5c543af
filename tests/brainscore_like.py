"""A plugin repository shaped like brain-score/vision, built by the tests (CI never depends on the real one).

What it has, each seen in the real repository:
- the domain package imports brainscore-core (from PyPI) and is declared only in the root `pyproject.toml`;
  its loaders go through brainscore-core's `import_plugin`, like `brainscore_vision/__init__.py`;
- type-level modules the plugins import (`metrics/__init__.py` defines `Ceiling`, `benchmarks/__init__.py`
  defines `ceil_score`), and a `benchmark_helpers` package;
- folders `antialiased-r50` (hyphen) and `20260408_2033_stl10` (leading digits); ids with `:` and `=`;
- a model whose dependency is declared only in `setup.py`; a requirement naming a standard-library module;
  a `git+` requirement (served by a local repository the test makes);
- a data plugin with its own requirement loaded through an f-string whose part comes from a call site
  (`load_dataset(f'Iris.{access}')`), a keyword loader (`load_dataset(identifier='Derived')`), and a data
  plugin that loads another (data -> data), a ceiling loaded with `load_ceiling`;
- benchmarks that are `BenchmarkBase` subclasses with `Score` ceilings, returning ceiled `Score`s;
- a broken plugin elsewhere in the repository.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.conftest import commit_all, write

ROOT = "bs_like"
CORE = "brainscore-core==2.5.0"

DOMAIN_INIT = '''
from typing import Callable, Dict

from brainscore_core.metrics import Score
from brainscore_core.plugin_management.import_plugin import import_plugin

data_registry: Dict[str, Callable] = {}
stimulus_set_registry: Dict[str, Callable] = {}
metric_registry: Dict[str, Callable] = {}
benchmark_registry: Dict[str, Callable] = {}
model_registry: Dict[str, Callable] = {}


def load_dataset(identifier: str):
    import_plugin('bs_like', 'data', identifier)
    return data_registry[identifier]()


def load_stimulus_set(identifier: str):
    import_plugin('bs_like', 'data', identifier, registry_prefix='stimulus_set')
    return stimulus_set_registry[identifier]()


def load_metric(identifier: str, *args, **kwargs):
    import_plugin('bs_like', 'metrics', identifier)
    return metric_registry[identifier](*args, **kwargs)


def load_ceiling(identifier: str, *args, **kwargs):
    return load_metric(identifier, *args, **kwargs)


def load_benchmark(identifier: str):
    import_plugin('bs_like', 'benchmarks', identifier)
    return benchmark_registry[identifier]()


def load_model(identifier: str):
    import_plugin('bs_like', 'models', identifier)
    return model_registry[identifier]()


def score(model_identifier: str, benchmark_identifier: str) -> Score:
    model = load_model(model_identifier)
    benchmark = load_benchmark(benchmark_identifier)
    result = benchmark(model)
    result.attrs['model_identifier'] = model_identifier
    result.attrs['benchmark_identifier'] = benchmark_identifier
    return result
'''

PYPROJECT = f'''
[project]
name = "bs_like"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [
    "{CORE}",
    "numpy<2",
    "scikit-learn<1.6",
]
'''

FILES = {
    "README.md": "A Brain-Score-shaped plugin repository for tests.\n",
    f"{ROOT}/__init__.py": DOMAIN_INIT,
    f"{ROOT}/metrics/__init__.py": '''
        from brainscore_core.metrics import Metric, Score


        class Ceiling:
            def __call__(self, *args, **kwargs) -> Score:
                raise NotImplementedError()
        ''',
    f"{ROOT}/benchmarks/__init__.py": '''
        from brainscore_core.benchmarks import BenchmarkBase
        from brainscore_core.metrics import Score


        def ceil_score(score: Score, ceiling: Score) -> Score:
            ceiled_score = score / ceiling
            ceiled_score.attrs[Score.RAW_VALUES_KEY] = score
            ceiled_score.attrs['ceiling'] = ceiling
            return ceiled_score
        ''',
    f"{ROOT}/models/__init__.py": "",
    f"{ROOT}/data/__init__.py": "",
    f"{ROOT}/benchmark_helpers/__init__.py": '''
        import numpy as np


        def split(features, labels, seed=0):
            order = np.random.RandomState(seed).permutation(len(labels))
            half = len(order) // 2
            return (features[order[:half]], labels[order[:half]]), (features[order[half:]], labels[order[half:]])
        ''',
    # data: a stimulus set, two assemblies, its own requirement
    f"{ROOT}/data/iris_like/__init__.py": '''
        from sklearn import datasets

        from bs_like import data_registry, stimulus_set_registry


        def _iris(access):
            features, labels = datasets.load_iris(return_X_y=True)
            return (features, labels) if access == 'private' else (features[::2], labels[::2])


        data_registry['Iris.private'] = lambda: _iris('private')
        data_registry['Iris.public'] = lambda: _iris('public')
        stimulus_set_registry['Iris'] = lambda: datasets.load_iris().feature_names
        ''',
    f"{ROOT}/data/iris_like/requirements.txt": "joblib\n",
    # data -> data
    f"{ROOT}/data/derived/__init__.py": '''
        from bs_like import data_registry, load_dataset

        data_registry['Derived'] = lambda: load_dataset('Iris.public')
        ''',
    # metrics: an accuracy and a ceiling (a Score)
    f"{ROOT}/metrics/accuracy/__init__.py": '''
        from bs_like import metric_registry
        from .metric import Accuracy

        metric_registry['accuracy'] = Accuracy
        ''',
    f"{ROOT}/metrics/accuracy/metric.py": '''
        import numpy as np
        from brainscore_core.metrics import Metric, Score


        class Accuracy(Metric):
            def __call__(self, predictions, labels) -> Score:
                score = Score(float(np.mean(np.asarray(predictions) == np.asarray(labels))))
                score.attrs['error'] = 0.01
                return score
        ''',
    f"{ROOT}/metrics/internal_consistency/__init__.py": '''
        from bs_like import metric_registry
        from bs_like.metrics import Ceiling
        from brainscore_core.metrics import Score


        class FixedCeiling(Ceiling):
            def __call__(self, *args, **kwargs):
                return Score(0.96)


        metric_registry['internal_consistency'] = FixedCeiling
        ''',
    # benchmarks
    f"{ROOT}/benchmarks/iris_like/__init__.py": '''
        from bs_like import benchmark_registry
        from .benchmark import IrisPrivate

        benchmark_registry['Iris.private-acc'] = IrisPrivate
        ''',
    f"{ROOT}/benchmarks/iris_like/benchmark.py": '''
        from bs_like import load_ceiling, load_dataset, load_metric
        from bs_like.benchmark_helpers import split
        from bs_like.benchmarks import BenchmarkBase, ceil_score


        def load_assembly(access):
            return load_dataset(f'Iris.{access}')


        class _IrisBenchmark(BenchmarkBase):
            def __init__(self, access):
                self._assembly = load_assembly(access=access)
                self._metric = load_metric('accuracy')
                ceiling = load_ceiling('internal_consistency')()
                super().__init__(identifier=f'Iris.{access}-acc', ceiling=ceiling, version=1, parent='behavior')

            def __call__(self, candidate):
                (train_x, train_y), (test_x, test_y) = split(*self._assembly)
                candidate.fit(train_x, train_y)
                raw = self._metric(candidate.predict(test_x), test_y)
                return ceil_score(raw, self.ceiling)


        def IrisPrivate():
            return _IrisBenchmark('private')
        ''',
    f"{ROOT}/benchmarks/derived-bench/__init__.py": '''
        from bs_like import benchmark_registry, load_dataset, load_metric
        from bs_like.benchmark_helpers import split
        from bs_like.benchmarks import BenchmarkBase, ceil_score
        from brainscore_core.metrics import Score


        class Derived(BenchmarkBase):
            def __init__(self):
                super().__init__(identifier='Derived-acc', ceiling=Score(1.0), version=1, parent='behavior')

            def __call__(self, candidate):
                (train_x, train_y), (test_x, test_y) = split(*load_dataset(identifier='Derived'))
                candidate.fit(train_x, train_y)
                return ceil_score(load_metric('accuracy')(candidate.predict(test_x), test_y), self.ceiling)


        benchmark_registry['Derived-acc'] = Derived
        ''',
    # models: a hyphenated folder, dependency only in setup.py; a digit-leading folder with ':' and '=' ids
    f"{ROOT}/models/antialiased-r50/__init__.py": '''
        from bs_like import model_registry
        from .model import get_model

        model_registry['convnext_base:clip_laiona_augreg_ft_in1k_384'] = lambda: get_model(1)
        ''',
    f"{ROOT}/models/antialiased-r50/model.py": '''
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer


        def get_model(n_features):
            # deliberately weak (one feature), so that its ceiled score stays below the ceiling
            return make_pipeline(FunctionTransformer(lambda x: x[:, :n_features]), LogisticRegression(max_iter=500))
        ''',
    f"{ROOT}/models/antialiased-r50/setup.py": '''
        from setuptools import setup, find_packages

        requirements = ["scikit-learn<1.6",
                        ]

        setup(packages=find_packages(exclude=['tests']), install_requires=requirements)
        ''',
    f"{ROOT}/models/antialiased-r50/test.py": '''
        from bs_like import load_model, load_benchmark


        def test_loads():
            assert load_model('convnext_base:clip_laiona_augreg_ft_in1k_384') is not None
            load_benchmark('no-such-benchmark-only-in-a-test')
        ''',
    f"{ROOT}/models/20260408_2033_stl10/__init__.py": '''
        from bs_like import model_registry
        from sklearn.tree import DecisionTreeClassifier

        model_registry['alexnet_z_axis_iteration=1'] = lambda: DecisionTreeClassifier(max_depth=1, random_state=0)
        ''',
    f"{ROOT}/models/20260408_2033_stl10/requirements.txt": "imp\n",
}

BROKEN = {f"{ROOT}/benchmarks/broken_elsewhere/__init__.py": "from bs_like import benchmark_registry\n"
                                                           "benchmark_registry['Broken'] = (\n"}


SKELETON = ("README.md", f"{ROOT}/__init__.py", f"{ROOT}/metrics/__init__.py", f"{ROOT}/benchmarks/__init__.py",
            f"{ROOT}/models/__init__.py", f"{ROOT}/data/__init__.py", f"{ROOT}/benchmark_helpers/__init__.py")


def build(repo: Path, git_requirement: str | None = None) -> Path:
    """Three commits: the domain package alone; every plugin; a broken plugin. `HEAD~2..HEAD~1` adds the plugins."""
    import subprocess

    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    write(repo, "pyproject.toml", textwrap.dedent(PYPROJECT).lstrip())
    for rel in SKELETON:
        write(repo, rel, textwrap.dedent(FILES[rel]).lstrip())
    commit_all(repo, "the domain package", author="Core Team <core@example.org>")
    for rel, text in FILES.items():
        write(repo, rel, textwrap.dedent(text).lstrip())
    if git_requirement:
        write(repo, f"{ROOT}/models/20260408_2033_stl10/requirements.txt", f"imp\n{git_requirement}\n")
    commit_all(repo, "Brain-Score-shaped plugins", author="Plugin Author <author@example.org>")
    for rel, text in BROKEN.items():
        write(repo, rel, text)
    commit_all(repo, "a broken benchmark elsewhere", author="Someone Else <else@example.org>")
    return repo


def make_git_package(path: Path) -> str:
    """A tiny installable package in a local git repository; returns its `name @ git+file://` requirement."""
    import subprocess

    write(path, "pyproject.toml", '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = '
          '"setuptools.build_meta"\n\n[project]\nname = "tinypkg"\nversion = "0.1"\n')
    write(path, "tinypkg/__init__.py", "VALUE = 42\n")
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(path)], check=True)
    commit_all(path, "tiny package")
    return f"tinypkg @ git+file://{path}"
