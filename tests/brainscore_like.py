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

# A vision-shaped benchmark through the model boundary, its data in a download cache, and models that keep their
# weights in a cache: what a hostile submitter would poison (issue 23). Not part of `build()`'s commits: the
# boundary tests add it with `add_cached_vision()`.
PARITY_MODEL = '''
        import json
        import os
        from pathlib import Path

        import numpy as np
        from brainscore_core.supported_data_standards.brainio.assemblies import BehavioralAssembly


        class ParityModel:
            """Right on stimulus i when i % 8 < its `p`: accuracy p/8. Its `p` is its weights, downloaded once into
            TORCH_HOME like a checkpoint and read from there ever after."""

            def __init__(self, identifier, p):
                self._identifier = identifier
                weights = Path(os.environ['TORCH_HOME']) / 'checkpoints' / f'{identifier}.json'
                if not weights.exists():
                    weights.parent.mkdir(parents=True, exist_ok=True)
                    weights.write_text(json.dumps({'p': p}))
                self.p = json.loads(weights.read_text())['p']

            @property
            def identifier(self):
                return self._identifier

            def visual_degrees(self):
                return 8

            def start_task(self, task, fitting_stimuli=None):
                assert task == 'label' and fitting_stimuli is None

            def look_at(self, stimuli, number_of_trials=1):
                values = []
                for stimulus_id in stimuli['stimulus_id']:
                    i = int(Path(stimuli.get_stimulus(stimulus_id)).read_text())
                    values.append([i % 2 if i % 8 < self.p else 1 - i % 2])
                return BehavioralAssembly(np.array(values), coords={
                    'stimulus_id': ('presentation', list(stimuli['stimulus_id'])),
                    'image_label': ('presentation', list(stimuli['image_label'])),
                    'choice': ('choice', ['label'])}, dims=['presentation', 'choice'])
        '''
CACHED_VISION = {
    f"{ROOT}/data/cached_stimuli/__init__.py": '''
        import json
        import os
        from pathlib import Path

        from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet

        from bs_like import data_registry, stimulus_set_registry

        N = 16


        def _home():
            # like brainio: downloaded once into BRAINIO_HOME, read from there ever after
            home = Path(os.environ['BRAINIO_HOME']) / 'cached_stimuli'
            if not (home / 'truth.json').exists():
                home.mkdir(parents=True, exist_ok=True)
                for i in range(N):
                    (home / f'stim_{i}.txt').write_text(str(i))
                (home / 'truth.json').write_text(json.dumps([i % 2 for i in range(N)]))
            return home


        def _stimuli():
            home = _home()
            stimuli = StimulusSet({'stimulus_id': [f's{i}' for i in range(N)], 'image_label': ['x'] * N})
            stimuli.identifier = 'Cached'
            stimuli.stimulus_paths = {f's{i}': home / f'stim_{i}.txt' for i in range(N)}
            return stimuli


        stimulus_set_registry['Cached'] = _stimuli
        data_registry['Cached'] = lambda: json.loads((_home() / 'truth.json').read_text())
        ''',
    f"{ROOT}/benchmarks/cached_vision/__init__.py": '''
        import numpy as np
        from brainscore_core.metrics import Score

        from bs_like import benchmark_registry, load_dataset, load_metric, load_stimulus_set
        from bs_like.benchmarks import BenchmarkBase, ceil_score


        class CachedVision(BenchmarkBase):
            """Vision-shaped: the model is asked what Brain-Score asks, and answers with a BehavioralAssembly."""

            def __init__(self):
                super().__init__(identifier='Cached-acc', ceiling=Score(0.8), version=1, parent='behavior')

            def __call__(self, candidate):
                stimuli = load_stimulus_set('Cached')
                truth = load_dataset('Cached')
                assert isinstance(candidate.identifier, str) and candidate.visual_degrees() == 8
                candidate.start_task('label', fitting_stimuli=None)
                predictions = candidate.look_at(stimuli, number_of_trials=1)
                by_id = dict(zip(predictions['stimulus_id'].values, predictions.values[:, 0]))
                raw = load_metric('accuracy')([by_id[s] for s in stimuli['stimulus_id']], truth)
                return ceil_score(raw, self.ceiling)


        benchmark_registry['Cached-acc'] = CachedVision
        ''',
    f"{ROOT}/models/parity/__init__.py": '''
        from bs_like import model_registry
        from .model import ParityModel

        model_registry['parity-5'] = lambda: ParityModel('parity-5', 5)
        model_registry['parity-6'] = lambda: ParityModel('parity-6', 6)
        ''',
    f"{ROOT}/models/parity/model.py": PARITY_MODEL,
}

