"""The plugin layout, its registries and its dependency graph, read from git objects with `ast`.

Layout (Brain-Score's): `<domain_root>/{models,benchmarks,data,metrics}/<plugin>/__init__.py`,
where `__init__.py` registers entries as `model_registry['id'] = ...`. Nothing here
imports or runs plugin code: registries and loader calls are parsed (`sourcefacts`),
never executed, and each file's facts are cached by blob id.

A plugin uses another when any of its files (tests aside) calls one of the domain's
loaders (`load_dataset`, `load_stimulus_set`, `load_metric`, `load_ceiling`,
`load_benchmark`, `load_model`, or whatever the domain's `__init__.py` defines) with an
id that plugin registers, reads its registry, or imports its module. The graph is
followed transitively: a benchmark's code hash and environment cover every plugin it
reaches, and a changed data plugin re-scores every benchmark that reaches it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from envs.conda import read_environment_yml
from envs.lock import EnvError
from pipeline.catalog import gitrepo
from pipeline.catalog.domainreqs import parse_requirements, setup_py_requirements, split_stdlib
from pipeline.errors import BadInput
from pipeline.catalog.ids import folder_problem, identifier_problem
from pipeline.catalog.factscache import FactsCache
from pipeline.catalog.loaders import (PLUGIN_TYPES, REGISTRY_NAMES, _domain_loaders, _import_target, _matches,
                                     _registry_of)
from pipeline.catalog.parents import construction_walker, resolve_parents
from pipeline.catalog.sourcefacts import FileFacts, read_facts, wants_construction

REQUIREMENT_FILES = ("requirements.txt", "environment.yml", "setup.py", "metadata.yml", "metadata.yaml")
TEST_FILE = re.compile(r"(^|/)(tests?/|test\.py$|test_[^/]*\.py$|[^/]*_test\.py$|conftest\.py$)")


@dataclass(frozen=True)
class Issue:
    """A problem found while reading a plugin, located by file and line."""

    file: str
    line: int
    message: str
    severity: str = "error"  # "error": the item is dropped; "warning": kept, but look at it

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"

    def plugin_key(self) -> tuple[str, str] | None:
        """(type, folder) of the plugin this issue is about, if it is about one."""
        return plugin_key_of(self.file)


def plugin_key_of(path: str) -> tuple[str, str] | None:
    """(type, folder) of the plugin a repository path `<root>/<type>/<folder>/...` belongs to, else None."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] in PLUGIN_TYPES:
        return (parts[1], parts[2])
    return None


@dataclass
class Plugin:
    """One plugin folder at one commit."""

    type: str
    name: str
    path: str
    tree_hash: str
    identifiers: list[str] = field(default_factory=list)  # ids in the type's own registry
    registered: dict[str, list[str]] = field(default_factory=dict)  # every registry -> ids (stimulus sets too)
    requirements: list[str] = field(default_factory=list)
    uses: dict[str, set[str]] = field(default_factory=lambda: {t: set() for t in PLUGIN_TYPES})
    owner: str = ""
    conda_channels: list[str] = field(default_factory=list)  # from environment.yml
    conda_specs: list[str] = field(default_factory=list)
    env_problem: str | None = None  # an environment.yml that cannot be used
    setup_dynamic: str | None = None  # a setup.py whose install_requires cannot be read statically: why
    parents: dict[str, str | None] = field(default_factory=dict)  # benchmark id -> declared parent (None: none)
    versions: dict[str, int | None] = field(default_factory=dict)  # benchmark id -> declared version
    parent_problems: dict[str, str] = field(default_factory=dict)  # benchmark id -> why its parent is unknown
    runtime_ids: dict[str, str] = field(default_factory=dict)  # benchmark id -> the identifier= it runs as
    parent_read_by: dict[str, str] = field(default_factory=dict)  # benchmark id -> "construction" | "identifier"
    resources: dict = field(default_factory=dict)  # metadata.yml `resources:`: '' (folder) or id -> tiers.Need

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, self.name)


