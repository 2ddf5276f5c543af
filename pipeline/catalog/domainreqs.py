"""Declared dependencies read statically: requirements files, `setup.py` and the domain's `pyproject.toml`.

No submitter code runs on the coordinator: `setup.py` is parsed with `ast`, and only an
`install_requires` that is a literal list (directly, through a module-level name, or a
`+` of such lists) is read. Anything else is reported as dynamic.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from pipeline import bigints
from pipeline.catalog.tomlkeys import too_many_key_parts

# The name of a requirement line; possessive runs of spaces, so that a line of 100,000 spaces is linear, not
# quadratic (the same answers: a name or a bracket never starts with a space)
REQUIREMENT_NAME = re.compile(r"^\s*+([A-Za-z0-9][A-Za-z0-9._-]*+)\s*+(\[.*\])?\s*+([<>=!~;].*)?$")


def parse_requirements(text: str) -> list[str]:
    """Requirement lines, without comments, blanks and continuation backslashes (options are judged later)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def setup_py_requirements(text: str) -> tuple[list[str], str | None]:
    """(install_requires, None) of a setup.py read statically, or (what was read, why the rest is dynamic).
    bigints.TooLarge: it holds an integer literal of more than 100 digits (the file is refused)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as exc:
        return [], f"cannot be parsed ({getattr(exc, 'msg', exc)})"
    except (RecursionError, MemoryError):
        return [], "cannot be parsed (nested too deeply)"
    if bigints.python_reason(text, tree):
        raise bigints.TooLarge()
    assigns: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigns[node.targets[0].id] = node.value
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "install_requires":
                    found = _literal_list(keyword.value, assigns, 0)
                    if found is None:
                        return [], f"install_requires={_unparsed(keyword.value)[:80]} is not a literal list"
                    return found, None
                if keyword.arg is None:
                    return [], "setup(**...) cannot be read statically"
            return [], None
    return [], None


def _unparsed(node: ast.expr) -> str:
    try:
        return ast.unparse(node)
    except (RecursionError, ValueError):  # ValueError: an integer too long to print
        return "<expression>"


def _literal_list(node: ast.expr, assigns: dict[str, ast.expr], depth: int) -> list[str] | None:
    if depth > 4:
        return None
    if isinstance(node, (ast.List, ast.Tuple)):
        if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            return [e.value.strip() for e in node.elts if e.value.strip()]  # type: ignore[union-attr]
        return None
    if isinstance(node, ast.Name) and node.id in assigns:
        return _literal_list(assigns[node.id], assigns, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_list(node.left, assigns, depth + 1), _literal_list(node.right, assigns, depth + 1)
        return None if left is None or right is None else left + right
    return None


def pyproject_facts(text: str) -> dict:
    """What the domain's `pyproject.toml` declares: `dependencies` (a list of strings, else None), whether they
    are `dynamic`, `requires_python` ("" when none) and why it could not be read (`problem`).
    bigints.TooLarge: it holds an integer of more than 100 digits (the file is refused)."""
    too_costly = too_many_key_parts(text)  # tomllib is quadratic in a key's dotted parts
    if too_costly:
        return {"dependencies": None, "dynamic": False, "requires_python": "", "problem": too_costly}
    try:
        data = tomllib.loads(text)
        problem = None
    except tomllib.TOMLDecodeError as exc:
        data, problem = {}, f"not valid TOML ({exc})"
    except RecursionError:
        data, problem = {}, "not valid TOML (nested too deeply)"
    except ValueError:  # not a TOMLDecodeError: int() refused a decimal literal of more than 4300 digits
        raise bigints.TooLarge() from None
    if bigints.data_reason(data):  # a hexadecimal, octal or binary one is read whatever its length
        raise bigints.TooLarge()
    project = data.get("project") or {}
    if not isinstance(project, dict):
        project = {}
    deps = project.get("dependencies")
    dynamic = project.get("dynamic") or []
    requires = project.get("requires-python")
    return {"dependencies": [d.strip() for d in deps if d.strip()]
            if isinstance(deps, list) and all(isinstance(d, str) for d in deps) else None,
            "dynamic": isinstance(dynamic, list) and "dependencies" in dynamic,
            "requires_python": requires.strip() if isinstance(requires, str) else "", "problem": problem}


def domain_requirements(files: dict[str, dict]) -> tuple[list[str], str, list[tuple[str, str]]]:
    """The domain repository's own dependencies from the facts of its top-level files (`pyproject.toml`,
    `setup.py`, `requirements.txt` -> textfacts): (requirements, where from, problems).

    `pyproject.toml` `[project].dependencies` first, then a root `setup.py`, then a root `requirements.txt`.
    """
    problems: list[tuple[str, str]] = []
    if "pyproject.toml" in files:
        facts = files["pyproject.toml"]
        if facts.get("refused"):
            problems.append(("pyproject.toml", f"{facts['refused']}; the domain's dependencies are not read"))
        elif facts["problem"]:
            problems.append(("pyproject.toml", f"{facts['problem']}; the domain's dependencies are not read"))
        if facts.get("dependencies") is not None:
            return facts["dependencies"], "pyproject.toml", problems
        if facts.get("dynamic"):
            problems.append(("pyproject.toml", "[project].dependencies is dynamic; the domain's dependencies are "
                             "not read"))
    if "setup.py" in files:
        facts = files["setup.py"]
        found, why = facts.get("requirements", []), facts.get("refused") or facts.get("why")
        if why:
            problems.append(("setup.py", f"{why}; the domain's dependencies are not read"))
        if found or not why:
            return found, "setup.py", problems
    if "requirements.txt" in files:
        facts = files["requirements.txt"]
        if facts.get("refused"):
            problems.append(("requirements.txt", f"{facts['refused']}; the domain's dependencies are not read"))
        return facts.get("lines", []), "requirements.txt", problems
    return [], "", problems


def domain_requires_python(files: dict[str, dict]) -> str:
    """The domain's `[project].requires-python` ("" when there is none): a conda environment's interpreter is
    chosen from it."""
    return (files.get("pyproject.toml") or {}).get("requires_python", "")


def split_stdlib(lines: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): a requirement naming a standard-library module (`imp`, `collections`) cannot be installed
    from an index; Brain-Score's pip goes on without it, and so do we (with a warning)."""
    kept, dropped = [], []
    for line in lines:
        match = REQUIREMENT_NAME.match(line)
        name = match.group(1) if match else ""
        if name and name.lower() in STDLIB and "@" not in line:
            dropped.append(line)
        else:
            kept.append(line)
    return kept, dropped


STDLIB = {name.lower() for name in sys.stdlib_module_names if not name.startswith("_")} - {
    "typing", "dataclasses"}  # also real PyPI back-ports, harmless to install
