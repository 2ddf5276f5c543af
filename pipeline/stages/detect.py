"""What a change touches, and what that implies for scoring.

Compatible with Brain-Score core's `parse_plugin_changes` / `get_scoring_info`
(lists instead of space-joined strings), plus what it lacks: renames and
deletions, the benchmarks re-scored through a changed data or metric plugin,
and the problems found on the way, each with file and line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.catalog import gitrepo
from pipeline.catalog.idholders import holders_at_base
from pipeline.catalog.revision_checks import reversed_revisions, uncommitted_edits
from pipeline.catalog.plugins import PLUGIN_TYPES, Catalog, Issue, load_catalog
from pipeline.stages.takeovers import refuse_takeovers

METADATA_FILES = ("metadata.yaml", "metadata.yml")


@dataclass
class Change:
    """The result of `detect`: the contract's keys first, then our additions."""

    modifies_plugins: bool
    changed_plugins: dict[str, list[str]]
    test_all_plugins: list[str]
    is_automergeable: bool
    new_models: list[str]
    new_benchmarks: list[str]
    run_score: bool
    base: str | None = None
    head: str = ""
    domain_root: str = ""
    removed_plugins: dict[str, list[str]] = field(default_factory=dict)
    rescore_benchmarks: dict[str, list[str]] = field(default_factory=dict)  # benchmark id -> why
    metadata_only_plugins: dict[str, list[str]] = field(default_factory=dict)
    issues: list[dict] = field(default_factory=list)  # {file, line, severity, message}

    @property
    def errors(self) -> list[dict]:
        """Problems that dropped a plugin or an identifier (bad input), as opposed to warnings."""
        return [i for i in self.issues if i["severity"] == "error"]

    def to_json(self) -> dict:
        return asdict(self)


