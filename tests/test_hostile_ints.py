"""Integers read from submitted text are bounded (issue 35; hostile review round 2, F1), and a crafted website dump
is bad input (F7).

Python prints no integer of more than 4300 decimal digits, but reads a hexadecimal literal of any length: such a
value in a plugin's file (Python, YAML metadata, setup.py, TOML) crashed `detect` with "unexpected ValueError", and
since the facts cache was then never saved, every later build crashed the same way. Now an integer of more than 100
digits refuses its file by name (`pipeline.bigints`), the rest of the change proceeds, and what reads, caches or
prints facts survives a value that slips past anyway."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, commit_all, write

REASON = "an integer of more than 100 digits; not read"
HEX = "0x" + "f" * 5000  # about 6000 decimal digits: Python reads it, but cannot print it
HOSTILE_INTS = [HEX, "-" + HEX, "0o" + "7" * 200, "0b" + "1" * 400, "0x" + "_".join(["ff"] * 50),
                "0x" + "f" * 84]  # 84 hex digits: just over 10**100
BENIGN_INTS = ["9" * 100, "0x" + "f" * 83, "-" + "9" * 100, "0", "40"]  # 100 digits at most: read as ever


@pytest.mark.parametrize("literal", HOSTILE_INTS)
def test_an_integer_literal_over_the_bound_refuses_its_python_file(literal):
    from pipeline.catalog.blobfacts import facts_of_kinds

    source = (f"from sklearn_scores import benchmark_registry\nUNUSED = {literal}\n"
              f"benchmark_registry['b'] = lambda: make(parent=f'p{{UNUSED}}')\n").encode()
    facts = facts_of_kinds(["py", "construction"], source)
    assert facts["py"]["refused"] == REASON and facts["construction"] == {"refused": REASON}
    json.dumps(facts)  # the facts cache can hold them


@pytest.mark.parametrize("literal", BENIGN_INTS)
def test_an_integer_of_at_most_100_digits_is_read_as_before(literal):
    from pipeline.catalog.blobfacts import facts_of_kinds

    source = f"from sklearn_scores import model_registry\nN = {literal}\nmodel_registry['m'] = lambda: N\n".encode()
    facts = facts_of_kinds(["py", "construction"], source)
    assert not facts["py"]["refused"] and "construction" in facts["construction"]
    assert facts["py"]["registrations"][0]["key"] == "m"
    assert json.loads(json.dumps(facts)) == facts


def test_the_parse_workers_refuse_it_too_instead_of_dying_on_it():
    """A dead worker's file is refused as transient and parsed again on every run: the worker must answer."""
    from pipeline.catalog.parsepool import parse_alone

    found = parse_alone("a" * 40, f"UNUSED = {HEX}\n".encode(), ["py", "construction"])
    assert found is not None and found["py"]["refused"] == REASON and found["construction"] == {"refused": REASON}


YAML_INTS = [HEX, "-" + HEX, "0b" + "1" * 400, "0" + "7" * 200, "9" * 5000, ":".join(["59"] * 100),
             "1" + "_" * 2000]


@pytest.mark.parametrize("literal", YAML_INTS)
def test_a_yaml_integer_over_the_bound_is_refused_before_it_is_converted(literal):
    from pipeline import safe_yaml

    with pytest.raises(safe_yaml.Refused, match="an integer of more than 100 digits"):
        safe_yaml.load(f"resources: {{memory: {literal}}}\n")
    with pytest.raises(safe_yaml.Refused, match="an integer of more than 100 digits"):
        safe_yaml.load(f"? {literal}\n: key\n")  # an explicit key: a simple one is 1024 characters at most
    assert safe_yaml.load("a: " + "9" * 100 + "\nb: 0x" + "f" * 83 + "\nc: 1:30\n") == \
        {"a": 10 ** 100 - 1, "b": 16 ** 83 - 1, "c": 90}


