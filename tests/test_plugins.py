"""Registry parsing with ast, read from git objects: what is found, what is refused, what is warned about."""

from __future__ import annotations

import ast
import subprocess

import pytest

from pipeline.catalog.ids import folder_problem, identifier_problem
from pipeline.catalog.plugins import Plugin, _read_registrations, load_catalog
from pipeline.catalog.sourcefacts import read_facts
from tests.conftest import commit_all, write


def parse(source: str):
    plugin, issues = Plugin("models", "p", "root/models/p", "0" * 40), []
    _read_registrations(plugin, read_facts(source.encode()), "root/models/p/__init__.py", issues)
    return plugin.identifiers, issues


def dependency_references(source: str):
    return sorted((x.loader, x.base, tuple(x.patterns) if x.patterns is not None else None)
                  for x in read_facts(source.encode()).loads)


def test_quotes_multiline_and_several_per_file():
    ids, issues = parse(
        "from root import model_registry\n"
        "model_registry['single'] = lambda: 1\n"
        'model_registry["double"] = lambda: 2\n'
        "model_registry[\n    'spread'\n] = (\n    lambda: 3\n)\n"
        "# model_registry['commented-out'] = lambda: 4\n"
        "x = \"model_registry['in-a-string']\"\n"
    )
    assert ids == ["single", "double", "spread"]
    assert issues == []


def test_computed_keys_are_warned_about_with_file_and_line():
    ids, issues = parse(
        "for name in ['a', 'b']:\n"
        "    model_registry[f'net-{name}'] = lambda: name\n"
        "model_registry[NAME] = None\n"
    )
    assert ids == []
    assert [(i.line, i.severity) for i in issues] == [(2, "warning"), (3, "warning")]
    assert "computed" in issues[0].message and issues[0].file == "root/models/p/__init__.py"


@pytest.mark.parametrize(("bad", "reason"), [
    ("new\nline", "identifier contains control characters or line breaks (U+000A)"),
    ("carriage\rreturn", "identifier contains control characters or line breaks (U+000D)"),
    ("nul\x00byte", "identifier contains control characters or line breaks (U+0000)"),
    ("tab\there", "identifier contains control characters or line breaks (U+0009)"),
    ("del\x7f", "identifier contains control characters or line breaks (U+007F)"),
    ("ls\u2028sep", "identifier contains control characters or line breaks (U+2028)"),
    ("../up", "identifier contains a path separator ('/' or '\\')"),
    ("a/b", "identifier contains a path separator ('/' or '\\')"),
    ("back\\slash", "identifier contains a path separator ('/' or '\\')"),
    ("", "identifier is empty"), ("   ", "identifier is empty"),
    ("..", "identifier '..' is a path component"), (".", "identifier '.' is a path component"),
    ("-option", "identifier starts with '-' (it would read as an option)"),
    ("x" * 201, "identifier is 201 characters long (200 at most)"),
    ("a\tb\nc\rd\x00e\x01f\x02", "identifier contains control characters or line breaks "
                                   "(U+0000, U+0001, U+0002, U+0009, U+000A)")])  # the first five, sorted
def test_invalid_identifiers_are_refused(bad, reason):
    """Each unusable id is refused with its own reason, and the reason reaches the issue the submitter sees."""
    assert identifier_problem(bad) == reason
    ids, issues = parse(f"model_registry[{bad!r}] = 1\nmodel_registry['fine-1.0'] = 2\n")
    assert ids == ["fine-1.0"]
    assert len(issues) == 1 and issues[0].severity == "error" and issues[0].line == 1
    assert reason in issues[0].message, issues[0].message


@pytest.mark.parametrize("good", ["alexnet", "CORnet-S", "MajajHong2015.IT-pls", "resnet-50_robust", "a+b", "v1.2",
                                  "convnext_base:clip_laiona_augreg_ft_in1k_384", "alexnet_z_axis_iteration=1",
                                  "has space", "quo'te", 'dq"x', "semi;colon", "$(touch x)", "back`tick`",
                                  "tree[red]", "[bold]x", "<b>html<b>", "é-accent", "x" * 200])
