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

from pipeline.catalog import gitrepo
from pipeline.errors import BadInput
from pipeline.catalog.ids import identifier_problem
from pipeline.catalog.loaders import (PLUGIN_TYPES, REGISTRY_NAMES, RegistryIndex, TooCostly, _matches,
                                      _registry_of)
from pipeline.catalog.sourcefacts import FileFacts, Load

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
    parsed: dict[str, int] = field(default_factory=dict)  # files parsed for this catalog, by kind (py, metadata...)
    read_folders: int = 0  # plugin folders read from their files (the rest came from the cache, by tree id)
    walked_folders: int = 0  # benchmark folders whose constructions were walked (the rest: cached, `parentcache`)
    refused_folders: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, folder) -> why
    # (registry, id) -> the folders that registered it at the change's base (set by detect; None: no base, `--all`)
    base_holders: dict[tuple[str, str], list[tuple[str, str]]] | None = None
    _closure: dict[tuple[str, str], list[Plugin]] = field(default_factory=dict, repr=False)
    _links: tuple | None = field(default=None, repr=False)  # what _resolve_uses read: to draw the graph again
    _link_issues: list = field(default_factory=list, repr=False)  # the issues it reported

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

    def unregister(self, plugin: Plugin, registry: str, identifier: str) -> None:
        """Take an id away from a folder (refused: another folder owns it); `relink` then draws the graph again."""
        ids = plugin.registered.get(registry, [])
        if identifier in ids:
            ids.remove(identifier)
        if registry == REGISTRY_NAMES[plugin.type] and identifier in plugin.identifiers:
            plugin.identifiers.remove(identifier)

    def relink(self) -> None:
        """Draw the dependency graph again from the folders' loads and imports, after ids were taken away: a
        folder refused an id is no longer what a load of that id reaches (nor a member of who loads it)."""
        if self._links is None:
            return
        for plugin in self.plugins.values():
            plugin.uses = {t: set() for t in PLUGIN_TYPES}
        stale = {id(i) for i in self._link_issues}
        self.issues[:] = [i for i in self.issues if id(i) not in stale]
        self.unbounded, self.load_calls, self._closure = [], 0, {}
        _resolve_uses(self, *self._links)


def find_domain_root(repo: Path, rev: str, entries: list[gitrepo.TreeEntry] | None = None) -> str:
    """The top-level folder that holds `models/` or `benchmarks/` plugin folders (`entries`: the whole tree at
    `rev`, when the caller has listed it already)."""
    candidates = set()
    for entry in entries if entries is not None else gitrepo.list_tree(repo, rev):
        parts = entry.path.split("/")
        if len(parts) == 4 and parts[1] in ("models", "benchmarks") and parts[3] == "__init__.py":
            candidates.add(parts[0])
    if not candidates:
        raise BadInput(f"no plugin folders (<root>/models/<plugin>/__init__.py) at {rev[:12]} in {repo}")
    if len(candidates) > 1:
        raise BadInput(f"several domain roots ({', '.join(sorted(candidates))}); choose one with --domain-root")
    return candidates.pop()


def load_catalog(repo: Path, rev: str, domain_root: str | None = None, cache_dir: Path | None = None,
                 workers: int | None = None) -> Catalog:
    """Read every plugin of the domain at `rev` from git objects (no checkout); facts cached under `cache_dir`
    (pipeline.catalog.loading)."""
    from pipeline.catalog.loading import load_catalog as load

    return load(repo, rev, domain_root, cache_dir, workers)


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


def _resolve_uses(catalog: Catalog, loads_of: dict[tuple[str, str], list], imports_of: dict[tuple[str, str], list],
                  loaders: dict[str, str]) -> None:
    """Turn each plugin's loads and imports (from its folder's reading) into edges of the dependency graph."""
    catalog._links = (loads_of, imports_of, loaders)
    before = len(catalog.issues)
    try:
        _draw(catalog, loads_of, imports_of, loaders)
    finally:
        catalog._link_issues = catalog.issues[before:]


def _draw(catalog: Catalog, loads_of: dict[tuple[str, str], list], imports_of: dict[tuple[str, str], list],
          loaders: dict[str, str]) -> None:
    root = catalog.domain_root
    plugins = catalog.plugins
    by_registry: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for plugin in plugins.values():
        for registry, ids in plugin.registered.items():
            table = by_registry.setdefault(registry, {})
            for identifier in ids:
                table.setdefault(identifier, []).append(plugin.key)
    indexes = {registry: RegistryIndex(table) for registry, table in by_registry.items()}
    spent: dict[str, list[int]] = {}  # file -> ids its wildcard loader arguments were compared with
    costly: dict[str, str] = {}  # file -> why its loads are read as unbounded (TooCostly)
    for key, plugin in plugins.items():
        prefix = f"{root}/{key[0]}/{key[1]}/"
        for dep_type, dep_name in imports_of.get(key, []):
            dep = (dep_type, dep_name)
            if dep in plugins and dep != key:
                plugin.uses[dep_type].add(dep_name)
        everything_added: set[str] = set()  # registries whose every plugin this plugin already uses
        for path, loader, base, patterns, line, text in loads_of.get(key, []):
            load = Load(loader, base, patterns, line, text)
            registry = _registry_of(load, loaders, root, by_registry)
            if registry is None:
                continue
            catalog.load_calls += 1
            index = indexes.get(registry) or RegistryIndex({})
            table = index.table
            try:
                targets = None if path in costly else _matches(load, index, spent.setdefault(path, [0]))
            except TooCostly as exc:
                costly[path] = str(exc)
                catalog.issues.append(Issue(path, 0, f"refused: {exc}; its loads are read as depending on every "
                                            "plugin of their registry"))
                targets = None
            if targets is None:
                if registry not in everything_added:  # once per plugin and registry, not once per load
                    everything_added.add(registry)
                    for dep in index.everything:
                        if dep != key:
                            plugin.uses[dep[0]].add(dep[1])
                catalog.unbounded.append(UnboundedLoad(key, path, load.line, load.loader, load.text,
                                                       index.dep_types))
                if path not in costly:
                    catalog.issues.append(Issue(
                        path, load.line, f"{load.loader}({load.text}): the id cannot be read statically; depends "
                        f"on every plugin registered in {registry} ({len(table)} ids)", "warning"))
                continue
            if not targets and not path[len(prefix):].startswith("_"):
                if plugin.type in ("benchmarks", "data", "metrics"):
                    catalog.issues.append(Issue(path, load.line, f"{load.loader}({load.text}): no plugin "
                                                f"registers a matching id in {registry}", "warning"))
            for dep in targets:
                if dep != key:
                    plugin.uses[dep[0]].add(dep[1])
