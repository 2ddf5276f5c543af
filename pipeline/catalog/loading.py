"""`load_catalog`: one listing of the tree, then each plugin folder's reading (from the cache by tree id, or made
from its files' facts, cached by blob id), then the graph from the readings.

A folder's reading is everything the catalog takes from that folder alone: what it registers, its requirements,
conda specs, resources, the problems found in its files (in the order they are reported), the plugins its imports
name and its loader calls. It depends only on the folder's path and tree, so a warm run builds the catalog from the
readings of the folders that did not change, without listing or reading their files.
The loads are matched against every folder's registrations afterwards: that part depends on the whole repository.
A benchmark folder's leaderboard parents are read as its construction passes them, which may go through files
outside the folder (helpers, another benchmark): they are cached per folder with the blob ids of the files its walk
read (`parentcache`), and walked again only when one of those changed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.tiers import Need
from pipeline.catalog import gitrepo, parentcache
from pipeline.catalog.blobfacts import DOMAIN_FILE_KINDS, PLUGIN_FILE_KINDS
from pipeline.catalog.domainreqs import domain_requirements, domain_requires_python, split_stdlib
from pipeline.catalog.factscache import FactsCache
from pipeline.catalog.ids import folder_problem
from pipeline.catalog.loaders import PLUGIN_TYPES, _domain_loaders, _import_target
from pipeline.catalog.plugins import (TEST_FILE, Catalog, Issue, Plugin, _read_registrations, _resolve_uses,
                                      find_domain_root)
from pipeline.catalog.reading import read_all
from pipeline.catalog.sourcefacts import FileFacts
from pipeline.catalog.walker import Walker
from pipeline.errors import BadInput


def load_catalog(repo: Path, rev: str, domain_root: str | None = None, cache_dir: Path | None = None,
                 workers: int | None = None) -> Catalog:
    """Read every plugin of the domain at `rev` from git objects (no checkout); facts and folder readings cached
    under `cache_dir`; `workers`: processes that parse a cold repository (None: as many cores as pay)."""
    repo = gitrepo.ensure_repository(repo)
    commit = gitrepo.resolve(repo, rev)
    if domain_root:
        root = domain_root
        _check_root(root)
        top = [e for e in gitrepo.list_top(repo, commit) if e.kind == "blob"]
        entries = gitrepo.list_tree(repo, commit, root, sizes=True)
    else:  # one listing of the whole tree finds the root, its files and the top-level ones
        everything = gitrepo.list_tree(repo, commit, sizes=True)
        root = find_domain_root(repo, commit, everything)
        _check_root(root)
        top = [e for e in everything if e.kind == "blob" and "/" not in e.path]
        entries = [e for e in everything if e.path == root or e.path.startswith(root + "/")]
    if not entries:
        raise BadInput(f"domain root {root!r} does not exist at {commit[:12]}")
    plugins: dict[tuple[str, str], Plugin] = {}
    issues: list[Issue] = []
    refused: dict[tuple[str, str], str] = {}
    files_of: dict[tuple[str, str], list[gitrepo.TreeEntry]] = {}
    domain_init = None
    for entry in entries:
        parts = entry.path.split("/")
        if entry.path == f"{root}/__init__.py":
            domain_init = entry
        elif len(parts) == 3 and parts[1] in PLUGIN_TYPES and entry.kind == "tree":
            problem = folder_problem(parts[2])
            if problem:
                issues.append(Issue(entry.path, 0, problem))
                refused[(parts[1], parts[2])] = problem
                continue
            plugins[(parts[1], parts[2])] = Plugin(parts[1], parts[2], entry.path, entry.sha)
        elif len(parts) >= 4 and parts[1] in PLUGIN_TYPES and entry.kind == "blob":
            files_of.setdefault((parts[1], parts[2]), []).append(entry)

    cache = FactsCache(cache_dir)
    parsed: Counter = Counter()
    readings = {key: cache.plugin(_reading_key(p)) for key, p in plugins.items()}
    missing = [key for key, found in readings.items() if found is None]
    wanted = [(kind, e) for key in missing for e in files_of.get(key, []) for kind in _kinds(plugins[key], e)]
    if domain_init is not None and domain_init.kind == "blob":
        wanted.append(("py", domain_init))
    wanted += [(DOMAIN_FILE_KINDS[e.path], e) for e in top if e.path in DOMAIN_FILE_KINDS]
    construction = parentcache.construction_files(root, entries, plugins, files_of)
    parents = {key: cache.plugin(parentcache.cache_key(p)) for key, p in plugins.items() if key[0] == "benchmarks"}
    walk = [key for key, found in parents.items() if not parentcache.is_current(found, construction)]
    if walk:  # read in the same pass as the folders' files, so that a blob wanted as both is parsed once
        wanted += [("construction", e) for e in construction.values()]
        wanted += [("py", e) for key in walk for e in files_of.get(key, []) if _is_python(plugins[key], e)]
    facts = read_all(repo, wanted, cache, parsed, workers)
    for key in missing:
        files = files_of.get(key, [])
        readings[key] = _reading(plugins[key], files, facts)
        if not any(facts[(kind, f.sha)].get("transient") for f in files for kind in _kinds(plugins[key], f)):
            cache.put_plugin(_reading_key(plugins[key]), readings[key])  # a missing blob may be fetched later
    if walk:
        modules = parentcache.ModulesRead(construction, facts)
        walker = Walker(root, modules)
        for key in walk:
            plugin = plugins[key]
            python = [(f.path, facts[("py", f.sha)]) for f in files_of.get(key, []) if _is_python(plugin, f)]
            found = parentcache.read_folder(plugin, readings[key]["identifiers"], python, walker,  # type: ignore[index]
                                            modules)
            parents[key] = found
            if not found.pop("transient"):
                cache.put_plugin(parentcache.cache_key(plugin), found)
    cache.save()

    for key, plugin in plugins.items():
        issues.extend(_apply(plugin, readings[key]))  # type: ignore[arg-type]
        if key in parents:
            issues.extend(parentcache.apply(plugin, parents[key]))  # type: ignore[arg-type]
    init_facts = FileFacts.from_json(facts[("py", domain_init.sha)]) \
        if domain_init is not None and ("py", domain_init.sha) in facts else None
    catalog = Catalog(repo, commit, root, plugins, issues, refused_folders=refused, parsed_files=parsed["py"])
    catalog.parsed, catalog.read_folders, catalog.walked_folders = dict(parsed), len(missing), len(walk)
    _resolve_uses(catalog, {k: r["loads"] for k, r in readings.items()},  # type: ignore[index]
                  {k: r["imports"] for k, r in readings.items()}, _domain_loaders(init_facts))  # type: ignore[index]
    domain_files = {e.path: facts[(DOMAIN_FILE_KINDS[e.path], e.sha)] for e in top if e.path in DOMAIN_FILE_KINDS}
    domain_reqs, catalog.domain_requirements_source, problems = domain_requirements(domain_files)
    catalog.domain_requirements, dropped = split_stdlib(domain_reqs)
    catalog.domain_requires_python = domain_requires_python(domain_files)
    problems += [(catalog.domain_requirements_source, f"requirement {line!r} names a standard-library module; "
                  "it is left out") for line in dropped]
    catalog.issues.extend(Issue(source, 0, message, "warning") for source, message in problems)
    authors = gitrepo.first_authors(repo, commit, root)
    for plugin in plugins.values():
        plugin.owner = authors.get(f"{plugin.path}/__init__.py") or next(
            (a for p, a in authors.items() if p.startswith(plugin.path + "/")), "")
    return catalog


def _check_root(root: str) -> None:
    if "/" in root.strip("/") or root in ("", ".", "..") or root.startswith("-"):
        raise BadInput(f"--domain-root must be a top-level folder name, not {root!r}")


def _reading_key(plugin: Plugin) -> str:
    return f"{plugin.tree_hash}:{plugin.path}"


def _is_python(plugin: Plugin, entry: gitrepo.TreeEntry) -> bool:
    """A Python file whose facts count: tests (test_*.py, tests/, conftest.py...) do not."""
    return entry.path.endswith(".py") and not TEST_FILE.search(entry.path[len(plugin.path) + 1:])


def _requirement_kind(plugin: Plugin, entry: gitrepo.TreeEntry) -> str | None:
    """The kind of a requirement file directly in the folder (requirements.txt, setup.py, environment.yml...)."""
    if entry.path.count("/") != 3:
        return None
    return PLUGIN_FILE_KINDS.get(entry.path.rsplit("/", 1)[-1])


def _kinds(plugin: Plugin, entry: gitrepo.TreeEntry) -> list[str]:
    kinds = ["py"] if _is_python(plugin, entry) else []
    requirement = _requirement_kind(plugin, entry)
    return kinds + [requirement] if requirement else kinds


def _reading(plugin: Plugin, files: list[gitrepo.TreeEntry], facts: dict[tuple[str, str], dict]) -> dict:
    """Everything the catalog takes from one folder alone, as JSON (see the module's docstring)."""
    work = Plugin(plugin.type, plugin.name, plugin.path, plugin.tree_hash)
    issues: list[Issue] = []
    init_path = f"{plugin.path}/__init__.py"
    if not any(f.path == init_path for f in files):
        issues.append(Issue(plugin.path, 0, "plugin folder has no __init__.py", "warning"))
    python = {f.path: FileFacts.from_json(facts[("py", f.sha)]) for f in files if _is_python(plugin, f)}
    for f in files:
        kind = _requirement_kind(plugin, f)
        fact = python.get(f.path)
        if kind is not None:
            _read_requirement_file(work, kind, facts[(kind, f.sha)], f.path, issues)
        elif fact is not None:
            if fact.refused:
                issues.append(Issue(f.path, 0, f"refused: {fact.refused}"))
            elif fact.syntax_error:
                line, msg = fact.syntax_error
                issues.append(Issue(f.path, line, f"syntax error: {msg}"))
            elif f.path == init_path:
                _read_registrations(work, fact, f.path, issues)
    work.requirements = sorted(set(work.requirements))
    imports, loads = [], []
    root = plugin.path.split("/", 1)[0]
    for path, fact in python.items():
        if fact.syntax_error:
            continue
        for ref in fact.imports:
            imports.extend(list(dep) for dep in _import_target(ref.level, ref.module, ref.names, path, root))
        loads.extend([path, load.loader, load.base, load.patterns, load.line, load.text] for load in fact.loads)
    return {"identifiers": work.identifiers, "registered": work.registered, "requirements": work.requirements,
            "conda_channels": work.conda_channels, "conda_specs": work.conda_specs, "env_problem": work.env_problem,
            "setup_dynamic": work.setup_dynamic,
            "resources": {k: [n.mem_bytes, n.gpus, n.time_minutes] for k, n in work.resources.items()},
            "issues": [[i.file, i.line, i.message, i.severity] for i in issues], "imports": imports, "loads": loads}


def _apply(plugin: Plugin, reading: dict) -> list[Issue]:
    """Fill a plugin from its folder's reading; the reading's issues, in order."""
    plugin.identifiers = list(reading["identifiers"])
    plugin.registered = {k: list(v) for k, v in reading["registered"].items()}
    plugin.requirements = list(reading["requirements"])
    plugin.conda_channels, plugin.conda_specs = list(reading["conda_channels"]), list(reading["conda_specs"])
    plugin.env_problem, plugin.setup_dynamic = reading["env_problem"], reading["setup_dynamic"]
    plugin.resources = {k: Need(*v) for k, v in reading["resources"].items()}
    return [Issue(*i) for i in reading["issues"]]


def _read_requirement_file(plugin: Plugin, kind: str, facts: dict, path: str, issues: list[Issue]) -> None:
    """A requirement file's facts into the plugin; a refused one makes the plugin's environment unusable."""
    if facts.get("refused"):
        issues.append(Issue(path, 0, f"refused: {facts['refused']}"))
        if kind != "metadata":
            plugin.env_problem = plugin.env_problem or f"{path}: {facts['refused']}"
        return
    if kind == "requirements":
        _add_requirements(plugin, facts["lines"], path, issues)
    elif kind == "environment":
        if facts.get("problem"):
            plugin.env_problem = f"{path}: {facts['problem']}"
        else:
            plugin.conda_channels, plugin.conda_specs = list(facts["channels"]), list(facts["specs"])
    elif kind == "metadata":
        found, problem = facts["types"][plugin.type]
        plugin.resources = {k: Need(*v) for k, v in found.items()}
        if problem:
            issues.append(Issue(path, 0, f"metadata: {problem}"))
    elif kind == "setup":
        _add_requirements(plugin, facts["requirements"], path, issues)
        if facts["why"]:
            plugin.setup_dynamic = facts["why"]
            issues.append(Issue(path, 0, f"setup.py: {facts['why']}; it is pip-installed inside the job (sandboxed)",
                                "warning"))


def _add_requirements(plugin: Plugin, lines: list[str], path: str, issues: list[Issue]) -> None:
    kept, dropped = split_stdlib(lines)
    plugin.requirements.extend(kept)
    for line in dropped:
        issues.append(Issue(path, 0, f"requirement {line!r} names a standard-library module; it is left out",
                            "warning"))