def test_brain_score_style_identifiers_are_accepted(good):
    """Real Brain-Score ids (timm's `:`, `=`) and hostile-looking but printable ones are accepted: every place
    an id reaches quotes or escapes it (see test_faults and test_notify), so the alphabet need not be narrow."""
    assert identifier_problem(good) is None


@pytest.mark.parametrize("good", ["antialiased-r50", "convnextv2-tiny", "CE-Barlow_lmda_00", "20260408_2033_stl10",
                                  "blt-vs", "plain_name"])
def test_real_brain_score_folder_names_are_accepted(good):
    assert folder_problem(good) is None


@pytest.mark.parametrize(("bad", "reason"), [
    ("", "plugin folder name is empty"),
    ("-rf", "plugin folder name starts with '-' (it would read as an option)"),
    ("a.b", "plugin folder name contains '.', which Python's import system reads as a sub-package"),
    ("..", "plugin folder name '..' is a path component"),
    ("new\nline", "plugin folder name contains control characters or line breaks (U+000A)"),
    ("nul\x00", "plugin folder name contains control characters or line breaks (U+0000)"),
    ("a\\b", "plugin folder name contains a path separator"),
    ("x" * 101, "plugin folder name is 101 characters long (100 at most)"),
    (".", "plugin folder name '.' is a path component"),
    ("a/b", "plugin folder name contains a path separator")])
def test_unusable_folder_names_are_refused(bad, reason):
    assert folder_problem(bad) == reason


def test_dependency_references():
    refs = dependency_references(
        "from dom import load_dataset, load_metric, data_registry\n"
        "from dom.metrics.special import thing\n"
        "x = load_dataset('digits')\n"
        "y = dom.load_metric(\"accuracy\")\n"
        "z = data_registry['wine']\n"
    )
    assert refs == [("data_registry", "", ("wine",)), ("load_dataset", "dom", ("digits",)),
                    ("load_metric", "dom", ("accuracy",))]


def test_catalog_of_the_example_repository(example_repo):
    catalog = load_catalog(example_repo, "HEAD")
    assert catalog.domain_root == "sklearn_scores"
    assert sorted(catalog.by_identifier("models")) == ["gaussian-nb", "knn-5", "logreg", "random-forest"]
    bench = catalog.plugins[("benchmarks", "iris_cv")]
    assert bench.identifiers == ["iris-accuracy"]
    assert bench.uses == {"data": {"sklearn_toy"}, "metrics": {"classification"}, "models": set(),
                          "benchmarks": set()}
    assert bench.owner == "bob@example.org"
    assert bench.requirements == ["scikit-learn>=1.3"]
    assert catalog.issues == []


def test_syntax_error_names_file_and_line_and_keeps_the_rest(example_repo):
    write(example_repo, "sklearn_scores/models/broken/__init__.py",
          "from sklearn_scores import model_registry\n\nmodel_registry['broken'] = (\n")
    commit_all(example_repo, "broken plugin")
    catalog = load_catalog(example_repo, "HEAD")
    assert catalog.plugins[("models", "broken")].identifiers == []
    [issue] = catalog.issues
    assert issue.file == "sklearn_scores/models/broken/__init__.py" and issue.line >= 3
    assert "syntax error" in issue.message
    assert "logreg" in catalog.by_identifier("models")


def test_catalog_reads_git_objects_not_the_working_tree(example_repo):
    """Uncommitted edits in the checkout do not change what --head says."""
    write(example_repo, "sklearn_scores/models/knn/__init__.py", "model_registry['edited-only-on-disk'] = 1\n")
    catalog = load_catalog(example_repo, "HEAD")
    assert catalog.plugins[("models", "knn")].identifiers == ["knn-5"]


