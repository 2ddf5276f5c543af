"""Reading submitted text is bounded (issue 35, findings 1 and 2): a merged file that would make the coordinator
backtrack or expand gigabytes is read in linear time, or refused by name with its reason; the rest of the change
proceeds, and a refused file never blocks a later change.

Each command runs as the real `score-plugins` with a wall-clock timeout and an address-space limit, so that a red run
(today's main hangs or swells on these files) ends as a failure instead of hanging the suite or the machine."""

from __future__ import annotations

import json
import resource
import subprocess

from tests.conftest import CLI, commit_all, write

LIMIT_S = 60  # the same detect takes about a second here
MEMORY = 3 << 30  # a swelling coordinator fails here instead of taking the node's memory

# Finding 1: each `{x}` of an f-string becomes a wildcard; twelve of them before "xy", matched by a backtracking
# engine against an id of 120 "x", never end.
PLACEHOLDERS = "x".join("{" + name + "}" for name in "abcdefghijkl")
REGEX_MODEL = ("from sklearn_scores import model_registry, load_dataset\n\n\n"
               f"def never_called({', '.join('abcdefghijkl')}):\n"
               f"    return load_dataset(f'{PLACEHOLDERS}xy')\n\n\n"
               "model_registry['evil-regex'] = lambda: None\n")
MANY_X_DATA = f"from sklearn_scores import data_registry\n\ndata_registry[{'x' * 120!r}] = lambda: None\n"

# Finding 2: nine levels of nine aliases: 475 bytes that expand to 9**9 strings when formatted.
LEVELS = "abcdefghi"
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n" for prev, name in zip(LEVELS, LEVELS[1:])) + \
    "channels: [conda-forge]\ndependencies:\n  - *i\n"
PLAIN_MODEL = "from sklearn_scores import model_registry\n\nmodel_registry[{!r}] = lambda: None\n"


