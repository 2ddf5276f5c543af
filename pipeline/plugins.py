"""The plugin layout and its registries, read from git objects with `ast`.

Layout (Brain-Score's): `<domain_root>/{models,benchmarks,data,metrics}/<plugin>/__init__.py`,
where `__init__.py` registers entries as `model_registry['id'] = ...`. Nothing here
imports or runs plugin code: the registry is parsed, never executed.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from envs.conda import read_environment_yml
from envs.lock import EnvError
from pipeline import gitrepo
from pipeline.errors import BadInput
from pipeline.ids import folder_problem, identifier_problem

PLUGIN_TYPES: tuple[str, ...] = ("models", "benchmarks", "data", "metrics")
REGISTRY_NAMES = {t: t.rstrip("s") + "_registry" for t in PLUGIN_TYPES}
# Brain-Score's loaders: a benchmark that calls `load_dataset('x')` depends on data plugin 'x'.
LOADER_NAMES = {"load_dataset": "data", "load_data": "data", "load_metric": "metrics"}
REQUIREMENT_FILES = ("requirements.txt", "environment.yml")


@dataclass(frozen=True)
class Issue:
    """A problem found while reading a plugin, located by file and line."""

    file: str
    line: int
    message: str
    severity: str = "error"  # "error": the item is dropped; "warning": kept, but look at it

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


@dataclass
class Plugin:
    """One plugin folder at one commit."""

    type: str
    name: str
    path: str
    tree_hash: str
    identifiers: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    uses: dict[str, set[str]] = field(default_factory=lambda: {"data": set(), "metrics": set()})
    owner: str = ""
    conda_channels: list[str] = field(default_factory=list)  # from environment.yml
    conda_specs: list[str] = field(default_factory=list)
    env_problem: str | None = None  # an environment.yml that cannot be used

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, self.name)


@dataclass
class Catalog:
    """Every plugin of a domain at one commit, with what each registers and uses."""

    repo: Path
    commit: str
    domain_root: str
    plugins: dict[tuple[str, str], Plugin]
    issues: list[Issue]

    def of_type(self, plugin_type: str) -> list[Plugin]:
        return sorted((p for p in self.plugins.values() if p.type == plugin_type), key=lambda p: p.name)

    def by_identifier(self, plugin_type: str) -> dict[str, Plugin]:
        """Registered id -> plugin (the first folder wins if two register the same id)."""
        found: dict[str, Plugin] = {}
        for plugin in self.of_type(plugin_type):
            for identifier in plugin.identifiers:
                found.setdefault(identifier, plugin)
        return found

    def dependencies(self, benchmark: Plugin) -> list[Plugin]:
        """The data and metric plugins a benchmark plugin uses."""
        deps = []
        for dep_type in ("data", "metrics"):
            for name in sorted(benchmark.uses[dep_type]):
                dep = self.plugins.get((dep_type, name))
                if dep is not None:
                    deps.append(dep)
        return deps

    def code_hash(self, plugin: Plugin) -> str:
        """Content hash of the plugin's code, and for a benchmark also of the data and metrics it uses."""
        parts = [plugin.tree_hash] + [f"{d.type}/{d.name}:{d.tree_hash}" for d in self.dependencies(plugin)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def conda(self, *plugins: Plugin) -> tuple[list[str], list[str], str | None]:
        """Channels (in order, no repeats), conda specs, and the first environment.yml problem, if any."""
        channels: list[str] = []
        specs: set[str] = set()
        problem = None
        for plugin in plugins:
            members = [plugin] + (self.dependencies(plugin) if plugin.type == "benchmarks" else [])
            for p in members:
                channels.extend(c for c in p.conda_channels if c not in channels)
                specs.update(p.conda_specs)
                problem = problem or p.env_problem
        return channels, sorted(specs), problem

    def requirements(self, *plugins: Plugin) -> list[str]:
        """Union of the declared requirements of these plugins and their dependencies, sorted."""
        lines: set[str] = set()
        for plugin in plugins:
            lines.update(plugin.requirements)
            if plugin.type == "benchmarks":
                for dep in self.dependencies(plugin):
                    lines.update(dep.requirements)
        return sorted(lines)


def find_domain_root(repo: Path, rev: str) -> str:
    """The top-level folder that holds `models/` or `benchmarks/` plugin folders."""
    candidates = set()
    for entry in gitrepo.list_tree(repo, rev):
        parts = entry.path.split("/")
        if len(parts) == 4 and parts[1] in ("models", "benchmarks") and parts[3] == "__init__.py":
            candidates.add(parts[0])
    if not candidates:
        raise BadInput(f"no plugin folders (<root>/models/<plugin>/__init__.py) at {rev[:12]} in {repo}")
    if len(candidates) > 1:
        raise BadInput(f"several domain roots ({', '.join(sorted(candidates))}); choose one with --domain-root")
    return candidates.pop()


def load_catalog(repo: Path, rev: str, domain_root: str | None = None) -> Catalog:
    """Read every plugin of the domain at `rev` from git objects (no checkout)."""
    repo = gitrepo.ensure_repository(repo)
    commit = gitrepo.resolve(repo, rev)
    root = domain_root or find_domain_root(repo, commit)
    if "/" in root.strip("/") or root in ("", ".", ".."):
        raise BadInput(f"--domain-root must be a top-level folder name, not {root!r}")
    entries = gitrepo.list_tree(repo, commit, root)
    if not entries:
        raise BadInput(f"domain root {root!r} does not exist at {commit[:12]}")
    plugins: dict[tuple[str, str], Plugin] = {}
    issues: list[Issue] = []
    files_of: dict[tuple[str, str], list[gitrepo.TreeEntry]] = {}
    for entry in entries:
        parts = entry.path.split("/")
        if len(parts) == 3 and parts[1] in PLUGIN_TYPES and entry.kind == "tree":
            problem = folder_problem(parts[2])
            if problem:
                issues.append(Issue(entry.path, 0, problem))
                continue
            plugins[(parts[1], parts[2])] = Plugin(parts[1], parts[2], entry.path, entry.sha)
        elif len(parts) >= 4 and parts[1] in PLUGIN_TYPES and entry.kind == "blob":
            files_of.setdefault((parts[1], parts[2]), []).append(entry)

    wanted = [e.sha for key, files in files_of.items() if key in plugins for e in files
              if e.path.endswith(".py") or e.path.rsplit("/", 1)[-1] in REQUIREMENT_FILES]
    blobs = gitrepo.read_blobs(repo, wanted)
    for key, plugin in list(plugins.items()):
        files = files_of.get(key, [])
        init = next((f for f in files if f.path == f"{plugin.path}/__init__.py"), None)
        if init is None:
            issues.append(Issue(plugin.path, 0, "plugin folder has no __init__.py", "warning"))
        for f in files:
            data = blobs.get(f.sha)
            if data is None:
                continue
            if f.path.rsplit("/", 1)[-1] == "requirements.txt" and f.path.count("/") == 3:
                plugin.requirements.extend(parse_requirements(data.decode("utf-8", "replace")))
            elif f.path.rsplit("/", 1)[-1] == "environment.yml" and f.path.count("/") == 3:
                try:
                    plugin.conda_channels, plugin.conda_specs = read_environment_yml(
                        data.decode("utf-8", "replace"), f.path)
                except EnvError as exc:
                    plugin.env_problem = str(exc)
            elif f.path.endswith(".py"):
                _read_python(plugin, f.path, data, is_init=(f is init), issues=issues)
        plugin.requirements = sorted(set(plugin.requirements))

    _resolve_uses(plugins, issues)
    authors = gitrepo.first_authors(repo, commit, root)
    for plugin in plugins.values():
        owner = authors.get(f"{plugin.path}/__init__.py") or next(
            (a for p, a in authors.items() if p.startswith(plugin.path + "/")), "")
        plugin.owner = owner
    return Catalog(repo, commit, root, plugins, issues)


def parse_requirements(text: str) -> list[str]:
    """Requirement lines, without comments and blanks (pip's -r/-e options are refused later by the locker)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _read_python(plugin: Plugin, path: str, data: bytes, *, is_init: bool, issues: list[Issue]) -> None:
    try:
        tree = ast.parse(data, filename=path)
    except SyntaxError as exc:
        issues.append(Issue(path, exc.lineno or 0, f"syntax error: {exc.msg}"))
        return
    if is_init:
        ids, found = registrations(tree, REGISTRY_NAMES[plugin.type], path)
        issues.extend(found)
        plugin.identifiers.extend(i for i in ids if i not in plugin.identifiers)
    for dep_type, ref in dependency_references(tree):
        plugin.uses[dep_type].add(ref)


def registrations(tree: ast.AST, registry: str, path: str) -> tuple[list[str], list[Issue]]:
    """Identifiers assigned as `registry['id'] = ...`; anything not statically resolvable is reported."""
    found: list[tuple[int, int, str]] = []
    issues: list[Issue] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            if not (isinstance(target, ast.Subscript) and _is_name(target.value, registry)):
                continue
            key = target.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                problem = identifier_problem(key.value)
                if problem:
                    issues.append(Issue(path, target.lineno, f"{registry}[{key.value!r}]: {problem}"))
                else:
                    found.append((target.lineno, target.col_offset, key.value))
            else:
                issues.append(Issue(path, target.lineno,
                                    f"{registry}[...] key is computed ({ast.unparse(key)}); "
                                    "cannot be read without running the plugin", "warning"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_name(node.func.value, registry) \
                and node.func.attr in ("update", "setdefault", "__setitem__"):
            issues.append(Issue(path, node.lineno, f"{registry}.{node.func.attr}(...) is not read; "
                                f"register with {registry}['id'] = ...", "warning"))
    # ast.walk is breadth-first: report in source order
    ids = [identifier for _, _, identifier in sorted(found)]
    return list(dict.fromkeys(ids)), sorted(issues, key=lambda i: i.line)


def dependency_references(tree: ast.AST) -> list[tuple[str, str]]:
    """(type, ref) pairs a module uses: `load_dataset('id')`, `data_registry['id']`, `from x.data.plugin import`."""
    refs: list[tuple[str, str]] = []
    registry_types = {v: k for k, v in REGISTRY_NAMES.items() if k in ("data", "metrics")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in LOADER_NAMES and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                refs.append((LOADER_NAMES[name], "id:" + node.args[0].value))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in registry_types and isinstance(node.slice, ast.Constant):
            refs.append((registry_types[node.value.id], "id:" + str(node.slice.value)))
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            for dep_type in ("data", "metrics"):
                if dep_type in parts and parts.index(dep_type) + 1 < len(parts):
                    refs.append((dep_type, "folder:" + parts[parts.index(dep_type) + 1]))
    return refs


def _resolve_uses(plugins: dict[tuple[str, str], Plugin], issues: list[Issue]) -> None:
    """Turn raw references (`id:x`, `folder:x`) into plugin folder names."""
    by_id: dict[str, dict[str, str]] = {"data": {}, "metrics": {}}
    for plugin in plugins.values():
        if plugin.type in by_id:
            for identifier in plugin.identifiers:
                by_id[plugin.type].setdefault(identifier, plugin.name)
    for plugin in plugins.values():
        resolved: dict[str, set[str]] = {"data": set(), "metrics": set()}
        for dep_type, refs in plugin.uses.items():
            for ref in refs:
                kind, _, value = ref.partition(":")
                name = by_id[dep_type].get(value) if kind == "id" else value
                if name and (dep_type, name) in plugins and (dep_type, name) != plugin.key:
                    resolved[dep_type].add(name)
                elif kind == "id" and plugin.type == "benchmarks":
                    issues.append(Issue(plugin.path, 0, f"uses {dep_type} {value!r}, which no plugin registers",
                                        "warning"))
        plugin.uses = resolved


def _is_name(node: ast.expr, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)
