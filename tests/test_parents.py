"""Each benchmark's `parent=` read as its own construction passes it (pipeline/catalog/parents.py), on a real git
repository with the shapes brain-score/vision's plugins use: a class reached through a module attribute
(scialom2024), module constants imported from another file (marques2020), a helper that makes the dataset node
(li2026), a region from a literal loop, the arguments of another file's function (allen2022_fmri), parent=None, and
what cannot be read, with its reason. Nothing runs: the plugins here would fail if imported."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from pipeline.catalog.plugins import load_catalog
from tests.conftest import commit_all, git, write

ROOT = "brainscore_vision"

FILES = {
    # the domain's base class and a helper class that passes **kwargs on (neural_common's NeuralBenchmark)
    "__init__.py": "benchmark_registry = {}\nraise RuntimeError('never imported')\n",
    "benchmarks/__init__.py": "from brainscore_core.benchmarks import BenchmarkBase\n",
    "benchmark_helpers/neural_common.py": """
        from brainscore_vision.benchmarks import BenchmarkBase


        class NeuralBenchmark(BenchmarkBase):
            def __init__(self, identifier, assembly, **kwargs):
                super(NeuralBenchmark, self).__init__(identifier=identifier, **kwargs)


        class Wrapper(BenchmarkBase):
            def __init__(self, identifier, factory):
                sample = factory('s1')
                region = sample.region
                super().__init__(identifier=identifier, version=1, parent=region)
        """,
    # scialom2024: `lambda: benchmark._Engineering('rgb')`, two classes with their own parents
    "benchmarks/scialom/__init__.py": """
        from brainscore_vision import benchmark_registry
        from . import benchmark

        benchmark_registry['S_rgbBehavioralAccuracyDistance'] = lambda: benchmark._Behavior('rgb')
        benchmark_registry['S_rgbEngineeringAccuracy'] = lambda: benchmark._Engineering('rgb')
        """,
    "benchmarks/scialom/benchmark.py": """
        import numpy
        from brainscore_vision.benchmarks import BenchmarkBase


        class _Behavior(BenchmarkBase):
            def __init__(self, dataset):
                super(_Behavior, self).__init__(identifier=f'S_{dataset}-behavioral_accuracy', version=1,
                                                parent='S')


        class _Engineering(BenchmarkBase):
            def __init__(self, dataset):
                self._dataset = dataset
                super(_Engineering, self).__init__(identifier=f'S_{self._dataset}-engineering_accuracy', version=1,
                                                   parent='S-top1')
        """,
    # marques2020: the parent is a module constant, set as a local, passed through a helper of another file
    "benchmarks/marques/__init__.py": """
        from brainscore_vision import benchmark_registry
        from .benchmarks.cav import MarquesRF, MarquesSF

        benchmark_registry['M_C-grating_summation_field'] = MarquesRF
        benchmark_registry['M_C-peak_sf'] = MarquesSF
        """,
    "benchmarks/marques/benchmarks/constants.py": "PARENT_SF = 'V1-spatial_frequency'\n",
    "benchmarks/marques/benchmarks/cav.py": """
        from brainscore_vision.benchmark_helpers.neural_common import NeuralBenchmark
        from .constants import PARENT_SF

        PARENT_RF = 'V1-receptive_field_size'


        def _Property(property_name, parent):
            return NeuralBenchmark(identifier=f'M_C-{property_name}', assembly=None, parent=parent, version=1)


        def MarquesRF():
            property_name = 'grating_summation_field'
            parent = PARENT_RF
            return _Property(property_name=property_name, parent=parent)


        def MarquesSF():
            return _Property('peak_sf', PARENT_SF)
        """,
    # li2026: the dataset node made by a helper; pls passes no parent (parent=None: a root, in no average)
    "benchmarks/li/__init__.py": """
        from brainscore_vision import benchmark_registry
        from .benchmark import LV1Ridge, LV1PLS

        benchmark_registry['L.V1-ridgecv'] = LV1Ridge
        benchmark_registry['L.V1-pls'] = LV1PLS
        """,
    "benchmarks/li/benchmark.py": """
        from brainscore_vision.benchmark_helpers.neural_common import NeuralBenchmark


        def _dataset_node(region: str) -> str:
            return f'L.{region}'


        def _Region(region, metric_type, parent=None):
            return NeuralBenchmark(identifier=f'L.{region}-{metric_type}', version=1, assembly=None, parent=parent)


        def LV1Ridge(): return _Region('V1', 'ridgecv', parent=_dataset_node('V1'))
        def LV1PLS(): return _Region('V1', 'pls')
        """,
    # a region from a literal loop, an f-string over it; the readout declared engineering; parent=None
    "benchmarks/loops/__init__.py": """
        from brainscore_vision import benchmark_registry
        from brainscore_vision.benchmark_helpers.neural_common import NeuralBenchmark, Wrapper

        REGIONS = ['V4', 'IT']


        def make(kind):
            for region in REGIONS:
                return NeuralBenchmark(identifier=f'Loop.{region}-{kind}', assembly=None, parent=region, version=2)


        def public(region):
            return NeuralBenchmark(identifier=f'P.{region}.public-pls', assembly=None, parent=None, version=1)


        def readout():
            return NeuralBenchmark(identifier='R-IT_accuracy', assembly=None, parent='engineering', version=1)


        def recurse(n):
            return recurse(n)


        benchmark_registry['Loop.IT-pls'] = lambda: make('pls')
        benchmark_registry['Loop.V4-pls'] = lambda: make('pls')
        benchmark_registry['Ppublic.V1-pls'] = lambda: public('V1')
        benchmark_registry['R.IT_readout-accuracy'] = readout
        benchmark_registry['W.V1-ridge'] = lambda: Wrapper('W.V1-ridge', factory=None)
        benchmark_registry['deep'] = lambda: recurse(1)
        benchmark_registry['unknown'] = lambda: helpers_from_pip.make()
        """,
}


def make_repo(path: Path) -> Path:
    git(path.parent, "init", "--quiet", "-b", "main", str(path))
    for rel, text in FILES.items():
        write(path, f"{ROOT}/{rel}", textwrap.dedent(text))
    commit_all(path, "vision-shaped benchmarks")
    return path


def test_each_parent_is_read_as_its_construction_passes_it(tmp_path):
    catalog = load_catalog(make_repo(tmp_path / "vision"), "HEAD", cache_dir=tmp_path / "cache")
    plugins = {p.name: p for p in catalog.of_type("benchmarks")}
    scialom, marques, li, loops = (plugins[n] for n in ("scialom", "marques", "li", "loops"))
    # not the parent named in the id (S): the engineering class's own, and the id it runs as
    assert scialom.parents == {"S_rgbBehavioralAccuracyDistance": "S", "S_rgbEngineeringAccuracy": "S-top1"}
    assert scialom.runtime_ids == {"S_rgbBehavioralAccuracyDistance": "S_rgb-behavioral_accuracy",
                                   "S_rgbEngineeringAccuracy": "S_rgb-engineering_accuracy"}
    # a module constant through a local and a helper; an imported one through the call's arguments
    assert marques.parents == {"M_C-grating_summation_field": "V1-receptive_field_size",
                               "M_C-peak_sf": "V1-spatial_frequency"}
    assert marques.versions == {"M_C-grating_summation_field": 1, "M_C-peak_sf": 1}
    # the dataset node the helper makes; no parent passed is a root (BenchmarkBase's default), not a problem
    assert li.parents == {"L.V1-ridgecv": "L.V1", "L.V1-pls": None} and not li.parent_problems
    # the loop's two values, told apart by the identifier the same loop value makes
    assert (loops.parents["Loop.IT-pls"], loops.parents["Loop.V4-pls"]) == ("IT", "V4")
    assert loops.versions["Loop.IT-pls"] == 2
    assert loops.parents["Ppublic.V1-pls"] is None and loops.runtime_ids["Ppublic.V1-pls"] == "P.V1.public-pls"
    assert loops.parents["R.IT_readout-accuracy"] == "engineering"  # not IT, which the id names
    problems = loops.parent_problems
    assert problems["W.V1-ridge"] == "parent=region: factory('s1') is made at run time"
    assert problems["deep"].startswith("the construction is too deep to follow statically")
    assert problems["unknown"] == "no parent= on the way to helpers_from_pip.make: helpers_from_pip is not " \
                                  "defined by name in __init__.py"
    assert set(problems) == {"W.V1-ridge", "deep", "unknown"}


def test_the_walk_is_bounded_in_time(tmp_path):
    """A plugin written to make the walk explode (every call doubling the possible values, a deep chain of calls)
    ends with a reason, quickly."""
    chain = "\n".join(f"def f{i}(x):\n    return f{i + 1}(x + x)\n" for i in range(200))
    write(tmp_path / "repo", f"{ROOT}/__init__.py", "benchmark_registry = {}\n")
    write(tmp_path / "repo", f"{ROOT}/benchmarks/boom/__init__.py", textwrap.dedent("""
        from brainscore_vision import benchmark_registry
        A = 'a' if x else 'b'
        B = f'{A}{A}{A}{A}{A}{A}{A}{A}'


        def f200(x):
            return Bench(identifier=x, parent=B + B + B + B)


        benchmark_registry['boom'] = lambda: f0('x')
        benchmark_registry['wide'] = lambda: Bench(identifier='wide', parent=B + B + B)
        """) + chain)
    git(tmp_path, "init", "--quiet", "-b", "main", str(tmp_path / "repo"))
    commit_all(tmp_path / "repo", "hostile")
    start = time.process_time()
    catalog = load_catalog(tmp_path / "repo", "HEAD")
    assert time.process_time() - start < 30  # a bound, not a benchmark: the walk stops on its caps
    plugin = catalog.plugins[("benchmarks", "boom")]
    assert plugin.parent_problems == {
        "boom": "the construction is too deep to follow statically (more than 24 calls deep)",
        "wide": "parent=B + B + B: more than 64 possible values"}


def test_parents_are_walked_again_only_where_a_file_their_walk_read_changed(tmp_path):
    """A folder's parents are cached with the blob ids of the files its walks read (`parentcache`): a warm run walks
    and parses nothing; a change to a helper walks again the folders that went through it, and only those, with the
    helper's new answer."""
    repo, cache = make_repo(tmp_path / "vision"), tmp_path / "cache"

    def read() -> tuple:
        catalog = load_catalog(repo, "HEAD", cache_dir=cache)
        return catalog, {p.name: (p.parents, p.versions, p.parent_problems, p.runtime_ids, p.parent_read_by)
                         for p in catalog.of_type("benchmarks")}

    cold, answers = read()
    assert cold.walked_folders == 4 and cold.parsed["construction"] >= len(FILES)
    warm, again = read()
    assert (warm.walked_folders, warm.parsed, again) == (0, {}, answers)
    assert [str(i) for i in warm.issues] == [str(i) for i in cold.issues]

    helper = repo / ROOT / "benchmark_helpers/neural_common.py"  # marques, li and loops go through it; scialom not
    helper.write_text(helper.read_text().replace("parent=region)", "parent='V1')"))
    commit_all(repo, "the helper's Wrapper passes a literal parent")
    changed, after = read()
    assert changed.walked_folders == 3 and changed.parsed == {"construction": 1}
    assert after["loops"][0]["W.V1-ridge"] == "V1" and "W.V1-ridge" not in after["loops"][2]
    assert {name: a for name, a in after.items() if name != "loops"} == \
        {name: a for name, a in answers.items() if name != "loops"}
    fresh = load_catalog(repo, "HEAD", cache_dir=tmp_path / "fresh")  # the same answers as a cold read
    assert {p.name: (p.parents, p.parent_problems) for p in fresh.of_type("benchmarks")} == \
        {name: (a[0], a[2]) for name, a in after.items()}


