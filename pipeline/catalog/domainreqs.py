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

from pipeline.catalog import gitrepo



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
    """(install_requires, None) of a setup.py read statically, or (what was read, why the rest is dynamic)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as exc:
        return [], f"cannot be parsed ({getattr(exc, 'msg', exc)})"
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
                        return [], f"install_requires={ast.unparse(keyword.value)[:80]} is not a literal list"
                    return found, None
                if keyword.arg is None:
                    return [], "setup(**...) cannot be read statically"
            return [], None
    return [], None


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


def domain_requirements(repo, commit: str) -> tuple[list[str], str, list[tuple[str, str]]]:  # noqa: ANN001
    """The domain repository's own dependencies at `commit`: (requirements, where from, problems).

    `pyproject.toml` `[project].dependencies` first, then a root `setup.py`, then a root `requirements.txt`.
    """
    names = {e.path: e.sha for e in gitrepo.list_tree(repo, commit) if "/" not in e.path and e.kind == "blob"}
    problems: list[tuple[str, str]] = []
    wanted = [n for n in ("pyproject.toml", "setup.py", "requirements.txt") if n in names]
    blobs = gitrepo.read_blobs(repo, [names[n] for n in wanted])
    if "pyproject.toml" in names:
        text = blobs[names["pyproject.toml"]].decode("utf-8", "replace")
        try:
            project = tomllib.loads(text).get("project") or {}
        except tomllib.TOMLDecodeError as exc:
            problems.append(("pyproject.toml", f"not valid TOML ({exc}); the domain's dependencies are not read"))
            project = {}
        deps = project.get("dependencies")
        if isinstance(deps, list) and all(isinstance(d, str) for d in deps):
            return [d.strip() for d in deps if d.strip()], "pyproject.toml", problems
        if "dependencies" in (project.get("dynamic") or []):
            problems.append(("pyproject.toml", "[project].dependencies is dynamic; the domain's dependencies are "
                             "not read"))
    if "setup.py" in names:
        found, why = setup_py_requirements(blobs[names["setup.py"]].decode("utf-8", "replace"))
        if why:
            problems.append(("setup.py", f"{why}; the domain's dependencies are not read"))
        if found or not why:
            return found, "setup.py", problems
    if "requirements.txt" in names:
        return parse_requirements(blobs[names["requirements.txt"]].decode("utf-8", "replace")), \
            "requirements.txt", problems
    return [], "", problems





def domain_requires_python(repo, commit: str) -> str:  # noqa: ANN001
    """The domain's `[project].requires-python` at `commit` ("" when there is none): a conda environment's
    interpreter is chosen from it."""
    names = {e.path: e.sha for e in gitrepo.list_tree(repo, commit, "pyproject.toml")
             if e.path == "pyproject.toml" and e.kind == "blob"}
    if not names:
        return ""
    text = gitrepo.read_blobs(repo, [names["pyproject.toml"]])[names["pyproject.toml"]].decode("utf-8", "replace")
    try:
        value = (tomllib.loads(text).get("project") or {}).get("requires-python")
    except tomllib.TOMLDecodeError:
        return ""
    return value.strip() if isinstance(value, str) else ""


def split_stdlib(lines: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): a requirement naming a standard-library module (`imp`, `collections`) cannot be installed
    from an index; Brain-Score's pip goes on without it, and so do we (with a warning)."""
    kept, dropped = [], []
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[.*\])?\s*([<>=!~;].*)?$", line)
        name = match.group(1) if match else ""
        if name and name.lower() in STDLIB and "@" not in line:
            dropped.append(line)
        else:
            kept.append(line)
    return kept, dropped


STDLIB = {name.lower() for name in sys.stdlib_module_names if not name.startswith("_")} - {
    "typing", "dataclasses"}  # also real PyPI back-ports, harmless to install