def bounded_cli(workspace, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    """`score-plugins ARGS` in the workspace, ended after LIMIT_S seconds, refused more than MEMORY bytes."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    return subprocess.run([str(CLI), *args], cwd=workspace.path, env=workspace.env, capture_output=True, text=True,
                          timeout=LIMIT_S, preexec_fn=limit)


def test_an_f_string_loader_argument_cannot_make_detect_backtrack(workspace, example_repo):
    write(example_repo, "sklearn_scores/models/evil_regex/__init__.py", REGEX_MODEL)
    write(example_repo, "sklearn_scores/data/many_x/__init__.py", MANY_X_DATA)
    commit_all(example_repo, "a loader argument of twelve wildcards, and an id of 120 x")

    proc = bounded_cli(workspace, "detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    change = json.loads(proc.stdout)
    assert change["new_models"] == ["evil-regex"]
    assert change["changed_plugins"]["data"] == ["many_x"] and change["changed_plugins"]["models"] == ["evil_regex"]

    proc = bounded_cli(workspace, "tree", "--repo", str(example_repo), "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_yaml_aliases_are_refused_by_name_and_never_block_a_later_change(workspace, example_repo):
    write(example_repo, "sklearn_scores/models/alias_bomb/__init__.py", PLAIN_MODEL.format("alias-bomb"))
    write(example_repo, "sklearn_scores/models/alias_bomb/environment.yml", ALIAS_BOMB)
    write(example_repo, "sklearn_scores/models/alias_bomb/metadata.yml", ALIAS_BOMB)
    write(example_repo, "sklearn_scores/models/beside_it/__init__.py", PLAIN_MODEL.format("beside-it"))
    commit_all(example_repo, "an environment.yml and a metadata.yml of nested aliases, beside a plain model")
    assert len(ALIAS_BOMB) < 500

    proc = bounded_cli(workspace, "detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr  # the change holds a refused file
    change = json.loads(proc.stdout)
    assert "beside-it" in change["new_models"]  # the rest of the change proceeds
    refused = {i["file"]: i for i in change["issues"] if "alias" in i["message"]}
    for name in ("environment.yml", "metadata.yml"):
        issue = refused[f"sklearn_scores/models/alias_bomb/{name}"]
        assert issue["severity"] == "error" and "YAML aliases are not accepted" in issue["message"], issue
    assert len(proc.stdout) < 100_000  # nothing was expanded into a message

    write(example_repo, "sklearn_scores/models/later/__init__.py", PLAIN_MODEL.format("later"))
    commit_all(example_repo, "a later change elsewhere")
    proc = bounded_cli(workspace, "detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    change = json.loads(proc.stdout)
    assert change["new_models"] == ["later"]
    assert any(i["file"].endswith("alias_bomb/environment.yml") and i["severity"] == "warning"
               for i in change["issues"])

    proc = bounded_cli(workspace, "plan", "--repo", str(example_repo), "--base", "HEAD~2", "--head", "HEAD~1",
                       "--models", "alias-bomb", "--format", "json", "--pairs")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "alias" in proc.stdout and len(proc.stdout) < 200_000


# Every other static read, each a file that crashed or stalled today's main: a traceback ends `detect` (and every
# later build, since the whole repository is read), a quadratic or exponential read never ends.
FAN_OUT = "from sklearn_scores import model_registry, load_dataset\n\n\ndef f0(x):\n    return load_dataset(x)\n" + \
    "".join(f"\n\ndef f{i}(x):\n" + f"    f{i - 1}(x)\n" * 30 for i in range(1, 7)) + \
    "\n\nf6('iris')\nmodel_registry['fan-out'] = lambda: None\n"
HOSTILE_FILES = {
    # ast.parse gives up (RecursionError / MemoryError): refused by name
    "models/deep_sum/deep.py": "x = " + "+".join(["a"] * 3000) + "\n",
    "models/deep_not/deep.py": "x = " + "not " * 100_000 + "1\n",
    # over the size bound: refused from its listed size, never read
    "models/huge/huge.py": "# " + "x" * 2_100_000 + "\n",
    # a loader argument of 200,000 braces: .format's pattern was quadratic
    "models/braces/braces.py": "from sklearn_scores import load_dataset\n\n\n"
                               f"def g(x):\n    return load_dataset('{'{' * 200_000}'.format(x))\n",
    # thirty call sites at each of six levels: resolving `x` visited 30**6 paths
    "models/fan_out/__init__.py": FAN_OUT,
    # a requirement line of 200,000 spaces: the stdlib check's pattern was quadratic
    "models/spaces/requirements.txt": "numpy" + " " * 200_000 + "x\n",
    # values Python refuses: OverflowError and ValueError escaped the YAML reading
    "models/inf_memory/metadata.yml": "resources: {memory: .inf}\n",
    "models/long_int/metadata.yml": "number: " + "9" * 5000 + "\n",
    # setup.py that ast cannot parse: RecursionError escaped
    "models/deep_setup/setup.py": "from setuptools import setup\nx = " + "+".join(["a"] * 3000) + "\nsetup()\n",
}


def test_every_static_read_is_bounded_and_names_what_it_refuses(workspace, example_repo):
    for rel, text in HOSTILE_FILES.items():
        folder = rel.split("/")[1]
        write(example_repo, f"sklearn_scores/models/{folder}/__init__.py", PLAIN_MODEL.format(folder)) \
            if not rel.endswith("__init__.py") else None
        write(example_repo, f"sklearn_scores/{rel}", text)
    # the domain's own pyproject.toml, nested past Python's recursion limit
    write(example_repo, "pyproject.toml", "[project]\nname = 'x'\ndependencies = " + "[" * 2000 + "]" * 2000 + "\n")
    write(example_repo, "sklearn_scores/models/beside_them/__init__.py", PLAIN_MODEL.format("beside-them"))
    commit_all(example_repo, "a file for each static read")

    proc = bounded_cli(workspace, "detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    change = json.loads(proc.stdout)
    assert "beside-them" in change["new_models"] and "fan-out" in change["new_models"]
    said = {i["file"].removeprefix("sklearn_scores/"): (i["severity"], i["message"]) for i in change["issues"]}
    assert said["models/deep_sum/deep.py"] == ("error", "refused: nested too deeply for Python to parse; not read")
    assert said["models/deep_not/deep.py"] == ("error", "refused: nested too deeply for Python to parse; not read")
    assert said["models/huge/huge.py"][1].startswith("refused: larger than 2,000,000 bytes")
    assert said["models/braces/braces.py"] == \
        ("error", "refused: a loader argument longer than 10,000 characters; not read")
    assert said["models/inf_memory/metadata.yml"] == ("error", "metadata: resources: a value is too large")
    assert said["models/long_int/metadata.yml"] == ("error", "refused: an integer of more than 100 digits; not read")
    assert said["models/deep_setup/setup.py"] == \
        ("warning", "setup.py: cannot be parsed (nested too deeply); it is pip-installed inside the job (sandboxed)")
    assert said["pyproject.toml"] == \
        ("warning", "not valid TOML (nested too deeply); the domain's dependencies are not read")


def test_id_patterns_match_as_the_regular_expressions_did():
    """The non-backtracking matcher gives `re.fullmatch(pattern, id, re.DOTALL)`'s answers (and the slot group's
    text) on every pattern shape sourcefacts writes, and the linear rewrites of its substitutions theirs."""
    import random
    import re

    from pipeline.catalog import idpattern
    from pipeline.catalog.domainreqs import REQUIREMENT_NAME
    from pipeline.catalog.sourcefacts import PERCENT_FIELD, _format_fields

    rng = random.Random(35)
    pieces = ["a", "x", "_", ".", "V4", "-", "a.b", "{", "\\", "*"]
    for trial in range(20_000):
        slot_ok = trial % 2 == 0
        parts, slotted = [], False
        for _ in range(rng.randint(0, 5)):
            r = rng.random()
            if r < 0.35:
                parts.append(".*?" if slot_ok else ".*")
            elif r < 0.45 and slot_ok and not slotted:
                parts.append(idpattern.SLOT_TEXT)
                slotted = True
            else:
                parts.append(re.escape(rng.choice(pieces)))
        pattern = "".join(parts)
        text = "".join(rng.choice(["a", "x", "_", ".", "V", "4", "-"]) for _ in range(rng.randint(0, 9)))
        match = re.fullmatch(pattern, text, re.DOTALL)
        if slotted:
            assert idpattern.slot(pattern, text) == (match.group("parent") if match else None), (pattern, text)
        else:
            assert idpattern.fullmatch(pattern, text) == bool(match), (pattern, text)
            literal = idpattern.literal(pattern)
            wild = any(p in (".*", ".*?") for p in parts)
            assert literal is None if wild else literal == re.sub(r"\\(.)", r"\1", pattern)
    for _ in range(50_000):
        raw = "".join(rng.choice("{}a\\%0.s5 -[<=;@\t") for _ in range(rng.randint(0, 12)))
        for text in (raw, re.escape(raw)):
            assert _format_fields(text) == re.sub(r"\\\{[^}]*\\\}", ".*", text), text
            assert PERCENT_FIELD.sub(".*", text) == re.sub(r"%[-#0 +]*\d*(?:\\\.\d+)?[sdifrxXeEgGa]", ".*", text)
            old = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[.*\])?\s*([<>=!~;].*)?$", text)
            new = REQUIREMENT_NAME.match(text)
            assert (old and old.group(1)) == (new and new.group(1)), text
    # the finding itself, matched in linear time
    assert not idpattern.fullmatch("x".join([".*"] * 12) + "xy", "x" * 120)
    assert idpattern.fullmatch("x".join([".*"] * 12) + "xy", "x" * 120 + "y")


def test_yaml_is_read_with_libyaml_and_aliases_are_refused():
    import yaml

    from pipeline import safe_yaml

    assert safe_yaml.C_LOADER  # PyYAML's wheels carry libyaml: ten times the pure-Python loader
    assert safe_yaml.load("a: [1, 2]\nb: {c: d}\n") == {"a": [1, 2], "b": {"c": "d"}}
    for text in (ALIAS_BOMB, "a: &x 1\nb: *x\n", "base: &b {k: 1}\nother:\n  <<: *b\n"):
        try:
            safe_yaml.load(text)
            raise AssertionError(f"read: {text!r}")
        except safe_yaml.Refused as exc:
            assert "aliases are not accepted" in str(exc)
    try:
        safe_yaml.load("a: [1\n")
        raise AssertionError("read")
    except yaml.YAMLError as exc:  # the pure-Python loader's message, as users saw it before
        try:
            yaml.load("a: [1\n", Loader=yaml.SafeLoader)  # noqa: S506
        except yaml.YAMLError as pure:
            assert str(exc) == str(pure)
    assert safe_yaml.shown({"pip": ["numpy", 1.5, None]}) == repr({"pip": ["numpy", 1.5, None]})
    assert len(safe_yaml.shown([["lol"] * 1000] * 1000)) == 300


# Round 2 (F2): the right-hand side of an unpacking was unparsed whole once per unpacked name, then cut to 120
# characters: quadratic (4000 names: 59 kB, 146 s). Counted, not timed: the nodes the unparser visits.
def _unpacking(n: int) -> bytes:
    return (f"def f():\n    {', '.join(f'a{i}' for i in range(n))} = "
            f"[{', '.join(f'x.y({i})' for i in range(n))}]\n").encode()


def test_an_unpacked_right_hand_side_is_unparsed_once_and_only_as_far_as_the_message(monkeypatch):
    import ast

    from pipeline.catalog.pyfacts import python_facts

    visits = [0]
    real = ast._Unparser.traverse  # the standard library's unparser, counted as it runs (not replaced)

    def counted(self, node):  # noqa: ANN001, ANN202
        visits[0] += 1
        return real(self, node)

    monkeypatch.setattr(ast._Unparser, "traverse", counted)
    n = 1000  # the old reading: about 4 million visits (5 s); 4000 names took 146 s
    facts = python_facts(_unpacking(n), ["construction"])["construction"]["construction"]["fn"]["f"]["as"]
    assert len(facts) == n
    said = facts[f"a{n - 1}"][0]
    assert said[0] == "?" and said[1].startswith(f"a{n - 1} is unpacked from [x.y(0), x.y(1), ")
    assert said[1].endswith("...") and len(said[1]) < 150
    assert visits[0] < 200, visits  # linear: one short unparse for the statement, whatever n


def test_a_construction_reading_past_its_step_budget_is_refused_by_name(monkeypatch):
    """The safety net under the linear bounds: a file whose construction facts would take more than
    construction.MAX_STEPS steps is refused with its reason (lowered here, so that a small file reaches it)."""
    from pipeline.catalog import construction
    from pipeline.catalog.pyfacts import python_facts

    monkeypatch.setattr(construction, "MAX_STEPS", 500)
    facts = python_facts(_unpacking(600), ["py", "construction"])
    assert facts["construction"] == {"refused": "too costly to read statically (more than 500 steps); not read"}
    assert not facts["py"].get("refused")  # the file's other facts are read as usual
    assert "construction" in python_facts(_unpacking(10), ["construction"])["construction"]


# Round 2 (F5): every wildcard loader argument was compared with every registered id, on every detect (warm too):
# 12000 calls beside 12000 ids took 32 s a run.
def test_wildcard_loader_arguments_are_compared_only_with_the_ids_their_literal_parts_allow(monkeypatch):
    from pipeline.catalog import idpattern, loaders
    from pipeline.catalog.sourcefacts import Load

    n = 1500  # the finding's shape: load_dataset(f'a{i}{x}z') beside a data plugin registering a{i}qz
    table = {f"a{i}qz": [("data", f"d{i}")] for i in range(n)}
    table["other"] = [("data", "other")]
    loads = [Load("load_dataset", None, [f"a{i}.*z", "other"], 1, "") for i in range(n)]
    expected = [{key for identifier, keys in table.items() for key in keys
                 if identifier == "other" or idpattern.fullmatch(f"a{i}.*z", identifier)} for i in range(n)]

    compared = [0]
    real = idpattern.fullmatch  # the matcher itself, counted as it runs (not replaced)

    def counted(pattern: str, text: str) -> bool:
        compared[0] += 1
        return real(pattern, text)

    monkeypatch.setattr(idpattern, "fullmatch", counted)
    index = loaders.RegistryIndex(table)  # built once per catalog
    spent = [0]  # one file's comparisons
    assert [loaders._matches(load, index, spent) for load in loads] == expected
    assert compared[0] < 10 * n, compared  # the old matching: n * n = 2,250,000


def test_a_file_whose_loader_arguments_match_every_id_is_refused_by_name(workspace, example_repo):
    """Patterns with no literal prefix or suffix (`f'{x}{i}{x}'`) each compared with 700 ids: the file is past
    loaders.MAX_MATCH_STEPS, refused by name, and its loads read as depending on every data plugin."""
    n = 700
    write(example_repo, "sklearn_scores/models/wide/__init__.py",
          "from sklearn_scores import model_registry, load_dataset\n\n\ndef never_called(x):\n" +
          "".join(f"    load_dataset(f'{{x}}{i}{{x}}')\n" for i in range(n)) +
          "\n\nmodel_registry['wide'] = lambda: None\n")
    write(example_repo, "sklearn_scores/data/many_ids/__init__.py",
          "from sklearn_scores import data_registry\n\n" +
          "".join(f"data_registry['id{i}'] = lambda: None\n" for i in range(n)))
    write(example_repo, "sklearn_scores/models/beside_it/__init__.py", PLAIN_MODEL.format("beside-it"))
    commit_all(example_repo, "wildcard loader arguments beside many ids")

    proc = bounded_cli(workspace, "detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    change = json.loads(proc.stdout)
    assert {"wide", "beside-it"} <= set(change["new_models"])  # the rest of the change proceeds
    said = [i for i in change["issues"] if i["file"] == "sklearn_scores/models/wide/__init__.py"]
    assert [i["message"] for i in said] == [
        "refused: its loader arguments would be compared with more than 200,000 registered ids; its loads are read "
        "as depending on every plugin of their registry"], said
    assert said[0]["severity"] == "error" and proc.returncode == 2


# Round 2 (F6): tomllib is quadratic in the dotted parts of one key: a domain pyproject.toml of `a.a...a.b = 1`
# with 50,000 parts (100 kB) took 77 s. A key (or table header) of more than 64 parts is refused before tomllib.
def test_a_dotted_key_of_many_parts_in_the_domain_pyproject_is_refused_by_name():
    from pipeline.catalog.domainreqs import pyproject_facts

    parts = 8000  # tomllib alone: 0.7 s here (50,000: 77 s)
    for text in ("[project]\n" + "a." * parts + "b = 1\n", "[" + "a." * parts + "b]\n",
                 "[[" + "a." * parts + "b]]\n", "x = {" + "a." * parts + "b = 1}\n", '"a".' * 100 + "b = 1\n"):
        assert pyproject_facts(text) == {"dependencies": None, "dynamic": False, "requires_python": "",
                                         "problem": "a key of more than 64 dotted parts; not read"}, text[:40]
    # dots in strings, comments and values are not key parts: a real pyproject is read as before
    real = ('[project]\nname = "brainscore.vision"  # a.b.c.d.e.f\ndescription = "' + "A sentence. " * 200 + '"\n'
            'readme = """\n' + "x." * 500 + '\n"""\nrequires-python = ">=3.11"\n'
            "dependencies = ['numpy>=1.2.3', 'a @ git+https://github.com/x/y.git@v1.2.3']\n"
            "[tool.setuptools.packages.find]\nwhere = ['.']\n[tool.x]\nv = 1.5\n"
            "'lit.eral' = '''" + "q." * 300 + "'''\n")
    assert pyproject_facts(real) == {"dependencies": ["numpy>=1.2.3", "a @ git+https://github.com/x/y.git@v1.2.3"],
                                     "dynamic": False, "requires_python": ">=3.11", "problem": None}