def test_metadata_and_environment_files_with_such_an_integer_are_refused():
    from pipeline.catalog.blobfacts import facts_of

    for kind, text in (("metadata", f"resources: {{memory: {HEX}}}\n"),
                       ("environment", f"channels: [conda-forge]\ndependencies: [numpy]\nx: {HEX}\n")):
        facts = facts_of(kind, text.encode())
        assert facts == {"refused": REASON}, (kind, facts)
        json.dumps(facts)


def test_setup_py_with_such_an_integer_is_refused():
    from pipeline.catalog.blobfacts import facts_of

    facts = facts_of("setup", f"from setuptools import setup\nsetup(install_requires={HEX})\n".encode())
    assert facts.get("refused") == REASON, facts
    json.dumps(facts)


@pytest.mark.parametrize("value", ["9" * 5000, HEX, "[1, " + HEX + "]", "{a = " + HEX + "}"])
def test_the_domain_pyproject_with_such_an_integer_is_refused(value):
    from pipeline.catalog.blobfacts import facts_of
    from pipeline.catalog.domainreqs import domain_requirements

    facts = facts_of("pyproject", f"[project]\nname = 'x'\ndependencies = ['numpy']\nversion = {value}\n".encode())
    assert facts.get("refused") == REASON, facts
    json.dumps(facts)
    requirements, _, problems = domain_requirements({"pyproject.toml": facts})
    assert requirements == [] and problems == [("pyproject.toml", f"{REASON}; the domain's dependencies are not read")]


def test_what_caches_or_prints_facts_survives_an_integer_that_slipped_past(tmp_path):
    """Defence in depth: each reader of facts, given a huge integer the reading bound should have refused."""
    from pipeline.catalog.construction import read_construction
    from pipeline.catalog.domainreqs import _unparsed
    from pipeline.catalog.factscache import FactsCache
    from pipeline.catalog.parents import read_registration
    from pipeline.catalog.walker import Walker
    from pipeline.catalog.walker_values import ir_text

    huge = int(HEX, 16)
    cache = FactsCache(tmp_path)
    cache.put("py", "ab" + "0" * 38, {"n": huge})
    cache.put("py", "ab" + "1" * 38, {"n": 1})
    cache.save()  # was: ValueError out of json.dump, and nothing saved
    again = FactsCache(tmp_path)
    assert again.get("py", "ab" + "1" * 38) == {"n": 1} and again.get("py", "ab" + "0" * 38) is None

    assert "<" in ir_text(["i", huge]) and "integer" in ir_text(["i", huge])
    assert _unparsed(ast.Constant(huge)) == "<expression>"

    source = ("from brainscore_core import BenchmarkBase\n\n\nclass B(BenchmarkBase):\n    def __init__(self):\n"
              f"        super().__init__(identifier='x', parent=f'p{{{HEX}}}', version=1)\n\n\n"
              "benchmark_registry['x'] = lambda: B()\n")
    walker = Walker("b", {"b/__init__.py": read_construction(ast.parse(source))})  # past parse_source's bound
    reading = read_registration(walker, "b/__init__.py", "benchmark_registry", "x")
    assert not reading.read and "integer" in reading.why, reading


