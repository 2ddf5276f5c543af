"""An id has one owner: a folder that registers an id another folder already registers is refused for that id.

Every registry counts, not only models' and benchmarks': a data (or metric, or stimulus set) plugin that
registered the id a benchmark loads would join that benchmark's members, bring its requirements into the
benchmark's environment and be imported in the owner's place (hostile review round 2, F3). Refused means: the id
is taken from the newcomer (an error on its `__init__.py`, `detect` exits 2), the dependency graph is drawn again
without it, and nothing that loads the id is re-scored for it.

Who owns an id is decided at the change's base (`Catalog.base_holders`): the folder that registered it there and
still does. Among several such (a duplicate already in the repository, e.g. a refused takeover merged anyway), and
without a base (`--all`, where every folder holding it is a candidate), the one that named it first in the
history keeps it: its commit is an ancestor of every other's (pipeline.catalog.idholders.oldest). Never name
order: the domain's loader may import the first folder in name order, and `aaa_...` sorts first. When history
does not decide (one commit registered it twice, unrelated histories), and when two folders register an id no
folder held at the base (both new to it in this change), every one of them is refused: the benchmarks that load
it lose it (and fail, with the error in `detect`) rather than run on a folder chosen by its name.

An id whose holder at the base is gone or no longer registers it (a move) is not refused here: the new folder
takes its place, and the old folder's owners decide (pipeline.stages.ownership holds it)."""

from __future__ import annotations

from pipeline.catalog.idholders import oldest
from pipeline.catalog.loaders import PLUGIN_TYPES, REGISTRY_NAMES
from pipeline.catalog.plugins import Catalog, Issue, Plugin

MOVE_HINT = "to move a plugin, delete the old folder in the same change"


def refuse_takeovers(catalog: Catalog) -> None:
    """Take every id a folder may not have away from it, with an error that says why (see the module)."""
    base = catalog.base_holders
    holders: dict[tuple[str, str], list[Plugin]] = {}
    for plugin_type in PLUGIN_TYPES:
        for plugin in catalog.of_type(plugin_type):
            for registry, ids in plugin.registered.items():
                for identifier in ids:
                    holders.setdefault((registry, identifier), []).append(plugin)
    refused = False
    for (registry, identifier), plugins in holders.items():
        if len(plugins) < 2:
            continue
        keeper = _keeper(catalog, registry, identifier, plugins,
                         None if base is None else set(base.get((registry, identifier), ())))
        what = _what(registry)
        for plugin in plugins:
            if plugin is keeper:
                continue
            catalog.unregister(plugin, registry, identifier)
            refused = True
            if keeper is not None:
                message = (f"{what} id {identifier!r} is already registered by {keeper.path}; an id has one owner "
                           f"({MOVE_HINT})")
            else:
                others = ", ".join(p.path for p in plugins if p is not plugin)
                message = (f"{what} id {identifier!r} is registered by {plugin.path} and {others} alike; an id has one "
                           "owner, and which one is meant is not decided by name: refused in each of them until one "
                           "folder alone registers it")
            catalog.issues.append(Issue(f"{plugin.path}/__init__.py", 0, message))
    if refused:
        catalog.relink()


def _keeper(catalog: Catalog, registry: str, identifier: str, plugins: list[Plugin],
            at_base: set[tuple[str, str]] | None) -> Plugin | None:
    """The folder that keeps an id several register (None: none of them)."""
    candidates = plugins if at_base is None else [p for p in plugins if p.key in at_base]
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    first = oldest(catalog.repo, catalog.commit, catalog.domain_root, registry, identifier,
                   [p.key for p in candidates])
    return catalog.plugins[first] if first is not None else None


def _what(registry: str) -> str:
    """'model', 'data', 'stimulus_set'... for a registry's name."""
    for plugin_type, name in REGISTRY_NAMES.items():
        if name == registry:
            return plugin_type[:-1] if plugin_type != "data" else "data"
    return registry.removesuffix("_registry")
