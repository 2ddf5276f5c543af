"""Which folders register each id, at a change's base and at its head: what decides who keeps an id that two
folders register (an id has one owner: a folder that registers another folder's id is refused for it).

Every registry counts (models, benchmarks, data, metrics, stimulus sets...): a data plugin that registered the id
a benchmark loads would join that benchmark's members and be imported in its place. A folder the change leaves
alone registers at the base what it registers at the head (the catalog has it); the folders the change touches or
removes are read at the base (their `__init__.py`, through the facts cache and the bounded parse workers)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterable

from pipeline.catalog import gitrepo, owners
from pipeline.catalog.factscache import FactsCache
from pipeline.catalog.ids import identifier_problem
from pipeline.catalog.reading import read_all
from pipeline.catalog.sourcefacts import FileFacts

Folder = tuple[str, str]  # (plugin type, folder name)
Holders = dict[tuple[str, str], list[Folder]]  # (registry, id) -> the folders that register it, in name order
PATHS_PER_CALL = 500  # folders listed by one `git ls-tree` (its argument list stays small)


def registrations_at(repo: Path, rev: str, root: str, folders: Iterable[Folder], cache_dir: Path | None = None
                     ) -> dict[Folder, dict[str, list[str]]]:
    """What each folder's `__init__.py` registers at `rev` (registry -> ids, as the catalog reads them); a folder
    without one at `rev` is left out."""
    paths = {f"{root}/{t}/{n}/__init__.py": (t, n) for t, n in sorted(set(folders))}
    entries: list[gitrepo.TreeEntry] = []
    listed = list(paths)
    for start in range(0, len(listed), PATHS_PER_CALL):
        raw = gitrepo.git(repo, "ls-tree", "-z", "-l", rev, "--", *listed[start:start + PATHS_PER_CALL])
        for record in raw.decode("utf-8", "surrogateescape").split("\0"):
            if not record:
                continue
            meta, path = record.split("\t", 1)
            _mode, kind, sha, size = meta.split()
            if kind == "blob" and path in paths:
                entries.append(gitrepo.TreeEntry(kind, sha, path, int(size) if size.isdigit() else -1))
    if not entries:
        return {}
    cache = FactsCache(cache_dir)
    facts = read_all(repo, [("py", e) for e in entries], cache)
    cache.save()
    found: dict[Folder, dict[str, list[str]]] = {}
    for entry in entries:
        fact = FileFacts.from_json(facts[("py", entry.sha)])
        registered: dict[str, list[str]] = {}
        if not (fact.refused or fact.syntax_error):
            for reg in fact.registrations:
                if reg.key is not None and identifier_problem(reg.key) is None:
                    ids = registered.setdefault(reg.registry, [])
                    if reg.key not in ids:
                        ids.append(reg.key)
        found[paths[entry.path]] = registered
    return found


def holders(registered: dict[Folder, dict[str, list[str]]]) -> Holders:
    """(registry, id) -> the folders registering it, in (type, name) order."""
    out: Holders = {}
    for folder in sorted(registered):
        for registry, ids in registered[folder].items():
            for identifier in ids:
                out.setdefault((registry, identifier), []).append(folder)
    return out


def holders_at_base(catalog, base: str, touched: Iterable[Folder],  # noqa: ANN001 - a plugins.Catalog
                    cache_dir: Path | None = None) -> Holders:
    """Who registered each id at `base`: the folders `touched` (changed or removed by base..head) as read at the
    base, every other folder of the catalog as it is at the head (unchanged since the base)."""
    touched = set(touched)
    registered = {key: {r: list(ids) for r, ids in p.registered.items()}
                  for key, p in catalog.plugins.items() if key not in touched}
    registered.update(registrations_at(catalog.repo, base, catalog.domain_root, touched, cache_dir))
    return holders(registered)


def first_named(repo: Path, head: str, path: str, identifier: str) -> str | None:
    """The oldest commit in `head`'s history that changed how often `path` names `identifier` (git's pickaxe,
    the id as a literal string): when that folder began to register it, or earlier. None: not found, or the history
    could not be read within its bounds (pipeline.catalog.owners)."""
    args = ["git", "-C", str(repo), "-c", "log.showSignature=false", "log", "--no-color", "--no-renames",
            "--format=%H", f"-S{identifier}", head, "--", f":(literal){path}"]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=owners.GIT_SECONDS, stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None
    found = proc.stdout.decode("ascii", "replace").split() if proc.returncode == 0 else []
    return found[-1] if found else None


def oldest(repo: Path, head: str, root: str, registry: str, identifier: str, folders: list[Folder]) -> Folder | None:
    """Of several folders registering one id, the one that named it first: its commit is an ancestor of every
    other's. None when history does not say (registered in one commit, on unrelated histories, or unreadable)."""
    del registry  # the same id in two registries is two ids; the history read is the id's text either way
    first = {f: first_named(repo, head, f"{root}/{f[0]}/{f[1]}/__init__.py", identifier) for f in folders}
    for folder, commit in first.items():
        others = [c for f, c in first.items() if f != folder]
        if commit and all(c and c != commit and _is_ancestor(repo, commit, c) for c in others):
            return folder
    return None


def _is_ancestor(repo: Path, commit: str, other: str) -> bool:
    try:
        proc = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, other],
                              capture_output=True, timeout=owners.GIT_SECONDS, stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return False
    return proc.returncode == 0