def test_one_evil_integer_per_file_kind_is_refused_by_name_and_blocks_no_later_change(workspace, example_repo):
    """End to end: `detect` names each refused file, detects the rest of the change, and a later unrelated change
    is detected with exit 0 (the facts cache was saved, nothing crashes again)."""
    plain = "from sklearn_scores import model_registry\n\nmodel_registry[{!r}] = lambda: None\n"
    evil = {
        "models/evil_meta/__init__.py": plain.format("evil-meta"),
        "models/evil_meta/metadata.yml": f"resources: {{memory: {HEX}}}\n",
        "models/evil_setup/__init__.py": plain.format("evil-setup"),
        "models/evil_setup/setup.py": f"from setuptools import setup\nsetup(install_requires={HEX})\n",
        "benchmarks/evil_parent/__init__.py":
            "from sklearn_scores import benchmark_registry, load_dataset, load_metric\n"
            "from sklearn_scores.benchmark_helpers import CrossValidatedBenchmark\n\n"
            f"X = {HEX}\n\nbenchmark_registry['evil-parent'] = lambda: CrossValidatedBenchmark(\n"
            "    'evil-parent', data=lambda: load_dataset('wine'), metric=lambda: load_metric('accuracy'),\n"
            "    folds=5, seed=0, parent=f'p{X}', version=1)\n",
        "models/beside_ints/__init__.py": plain.format("beside-ints"),
    }
    for rel, text in evil.items():
        write(example_repo, f"sklearn_scores/{rel}", text)
    commit_all(example_repo, "an integer of 6000 digits in a metadata.yml, a setup.py and a benchmark")

    def detect() -> tuple[subprocess.CompletedProcess, dict]:
        proc = subprocess.run([str(CLI), "detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format",
                               "json"], cwd=workspace.path, env=workspace.env, capture_output=True, text=True,
                              timeout=120)
        assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
        return proc, json.loads(proc.stdout)

    proc, change = detect()
    assert proc.returncode == 2, proc.stderr  # the change holds refused files
    assert "beside-ints" in change["new_models"]
    said = {i["file"].removeprefix("sklearn_scores/"): (i["severity"], i["message"]) for i in change["issues"]}
    for rel in ("models/evil_meta/metadata.yml", "models/evil_setup/setup.py", "benchmarks/evil_parent/__init__.py"):
        assert said[rel] == ("error", f"refused: {REASON}"), (rel, said.get(rel))
    assert len(proc.stdout) < 100_000

    write(example_repo, "sklearn_scores/models/later_ints/__init__.py", plain.format("later-ints"))
    commit_all(example_repo, "a later change elsewhere")
    proc, change = detect()
    assert proc.returncode == 0, proc.stderr
    assert change["new_models"] == ["later-ints"]


# F7: `hierarchy import` of a crafted dump is bad input (exit 2, one line), never "unexpected ..."
CRAFTED_DUMPS = {
    "deep.json": "[" * 200_000 + "]" * 200_000,
    "long_field.csv": "identifier,parent,visible,order\n" + "a" * 140_000 + ",,true,1\n",
    "infinite_order.json": '[{"identifier": "average_vision", "parent": null, "visible": true, "order": Infinity}]',
    "nan_order.json": '[{"identifier": "average_vision", "parent": null, "visible": true, "order": NaN}]',
    "huge_order.json": '[{"identifier": "average_vision", "parent": null, "visible": true, "order": 1e400}]',
    "long_order.json": '[{"identifier": "average_vision", "parent": null, "visible": true, "order": 1' +
                       "0" * 60 + "}]",
    "long_order.csv": "identifier,parent,visible,order\naverage_vision,,true," + "9" * 4000 + "\n",
}


@pytest.mark.parametrize("name", sorted(CRAFTED_DUMPS))
def test_a_crafted_website_dump_is_bad_input(tmp_path, name):
    from pipeline.errors import BadInput
    from pipeline.leaderboard.webimport import read_dump

    dump = tmp_path / name
    dump.write_text(CRAFTED_DUMPS[name])
    with pytest.raises(BadInput) as raised:
        read_dump(dump)
    message = str(raised.value)
    assert message.startswith(str(dump)) and "\n" not in message and len(message) < 400, message


def test_hierarchy_import_of_a_crafted_dump_exits_2_with_one_line(workspace, tmp_path: Path):
    for name in ("deep.json", "long_field.csv", "infinite_order.json"):
        dump = tmp_path / name
        dump.write_text(CRAFTED_DUMPS[name])
        proc = subprocess.run([str(CLI), "hierarchy", "import", str(dump), "--out", str(tmp_path / "h.toml")],
                              cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-500:])
        assert len(proc.stderr.strip().splitlines()) == 1 and "unexpected" not in proc.stderr, proc.stderr[-500:]
        assert not (tmp_path / "h.toml").exists()
