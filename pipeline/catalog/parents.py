"""Each registered benchmark's `parent=`, `version=` and runtime `identifier=`, read as its own construction passes
them: from the registry entry (`benchmark_registry['X'] = lambda: make('V1')`) through the functions, classes and
`super().__init__` calls it reaches, in its plugin, the domain's helpers and `<root>/benchmarks/__init__.py`,
binding parameters to the arguments each call passes, module constants (imported ones too), f-strings, simple
string methods, and literal loop values. Nothing runs: the construction facts are read with `ast`
(`pipeline.catalog.construction`), and the walk is bounded in steps, depth and alternatives.

Where the walk ends without a value, the older reading is tried: the constructor calls whose own `identifier=` can
be the registered id (geirhos2021 registers `getattr(benchmark, ...)` of functions made in a loop). A name that only
appears in the id is never taken for the parent. What stays unknown is reported with its reason.
"""

from __future__ import annotations

from typing import Any

from pipeline.catalog import idpattern
from pipeline.catalog.loaders import _unescape
from pipeline.catalog.walker import Walker
from pipeline.catalog.walker_values import MAX_FOLDER_STEPS, Frame, Reading, TooDeep


def read_registration(walker: Walker, init_path: str, registry: str, identifier: str) -> Reading:
    """The parent, runtime identifier and version of one registered id, from its registry value."""
    walker.steps = 0
    facts = walker.modules.get(init_path)
    value = (facts or {}).get("rg", {}).get(registry, {}).get(identifier)
    if value is None:
        return Reading(why="its registry value cannot be read")
    try:
        return walker.read(walker.construct(value, Frame(init_path, None, key=init_path)), identifier)
    except TooDeep as exc:
        return Reading(why=f"the construction is too deep to follow statically ({exc})")
    except RecursionError:
        return Reading(why="the construction is too deep to follow statically (recursion)")
    except (ValueError, OverflowError) as exc:  # a value the reading bounds missed: unknown, never a crash
        return Reading(why=f"the construction cannot be read statically ({type(exc).__name__})")


def declared_fallback(identifier: str, declarations: list) -> Reading:
    """The older reading (a sound part of it): the constructor calls whose own `identifier=` can be this id; if
    they pass one literal parent (or name it in the id's slot), that parent. Never a name picked from the id.
    The patterns are matched without backtracking (`idpattern`): they come from submitted text."""
    own = [d for d in declarations if d.identifiers and any(idpattern.fullmatch(p, identifier)
                                                             for p in d.identifiers)]
    if not own:
        return Reading(why="")
    slots = {m for d in own if d.parent_in_identifier
             for m in [idpattern.slot(d.parent_in_identifier, identifier)] if m is not None}
    values: set[str | None] = set()
    computed = False
    for d in own:
        if d.parents == []:
            values.add(None)
        elif d.parents is None:
            computed = True
        else:
            for pattern in d.parents:
                literal = _unescape(pattern)
                if literal is None:
                    computed = True
                else:
                    values.add(literal)
    if len(slots) == 1 and (len(values) != 1 or computed):
        values, computed = {slots.pop()}, False
    if len(values) == 1 and not computed:
        versions = {d.version for d in own}
        return Reading(parent=values.pop(), read=True, version=versions.pop() if len(versions) == 1 else None)
    return Reading(why="")


def resolve_parents(plugin: Any, walker: Walker, init_path: str, declarations: list) -> None:
    """Each of the plugin's registered benchmarks: its parent (None: a root, in no average), version and runtime
    identifier as its construction passes them; the declarations' reading where the construction cannot be
    followed; otherwise the reason (`plugin.parent_problems`). The walks of one folder share a budget of steps
    (MAX_FOLDER_STEPS): many ids that each take nearly their own bound cannot stall the read."""
    registry = "benchmark_registry"
    spent = 0
    for identifier in plugin.identifiers:
        if spent > MAX_FOLDER_STEPS:
            reading = Reading(why="the construction is too deep to follow statically (its plugin's ids took more "
                              f"than {MAX_FOLDER_STEPS:,} steps together)")
        else:
            reading = read_registration(walker, init_path, registry, identifier)
            spent += walker.steps
        how = "construction"
        if not reading.read:
            fallback = declared_fallback(identifier, declarations)
            if fallback.read:
                # a constructor whose identifier= pattern is this very id: it runs under this id
                fallback.identifier = reading.identifier or identifier
                reading, how = fallback, "identifier"
        if reading.identifier:
            plugin.runtime_ids[identifier] = reading.identifier
        if reading.read:
            plugin.parents[identifier] = reading.parent or None
            plugin.versions[identifier] = reading.version
            plugin.parent_read_by[identifier] = how
        elif declarations or "parent=" in reading.why or reading.why.startswith("no parent="):
            plugin.parent_problems[identifier] = reading.why or "parent= cannot be read statically"