def test_every_file_is_parsed_once_per_blob_across_runs(example_repo, tmp_path):
    """YAML, requirement files and setup.py are cached by blob id beside the Python facts: a run parses only the
    blobs no earlier run has seen, wherever they sit, and reads the same answers from the cache."""
    knn = "sklearn_scores/models/knn"
    write(example_repo, f"{knn}/metadata.yml", "resources: {memory: 4G, time: 90m}\nmodels:\n  knn-5: {}\n")
    write(example_repo, f"{knn}/environment.yml", "channels: [conda-forge]\ndependencies: [python=3.11]\n")
    write(example_repo, f"{knn}/setup.py", "from setuptools import setup\nsetup(install_requires=['joblib'])\n")
    commit_all(example_repo, "knn declares its resources, its conda environment and a setup.py")
    cache = tmp_path / "cache"

    def read() -> tuple[dict, tuple]:
        catalog = load_catalog(example_repo, "HEAD", cache_dir=cache)
        p = catalog.plugins[("models", "knn")]
        parsed = {**catalog.parsed, **({"folders": catalog.read_folders} if catalog.read_folders else {})}
        return parsed, (p.resources, p.requirements, p.conda_specs, p.identifiers, catalog.issues)

    parsed, cold = read()
    assert {k: parsed.get(k, 0) >= 1 for k in ("py", "metadata", "environment", "requirements", "setup")} == \
        dict.fromkeys(("py", "metadata", "environment", "requirements", "setup"), True)
    parsed, warm = read()
    assert parsed == {} and warm == cold  # nothing parsed again, no folder read again, the same answers

    write(example_repo, f"{knn}/__init__.py", (example_repo / knn / "__init__.py").read_text() + "# touched\n")
    commit_all(example_repo, "touch knn's __init__.py only")
    parsed, touched = read()
    assert parsed == {"py": 1, "folders": 1} and touched == cold  # its other blobs and folders did not change

    subprocess.run(["cp", "-r", str(example_repo / knn), str(example_repo / "sklearn_scores/models/knn_copy")],
                   check=True)
    write(example_repo, "sklearn_scores/models/knn_copy/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['knn-copy'] = lambda: None\n")
    commit_all(example_repo, "the same files in another folder")
    catalog = load_catalog(example_repo, "HEAD", cache_dir=cache)
    assert catalog.parsed == {"py": 1} and catalog.read_folders == 1  # the copy's other files were read already
    assert catalog.plugins[("models", "knn_copy")].resources == catalog.plugins[("models", "knn")].resources


def test_parse_workers_read_what_one_process_reads(example_repo, tmp_path):
    """A cold read of a large repository parses in worker processes (past 1 MB of Python, or when asked): the same
    catalog as one process."""
    for i in range(6):
        padding = "".join(f"TABLE_{j} = {list(range(40))!r}\n" for j in range(100))  # about 16 kB, no call
        write(example_repo, f"sklearn_scores/models/big_{i}/__init__.py",
              f"from sklearn_scores import model_registry, load_dataset\n{padding}"
              f"model_registry['big-{i}'] = lambda: load_dataset(f'iris{{\"\"}}')\n")
    commit_all(example_repo, "six larger models")

    def answers(catalog) -> tuple:  # noqa: ANN001
        return ([str(i) for i in catalog.issues], catalog.load_calls, catalog.unbounded,
                {k: (p.identifiers, p.uses, p.requirements, catalog.code_hash(p)) for k, p in catalog.plugins.items()})

    one = load_catalog(example_repo, "HEAD", cache_dir=tmp_path / "one", workers=1)
    pool = load_catalog(example_repo, "HEAD", cache_dir=tmp_path / "pool", workers=2)
    assert one.parsed["py"] == pool.parsed["py"] >= 6
    assert answers(one) == answers(pool)
    assert {t for t, names in one.plugins[("models", "big_3")].uses.items() if names} == {"data"}
    from pipeline.catalog.parsepool import parse_alone  # a worker starts (standard library only) and answers

    assert parse_alone("0" * 40, b"model_registry['a'] = 1\n")["py"]["registrations"][0]["key"] == "a"