# (a) a forged report to every inherited descriptor, (b) the benchmark, the metric and Score patched, (c) the
# benchmark's data read, (d) every cache variable's folder written, all at import time; then it answers honestly
# (p = 4: its honest ceiled score is 0.5 / 0.8 = 0.625). 'hostile-quiet' does (b)-(d) only.
HOSTILE = '''
import glob, json, os, sys
from pathlib import Path

from bs_like import model_registry
''' + textwrap.dedent(PARITY_MODEL) + '''

FORGED = b'{"status": "ok", "score_ceiled": 0.99, "score_raw": 0.99}\\n'


def attempt(name, action):
    try:
        outcome = action()
        print(f'ATTEMPT {name}: ' + ('SUCCEEDED' if outcome not in (False, None, []) else 'blocked'), flush=True)
    except Exception as exc:
        print(f'ATTEMPT {name}: blocked ({type(exc).__name__})', flush=True)


def descriptors():
    return {int(fd): os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')
            if os.path.exists(f'/proc/self/fd/{fd}') or os.path.islink(f'/proc/self/fd/{fd}')}


def forge_every_descriptor():
    held = descriptors()
    print('DESCRIPTORS ' + json.dumps([held[fd] for fd in sorted(held)]), flush=True)  # by number
    for fd in range(3, 1024):
        try:
            os.write(fd, FORGED)
        except OSError:
            pass


def patch_everything():
    import brainscore_core.metrics
    import bs_like.benchmarks
    Score = brainscore_core.metrics.Score
    bs_like.benchmarks.ceil_score = lambda score, ceiling: Score(0.99)
    Score.__truediv__ = lambda self, other: Score(0.99)
    for name in ('bs_like.benchmarks.cached_vision', 'bs_like.metrics.accuracy', 'bs_like.metrics.accuracy.metric'):
        try:
            __import__(name)
            module = sys.modules[name]
            for attr in dir(module):
                if isinstance(getattr(module, attr), type):
                    setattr(getattr(module, attr), '__call__', lambda self, *a, **k: Score(0.99))
            print(f'ATTEMPT import {name}: SUCCEEDED', flush=True)
        except ImportError:
            print(f'ATTEMPT import {name}: blocked', flush=True)


def shared_root():
    return Path(os.environ['TORCH_HOME']).parents[2]  # <shared_cache>/models/<plugin>/torch


def read_benchmark_data():
    root = shared_root()
    here = Path(sys.modules['bs_like'].__file__).parent
    attempt('read data plugin code', lambda: (here / 'data' / 'cached_stimuli' / '__init__.py').read_text())
    attempt('read benchmark plugin code', lambda: (here / 'benchmarks' / 'cached_vision' / '__init__.py').read_text())
    attempt('read benchmark data', lambda: [p.read_text() for p in [
        *root.glob('*/cached_stimuli/truth.json'), *root.glob('benchmarks/*/*/cached_stimuli/truth.json'),
        *root.glob('shared/*/cached_stimuli/truth.json')]])


def poison(folder):
    folder = Path(folder)
    (folder / 'cached_stimuli').mkdir(parents=True, exist_ok=True)
    (folder / 'cached_stimuli' / 'truth.json').write_text(json.dumps([1] * 16))
    (folder / 'checkpoints').mkdir(parents=True, exist_ok=True)
    for other in ('parity-5', 'parity-6'):
        (folder / 'checkpoints' / f'{other}.json').write_text(json.dumps({'p': 8}))
    return True


def poison_every_cache():
    for name in ('BRAINIO_HOME', 'BRAINSCORE_HOME', 'RESULTCACHING_HOME', 'TORCH_HOME', 'HF_HOME',
                 'XDG_CACHE_HOME', 'KERAS_HOME'):
        if name in os.environ:
            poison(os.environ[name])  # its own cache: allowed, and read by no one else
    root = shared_root()
    others = [p for p in [*root.glob('*'), *root.glob('*/*/*')] if p.is_dir() and '/models/hostile' not in str(p)]
    attempt('write other caches', lambda: [p for p in others if poison(p)])


if os.environ.get('SCORE_HOSTILE_LOUD', '1') == '1':
    forge_every_descriptor()
patch_everything()
read_benchmark_data()
poison_every_cache()

model_registry['hostile'] = lambda: ParityModel('hostile', 4)
'''


def add_cached_vision(repo: Path, hostile: bool = True) -> str:
    """Commit the vision-shaped benchmark, its cached data, the parity models and (optionally) the hostile ones."""
    for rel, text in CACHED_VISION.items():
        write(repo, rel, textwrap.dedent(text).lstrip())
    if hostile:
        write(repo, f"{ROOT}/models/hostile/__init__.py", HOSTILE.lstrip())
        write(repo, f"{ROOT}/models/hostile_quiet/__init__.py", HOSTILE.lstrip().replace(
            "os.environ.get('SCORE_HOSTILE_LOUD', '1') == '1'", "False").replace(
            "model_registry['hostile'] = lambda: ParityModel('hostile', 4)",
            "model_registry['hostile-quiet'] = lambda: ParityModel('hostile-quiet', 4)").replace(
            "'/models/hostile' not in", "'/models/hostile_quiet' not in"))
    return commit_all(repo, "a cached vision benchmark and models", author="Mallory <mallory@example.org>")


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
