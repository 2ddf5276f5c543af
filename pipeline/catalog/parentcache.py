"""Each benchmark folder's leaderboard parents (`parents`), read once and cached per folder: by the folder's tree
id and the blob id of every file its constructions passed through (the domain's helpers, `<root>/benchmarks/*.py`,
its `__init__.py`, another benchmark's module). So a warm run whose benchmarks and helpers did not change reads no
construction facts and walks nothing, and a change to one helper walks again only the folders that went through it.

The construction facts themselves are blob facts of kind `construction` (`blobfacts`, `pyfacts`), read through the
bounded reader and cached by blob id like every other fact; the walk is bounded in steps per id and per folder."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pipeline.catalog import gitrepo
from pipeline.catalog.parents import resolve_parents
from pipeline.catalog.plugins import TEST_FILE, Issue, Plugin
from pipeline.catalog.sourcefacts import FileFacts
from pipeline.catalog.walker import Walker


def wants_construction(path: str) -> bool:
    """Files a benchmark's construction may pass through: benchmark plugins, `<root>/benchmarks/__init__.py`, the
    domain's `*_helpers/` and its own `__init__.py`."""
    parts = path.split("/")
    return len(parts) >= 2 and (parts[1] == "benchmarks" or parts[1].endswith("_helpers") or parts[1:] == [
        "__init__.py"])


def construction_files(root: str, entries: list[gitrepo.TreeEntry], plugins: dict[tuple[str, str], Plugin],
                       files_of: dict[tuple[str, str], list[gitrepo.TreeEntry]]) -> dict[str, gitrepo.TreeEntry]:
    """path -> entry of every file whose construction facts a walk may read: the benchmark plugins' Python files
    (tests aside), the domain's `__init__.py`, `<root>/benchmarks/*.py` and `<root>/*_helpers/**` (tests aside)."""
    out: dict[str, gitrepo.TreeEntry] = {}
    for entry in entries:
        if entry.kind != "blob" or not entry.path.endswith(".py"):
            continue
        parts = entry.path.split("/")
        if entry.path == f"{root}/__init__.py" or (wants_construction(entry.path) and (
                len(parts) == 3 or (parts[1].endswith("_helpers") and not TEST_FILE.search(entry.path)))):
            out[entry.path] = entry
    for key, plugin in plugins.items():
        if key[0] == "benchmarks":
            for entry in files_of.get(key, []):
                if entry.path.endswith(".py") and not TEST_FILE.search(entry.path[len(plugin.path) + 1:]):
                    out[entry.path] = entry
    return out


def cache_key(plugin: Plugin) -> str:
    return f"parents:{plugin.tree_hash}:{plugin.path}"


def is_current(found: dict | None, files: dict[str, gitrepo.TreeEntry]) -> bool:
    """Whether a cached reading still holds: every file its walks read (or looked for) is as it was."""
    if found is None:
        return False
    return all((files[path].sha if path in files else "") == sha for path, sha in found["deps"].items())


class ModulesRead(Mapping):
    """The construction facts of the files a walk may read (path -> facts), recording which paths a walk asked
    for, present or not: those are what its answer depends on."""

    def __init__(self, files: dict[str, gitrepo.TreeEntry], facts: dict[tuple[str, str], dict]):
        self.files = files
        self.facts = facts
        self.seen: set[str] = set()

    def _facts(self, path: str) -> dict | None:
        entry = self.files.get(path)
        return None if entry is None else self.facts.get(("construction", entry.sha))

    def __getitem__(self, path: str) -> dict:
        self.seen.add(path)
        found = self._facts(path)
        if found is None or "construction" not in found:
            raise KeyError(path)
        return found["construction"]

    def __contains__(self, path: object) -> bool:
        try:
            self[path]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def transient(self) -> bool:
        """Whether a path asked for was not readable this run (a blob missing, a parser that died): not cached."""
        return any((self._facts(p) or {}).get("transient") for p in self.seen)


def read_folder(plugin: Plugin, identifiers: list[str], python: list[tuple[str, dict]], walker: Walker,
                modules: ModulesRead) -> dict:
    """One benchmark folder's parents, versions, runtime identifiers, problems and warning, as JSON with `deps`
    (path -> blob id, "" for a path looked for and absent). `python`: (path, py facts) of its files."""
    work = Plugin(plugin.type, plugin.name, plugin.path, plugin.tree_hash)
    work.identifiers = list(identifiers)
    declared = [d for _, facts in python for fact in [FileFacts.from_json(facts)]
                if not fact.syntax_error and not fact.refused for d in fact.declarations]
    init_path = f"{plugin.path}/__init__.py"
    modules.seen = set()
    resolve_parents(work, walker, init_path, declared)
    issues = []
    if declared and work.parent_problems:  # a plugin that passes no parent= at all hangs nowhere, quietly
        first = sorted(work.parent_problems)[0]
        issues.append([init_path, 0, f"the leaderboard parent of {len(work.parent_problems)} benchmark(s) cannot "
                       f"be read statically (e.g. {first}: {work.parent_problems[first]}); they are listed "
                       "unattached", "warning"])
    return {"parents": work.parents, "versions": work.versions, "parent_problems": work.parent_problems,
            "runtime_ids": work.runtime_ids, "read_by": work.parent_read_by, "issues": issues,
            "deps": {path: (modules.files[path].sha if path in modules.files else "") for path in sorted(modules.seen)},
            "transient": modules.transient() or any(facts.get("transient") for _, facts in python)}


def apply(plugin: Plugin, reading: dict) -> list[Issue]:
    """Fill a benchmark plugin's parents from its folder's parent reading; the warning, if any."""
    plugin.parents, plugin.versions = dict(reading["parents"]), dict(reading["versions"])
    plugin.parent_problems = dict(reading["parent_problems"])
    plugin.runtime_ids, plugin.parent_read_by = dict(reading["runtime_ids"]), dict(reading["read_by"])
    return [Issue(*i) for i in reading["issues"]]