@dataclass(frozen=True)
class UnboundedLoad:
    """A loader call whose id cannot be read statically: the plugin depends on every plugin of that type."""

    plugin: tuple[str, str]
    file: str
    line: int
    loader: str
    argument: str
    depends_on: str  # the plugin type


@dataclass
class Catalog:
    """Every plugin of a domain at one commit, with what each registers and uses."""

    repo: Path
    commit: str
    domain_root: str
    plugins: dict[tuple[str, str], Plugin]
    issues: list[Issue]
    domain_requirements: list[str] = field(default_factory=list)  # the repository's own (pyproject.toml...)
    domain_requirements_source: str = ""
    domain_requires_python: str = ""  # [project].requires-python: a conda environment's interpreter
    unbounded: list[UnboundedLoad] = field(default_factory=list)
    load_calls: int = 0  # loader calls and registry reads seen (for measurements)
    parsed_files: int = 0  # Python files parsed for this catalog (the rest came from the facts cache)
    refused_folders: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, folder) -> why
    _closure: dict[tuple[str, str], list[Plugin]] = field(default_factory=dict, repr=False)

    def of_type(self, plugin_type: str) -> list[Plugin]:
        return sorted((p for p in self.plugins.values() if p.type == plugin_type), key=lambda p: p.name)

    def by_identifier(self, plugin_type: str) -> dict[str, Plugin]:
        """Registered id -> plugin (the first folder wins if two register the same id)."""
        found: dict[str, Plugin] = {}
        for plugin in self.of_type(plugin_type):
            for identifier in plugin.identifiers:
                found.setdefault(identifier, plugin)
        return found

    def dependencies(self, plugin: Plugin) -> list[Plugin]:
        """Every plugin `plugin` reaches through the graph (itself excluded), sorted by type and name."""
        cached = self._closure.get(plugin.key)
        if cached is not None:
            return cached
        seen: set[tuple[str, str]] = {plugin.key}
        todo = [plugin]
        found: list[Plugin] = []
        while todo:
            current = todo.pop()
            for dep_type, names in current.uses.items():
                for name in names:
                    key = (dep_type, name)
                    if key not in seen and key in self.plugins:
                        seen.add(key)
                        found.append(self.plugins[key])
                        todo.append(self.plugins[key])
        found.sort(key=lambda p: (PLUGIN_TYPES.index(p.type), p.name))
        self._closure[plugin.key] = found
        return found

    def path_to(self, plugin: Plugin, target: tuple[str, str]) -> list[Plugin]:
        """The chain of plugins from `plugin` to `target` (both ends excluded), shortest first found."""
        parent: dict[tuple[str, str], tuple[str, str] | None] = {plugin.key: None}
        queue = [plugin.key]
        while queue:
            key = queue.pop(0)
            if key == target:
                chain = []
                step = parent[key]
                while step is not None and step != plugin.key:
                    chain.append(self.plugins[step])
                    step = parent[step]
                return list(reversed(chain))
            for dep_type, names in self.plugins[key].uses.items():
                for name in sorted(names):
                    nxt = (dep_type, name)
                    if nxt in self.plugins and nxt not in parent:
                        parent[nxt] = key
                        queue.append(nxt)
        return []

    def code_hash(self, plugin: Plugin) -> str:
        """Content hash of the plugin's code and of every plugin it reaches."""
        parts = [plugin.tree_hash] + [f"{d.type}/{d.name}:{d.tree_hash}" for d in self.dependencies(plugin)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def members(self, *plugins: Plugin) -> list[Plugin]:
        """These plugins and everything they reach, without repeats."""
        out: dict[tuple[str, str], Plugin] = {}
        for plugin in plugins:
            for p in [plugin, *self.dependencies(plugin)]:
                out.setdefault(p.key, p)
        return list(out.values())

    def conda(self, *plugins: Plugin) -> tuple[list[str], list[str], str | None]:
        """Channels (in order, no repeats), conda specs, and the first environment.yml problem, if any."""
        channels: list[str] = []
        specs: set[str] = set()
        problem = None
        for p in self.members(*plugins):
            channels.extend(c for c in p.conda_channels if c not in channels)
            specs.update(p.conda_specs)
            problem = problem or p.env_problem
        return channels, sorted(specs), problem

    def requirements(self, *plugins: Plugin) -> list[str]:
        """The domain repository's own requirements, and those of these plugins and everything they reach."""
        lines: set[str] = set(self.domain_requirements)
        for p in self.members(*plugins):
            lines.update(p.requirements)
        return sorted(lines)

    def setup_dynamic(self, *plugins: Plugin) -> list[str]:
        """Plugin folders (type/name) whose setup.py must be installed inside the job."""
        return sorted(f"{p.type}/{p.name}" for p in self.members(*plugins) if p.setup_dynamic)


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


def load_catalog(repo: Path, rev: str, domain_root: str | None = None, cache_dir: Path | None = None) -> Catalog:
    """Read every plugin of the domain at `rev` from git objects (no checkout); facts cached under `cache_dir`."""
    from pipeline.catalog.domainreqs import domain_requirements, domain_requires_python

    repo = gitrepo.ensure_repository(repo)
    commit = gitrepo.resolve(repo, rev)
    root = domain_root or find_domain_root(repo, commit)
    if "/" in root.strip("/") or root in ("", ".", "..") or root.startswith("-"):
        raise BadInput(f"--domain-root must be a top-level folder name, not {root!r}")
    entries = gitrepo.list_tree(repo, commit, root)
    if not entries:
        raise BadInput(f"domain root {root!r} does not exist at {commit[:12]}")
    plugins: dict[tuple[str, str], Plugin] = {}
    issues: list[Issue] = []
    refused: dict[tuple[str, str], str] = {}
    files_of: dict[tuple[str, str], list[gitrepo.TreeEntry]] = {}
    domain_init = None
    helper_files: list[gitrepo.TreeEntry] = []  # read only for what a benchmark's construction passes through
    for entry in entries:
        parts = entry.path.split("/")
        if entry.path == f"{root}/__init__.py":
            domain_init = entry
        elif entry.kind == "blob" and entry.path.endswith(".py") and wants_construction(entry.path) and (
                len(parts) == 3 or (parts[1].endswith("_helpers") and not TEST_FILE.search(entry.path))):
            helper_files.append(entry)
        elif len(parts) == 3 and parts[1] in PLUGIN_TYPES and entry.kind == "tree":
            problem = folder_problem(parts[2])
            if problem:
                issues.append(Issue(entry.path, 0, problem))
                refused[(parts[1], parts[2])] = problem
                continue
            plugins[(parts[1], parts[2])] = Plugin(parts[1], parts[2], entry.path, entry.sha)
        elif len(parts) >= 4 and parts[1] in PLUGIN_TYPES and entry.kind == "blob":
            files_of.setdefault((parts[1], parts[2]), []).append(entry)

    cache = FactsCache(cache_dir / "sourcefacts.json" if cache_dir else None)
    python_files = [e for key, files in files_of.items() if key in plugins for e in files if e.path.endswith(".py")
                    and not TEST_FILE.search(e.path[len(f"{root}/{key[0]}/{key[1]}/"):])]
    if domain_init is not None:
        python_files.append(domain_init)
    python_files.extend(helper_files)
    facts: dict[str, FileFacts] = {}
    missing = []
    for entry in python_files:
        known = cache.get(entry.sha)
        if known is None or (known.construction is None and not known.syntax_error
                             and wants_construction(entry.path)):
            missing.append(entry)  # (a blob first read elsewhere has no construction facts: read it again)
        else:
            facts[entry.sha] = known
    requirement_files = [e for key, files in files_of.items() if key in plugins for e in files
                         if e.path.count("/") == 3 and e.path.rsplit("/", 1)[-1] in REQUIREMENT_FILES]
    blobs = gitrepo.read_blobs(repo, [e.sha for e in missing] + [e.sha for e in requirement_files])
    for entry in missing:
        facts[entry.sha] = read_facts(blobs.get(entry.sha, b""), entry.path)
        cache.put(entry.sha, facts[entry.sha])
    cache.save()

    walker = construction_walker(root, python_files, facts)
    for key, plugin in plugins.items():
        files = files_of.get(key, [])
        init_path = f"{plugin.path}/__init__.py"
        if not any(f.path == init_path for f in files):
            issues.append(Issue(plugin.path, 0, "plugin folder has no __init__.py", "warning"))
        for f in files:
            name = f.path.rsplit("/", 1)[-1]
            if f in requirement_files:
                _read_requirement_file(plugin, name, blobs.get(f.sha, b""), f.path, issues)
            elif f.sha in facts:
                fact = facts[f.sha]
                if fact.syntax_error:
                    line, msg = fact.syntax_error
                    issues.append(Issue(f.path, line, f"syntax error: {msg}"))
                elif f.path == init_path:
                    _read_registrations(plugin, fact, f.path, issues)
        plugin.requirements = sorted(set(plugin.requirements))
        if plugin.type == "benchmarks":
            declared = [d for f in files if f.sha in facts and not facts[f.sha].syntax_error
                        for d in facts[f.sha].declarations]
            resolve_parents(plugin, walker, init_path, declared)
            if declared and plugin.parent_problems:  # a plugin that passes no parent= at all hangs nowhere, quietly
                first = sorted(plugin.parent_problems)[0]
                issues.append(Issue(init_path, 0, f"the leaderboard parent of {len(plugin.parent_problems)} "
                                    f"benchmark(s) cannot be read statically (e.g. {first}: "
                                    f"{plugin.parent_problems[first]}); they are listed unattached", "warning"))

    loaders = _domain_loaders(facts.get(domain_init.sha) if domain_init else None)
    catalog = Catalog(repo, commit, root, plugins, issues, refused_folders=refused, parsed_files=len(missing))
    _resolve_uses(catalog, files_of, facts, loaders)
    domain_reqs, catalog.domain_requirements_source, problems = domain_requirements(repo, commit)
    catalog.domain_requirements, dropped = split_stdlib(domain_reqs)
    catalog.domain_requires_python = domain_requires_python(repo, commit)
    problems += [(catalog.domain_requirements_source, f"requirement {line!r} names a standard-library module; "
                  "it is left out") for line in dropped]
    issues.extend(Issue(source, 0, message, "warning") for source, message in problems)
    authors = gitrepo.first_authors(repo, commit, root)
    for plugin in plugins.values():
        owner = authors.get(f"{plugin.path}/__init__.py") or next(
            (a for p, a in authors.items() if p.startswith(plugin.path + "/")), "")
        plugin.owner = owner
    return catalog


def _read_registrations(plugin: Plugin, fact: FileFacts, path: str, issues: list[Issue]) -> None:
    own = REGISTRY_NAMES[plugin.type]
    for reg in fact.registrations:
        if reg.key is None:
            issues.append(Issue(path, reg.line, f"{reg.registry}[{reg.text}] key is computed; cannot be read "
                                "without running the plugin" if not reg.text.startswith(".") else
                                f"{reg.registry}{reg.text} is not read; register with {reg.registry}['id'] = ...",
                                "warning"))
            continue
        problem = identifier_problem(reg.key)
        if problem:
            issues.append(Issue(path, reg.line, f"{reg.registry}[{reg.key!r}]: {problem}"))
            continue
        ids = plugin.registered.setdefault(reg.registry, [])
        if reg.key not in ids:
            ids.append(reg.key)
    plugin.identifiers = list(plugin.registered.get(own, []))


def _read_requirement_file(plugin: Plugin, name: str, data: bytes, path: str, issues: list[Issue]) -> None:
    text = data.decode("utf-8", "replace")
    if name == "requirements.txt":
        _add_requirements(plugin, parse_requirements(text), path, issues)
    elif name == "environment.yml":
        try:
            plugin.conda_channels, plugin.conda_specs = read_environment_yml(text, path)
        except EnvError as exc:
            plugin.env_problem = str(exc)
    elif name in ("metadata.yml", "metadata.yaml"):
        from pipeline.capacity.resources import read_resources

        plugin.resources, problem = read_resources(text, plugin.type)
        if problem:
            issues.append(Issue(path, 0, f"metadata: {problem}"))
    elif name == "setup.py":
        requirements, why = setup_py_requirements(text)
        _add_requirements(plugin, requirements, path, issues)
        if why:
            plugin.setup_dynamic = why
            issues.append(Issue(path, 0, f"setup.py: {why}; it is pip-installed inside the job (sandboxed)",
                                "warning"))


def _add_requirements(plugin: Plugin, lines: list[str], path: str, issues: list[Issue]) -> None:
    kept, dropped = split_stdlib(lines)
    plugin.requirements.extend(kept)
    for line in dropped:
        issues.append(Issue(path, 0, f"requirement {line!r} names a standard-library module; it is left out",
                            "warning"))


def _resolve_uses(catalog: Catalog, files_of: dict[tuple[str, str], list[gitrepo.TreeEntry]],
                  facts: dict[str, FileFacts], loaders: dict[str, str]) -> None:
    """Turn each plugin's loads and imports into edges of the dependency graph."""
    root = catalog.domain_root
    plugins = catalog.plugins
    by_registry: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for plugin in plugins.values():
        for registry, ids in plugin.registered.items():
            table = by_registry.setdefault(registry, {})
            for identifier in ids:
                table.setdefault(identifier, []).append(plugin.key)
    compiled: dict[str, re.Pattern] = {}
    for key, plugin in plugins.items():
        prefix = f"{root}/{key[0]}/{key[1]}/"
        for f in files_of.get(key, []):
            fact = facts.get(f.sha)
            if fact is None or fact.syntax_error:
                continue
            for ref in fact.imports:
                target = _import_target(ref.level, ref.module, ref.names, f.path, root)
                for dep in target:
                    if dep in plugins and dep != key:
                        plugin.uses[dep[0]].add(dep[1])
            for load in fact.loads:
                registry = _registry_of(load, loaders, root, by_registry)
                if registry is None:
                    continue
                catalog.load_calls += 1
                table = by_registry.get(registry, {})
                targets = _matches(load, table, compiled)
                if targets is None:
                    dep_types = sorted({k[0] for keys in table.values() for k in keys})
                    for keys in table.values():
                        for dep in keys:
                            if dep != key:
                                plugin.uses[dep[0]].add(dep[1])
                    catalog.unbounded.append(UnboundedLoad(key, f.path, load.line, load.loader, load.text,
                                                           ",".join(dep_types)))
                    catalog.issues.append(Issue(
                        f.path, load.line, f"{load.loader}({load.text}): the id cannot be read statically; depends "
                        f"on every plugin registered in {registry} ({len(table)} ids)", "warning"))
                    continue
                if not targets and not f.path[len(prefix):].startswith("_"):
                    if plugin.type in ("benchmarks", "data", "metrics"):
                        catalog.issues.append(Issue(f.path, load.line, f"{load.loader}({load.text}): no plugin "
                                                    f"registers a matching id in {registry}", "warning"))
                for dep in targets:
                    if dep != key:
                        plugin.uses[dep[0]].add(dep[1])