def classify_path(path: str, domain_root: str) -> tuple[str, str | None, str | None]:
    """('plugin', type, folder) | ('related', type, None) | ('other', None, None) for one changed path."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != domain_root:
        return ("other", None, None)
    sub = parts[1]
    if sub in PLUGIN_TYPES:
        if len(parts) == 3:  # a file directly in <root>/<type>/: all plugins of the type
            return ("related", sub, None)
        if len(parts) >= 4:
            return ("plugin", sub, parts[2])
    for plugin_type in PLUGIN_TYPES:
        if sub == plugin_type.rstrip("s") + "_helpers":
            return ("related", plugin_type, None)
    return ("other", None, None)


def detect(repo: Path, base: str, head: str, domain_root: str | None = None, cache_dir: Path | None = None
           ) -> tuple[Change, Catalog]:
    """Detect what `base..head` touches; plugin files are read at `head` from git objects."""
    repo = gitrepo.ensure_repository(repo)
    base_commit = gitrepo.resolve(repo, base)
    catalog = load_catalog(repo, head, domain_root, cache_dir)
    root = catalog.domain_root
    changed: dict[str, set[str]] = {t: set() for t in PLUGIN_TYPES}
    metadata_touched: dict[str, set[str]] = {t: set() for t in PLUGIN_TYPES}
    related_types: set[str] = set()
    other_files = 0
    any_plugin_file = False
    for change in gitrepo.changed_files(repo, base_commit, catalog.commit):
        paths = [change.path] + ([change.old_path] if change.old_path else [])
        for path in paths:
            kind, plugin_type, folder = classify_path(path, root)
            if kind == "plugin":
                any_plugin_file = True
                if path.rsplit("/", 1)[-1] in METADATA_FILES:
                    metadata_touched[plugin_type].add(folder)
                else:
                    changed[plugin_type].add(folder)
            elif kind == "related":
                any_plugin_file = True
                related_types.add(plugin_type)
            else:
                other_files += 1
    # who registered each id at the base decides who keeps an id two folders register (pipeline.stages.takeovers)
    catalog.base_holders = holders_at_base(catalog, base_commit, {(t, n) for t in PLUGIN_TYPES for n in changed[t]},
                                           cache_dir)
    change = _summarise(catalog, changed, metadata_touched, related_types, other_files, any_plugin_file, base_commit)
    change.issues += reversed_revisions(repo, base_commit, catalog.commit, base, head)
    change.issues += uncommitted_edits(catalog.repo, catalog.domain_root, head)
    return change, catalog


def detect_all(repo: Path, head: str, domain_root: str | None = None, cache_dir: Path | None = None
               ) -> tuple[Change, Catalog]:
    """Treat every plugin at `head` as new (`--all`)."""
    catalog = load_catalog(repo, head, domain_root, cache_dir)
    changed = {t: {p.name for p in catalog.of_type(t)} for t in PLUGIN_TYPES}
    for plugin_type, folder in catalog.refused_folders:  # a folder refused for its name is still part of "all"
        changed[plugin_type].add(folder)
    empty: dict[str, set[str]] = {t: set() for t in PLUGIN_TYPES}
    change = _summarise(catalog, changed, empty, set(), 0, True, None)
    change.test_all_plugins = list(PLUGIN_TYPES)
    change.issues += uncommitted_edits(catalog.repo, catalog.domain_root, head)
    return change, catalog


def _summarise(catalog: Catalog, changed: dict[str, set[str]], metadata_touched: dict[str, set[str]],
               related_types: set[str], other_files: int, any_plugin_file: bool,
               base_commit: str | None) -> Change:
    present = {t: {name for name in changed[t] if (t, name) in catalog.plugins} for t in PLUGIN_TYPES}
    removed = {t: sorted(changed[t] - present[t]) for t in PLUGIN_TYPES if changed[t] - present[t]}
    metadata_only = {t: sorted(metadata_touched[t] - changed[t]) for t in PLUGIN_TYPES
                     if metadata_touched[t] - changed[t]}

    test_all = set(related_types)
    if test_all & {"data", "metrics"}:
        test_all.add("benchmarks")

    refuse_takeovers(catalog)
    new_models = _identifiers(catalog, "models", present["models"])
    new_benchmarks = _identifiers(catalog, "benchmarks", present["benchmarks"])
    rescore = _rescored_benchmarks(catalog, present, set(new_benchmarks))

    scope = _scope(catalog, changed, rescore)
    issues = [_scoped(i, scope) for i in catalog.issues]
    issues.sort(key=lambda i: (i["severity"] != "error", i["file"], i["line"]))
    return Change(
        modifies_plugins=any_plugin_file,
        changed_plugins={t: sorted(present[t]) for t in PLUGIN_TYPES},
        test_all_plugins=sorted(test_all, key=PLUGIN_TYPES.index),
        is_automergeable=other_files == 0 and not related_types and not metadata_touched_any(metadata_touched)
        and any_plugin_file,
        new_models=new_models,
        new_benchmarks=new_benchmarks,
        run_score=bool(new_models or new_benchmarks or rescore),
        base=base_commit,
        head=catalog.commit,
        domain_root=catalog.domain_root,
        removed_plugins=removed,
        rescore_benchmarks=rescore,
        metadata_only_plugins=metadata_only,
        issues=issues,
    )


def metadata_touched_any(metadata_touched: dict[str, set[str]]) -> bool:
    return any(metadata_touched.values())


def _identifiers(catalog: Catalog, plugin_type: str, folders: set[str]) -> list[str]:
    ids: list[str] = []
    for name in sorted(folders):
        ids.extend(i for i in catalog.plugins[(plugin_type, name)].identifiers if i not in ids)
    return ids


def _rescored_benchmarks(catalog: Catalog, present: dict[str, set[str]], already_new: set[str]
                         ) -> dict[str, list[str]]:
    """Benchmarks not changed themselves that reach a changed plugin (data, metric, or another benchmark),
    directly or through other plugins, with the reason.

    Helper and type-level files (`data_helpers/`, `metrics/__init__.py`) only mean "test all"
    (as in Brain-Score): they are not part of any plugin's code hash, so re-scoring for them
    is an explicit decision (`--force --benchmarks ...`), not an automatic one.
    """
    changed = {(t, name) for t in ("data", "metrics", "benchmarks") for name in present[t]}
    reasons: dict[str, list[str]] = {}
    if not changed:
        return reasons
    for bench in catalog.of_type("benchmarks"):
        why = []
        for dep in catalog.dependencies(bench):
            if dep.key in changed:
                chain = catalog.path_to(bench, dep.key)
                through = f" (through {', '.join(f'{p.type} plugin {p.name}' for p in chain)})" if chain else ""
                why.append(f"uses changed {dep.type} plugin {dep.name}{through}")
        if why:
            for identifier in bench.identifiers:
                if identifier not in already_new:
                    reasons[identifier] = why
    return reasons


def _scope(catalog: Catalog, changed: dict[str, set[str]], rescore: dict[str, list[str]]) -> set[tuple[str, str]]:
    """The plugins this change is about: those it adds or touches, those it re-scores, and what they use."""
    keys = {(t, name) for t in PLUGIN_TYPES for name in changed[t]}
    rescored = set(rescore)
    keys.update(p.key for p in catalog.of_type("benchmarks") if rescored & set(p.identifiers))
    for key in list(keys):
        if key in catalog.plugins:
            keys.update(d.key for d in catalog.dependencies(catalog.plugins[key]))
    return keys


def _scoped(issue: Issue, scope: set[tuple[str, str]]) -> dict:
    """An issue as JSON; an error outside the change's scope is only a warning (it is not this change's fault)."""
    data = asdict(issue)
    key = issue.plugin_key()
    if issue.severity == "error" and (key is None or key not in scope):
        data["severity"] = "warning"
        data["message"] += " (outside this change)"
    return data