def _hostile_repo(path: Path, plugin: str) -> Path:
    write(path, f"{ROOT}/__init__.py", "benchmark_registry = {}\n")
    write(path, f"{ROOT}/benchmarks/hostile/__init__.py", plugin)
    git(path.parent, "init", "--quiet", "-b", "main", str(path))
    commit_all(path, "hostile")
    return path


def test_the_ids_of_one_folder_share_a_budget_of_steps(tmp_path):
    """Many ids, each walking nearly its own bound of 20,000 steps, cannot make a folder's read take ids x 20,000:
    past 100,000 steps for the folder the rest are listed with that reason, without being walked."""
    parts = "".join("{A}" for _ in range(1000))
    twice = "".join("{P}" for _ in range(30))
    ids = "\n".join(f"benchmark_registry['id{i}'] = lambda: Bench(identifier='id{i}', parent=g())" for i in range(300))
    plugin = f"from brainscore_vision import benchmark_registry\nA = 'a'\nP = f'{parts}'\nQ = f'{twice}'\n\n\n" \
             f"def g():\n    return Q\n\n\n{ids}\n"
    catalog = load_catalog(_hostile_repo(tmp_path / "repo", plugin), "HEAD")
    problems = catalog.plugins[("benchmarks", "hostile")].parent_problems
    assert len(problems) == 300
    assert problems["id0"] == "the construction is too deep to follow statically (more than 20000 steps to follow)"
    assert problems["id299"] == "the construction is too deep to follow statically (its plugin's ids took more " \
                                "than 100,000 steps together)"
    assert sum("together" in why for why in problems.values()) >= 290


def test_a_format_string_of_many_braces_is_read_in_one_pass(tmp_path):
    """`.format` on a text of thousands of `{` is read in time linear in the text (a regular expression looking for
    a format specification in it backtracked quadratically: a twentieth of a second or more per call on 4,000
    characters, here 1,200 calls)."""
    ids = "\n".join(f"benchmark_registry['id{i}'] = lambda: Bench(identifier=made(), parent=T.format(C))"
                    for i in range(20))  # each id: one call per value of the loop (60)
    plugin = f"from brainscore_vision import benchmark_registry\nA = {'{' * 1000!r}\nT = A + A + A + A\n" \
             f"for C in {[str(i) for i in range(60)]!r}:\n    pass\n{ids}\n"
    start = time.process_time()
    catalog = load_catalog(_hostile_repo(tmp_path / "repo", plugin), "HEAD")
    assert time.process_time() - start < 10  # a bound, not a benchmark: each call is one pass over 4,000 characters
    plugin = catalog.plugins[("benchmarks", "hostile")]
    assert plugin.parents["id7"] == "{" * 2000 and plugin.parent_read_by["id7"] == "construction"  # '{{' is '{'
