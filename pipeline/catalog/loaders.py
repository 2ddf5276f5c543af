"""The plugin types and the domain's loaders, and how one load or import is matched to the plugins it names:
pure functions over source facts, from which pipeline.catalog.plugins builds the dependency graph."""

from __future__ import annotations

import bisect
import sys

from pipeline.catalog import idpattern
from pipeline.catalog.sourcefacts import FileFacts, Load


PLUGIN_TYPES: tuple[str, ...] = ("models", "benchmarks", "data", "metrics")
REGISTRY_NAMES = {t: t.rstrip("s") + "_registry" for t in PLUGIN_TYPES}  # the registry that names a plugin's ids
# Brain-Score's loaders, used when the domain's __init__.py does not say otherwise.
DEFAULT_LOADERS = {
    "load_dataset": "data_registry", "load_data": "data_registry", "load_stimulus_set": "stimulus_set_registry",
    "load_metric": "metric_registry", "load_ceiling": "metric_registry", "load_benchmark": "benchmark_registry",
    "load_model": "model_registry",
}


def _domain_loaders(init: FileFacts | None) -> dict[str, str]:
    """Loader function -> the registry it reads, from the domain's `__init__.py` over Brain-Score's defaults."""
    loaders = dict(DEFAULT_LOADERS)
    defs = init.loader_defs if init else {}
    for name in defs:
        seen = set()
        current = name
        while current in defs and current not in seen:
            seen.add(current)
            kind, _, value = defs[current].partition(":")
            if kind == "registry":
                loaders[name] = value
                break
            if kind == "type" and value in REGISTRY_NAMES:
                loaders[name] = REGISTRY_NAMES[value]
                break
            if kind == "loader":
                if value in defs:
                    current = value
                    continue
                if value in DEFAULT_LOADERS:
                    loaders[name] = DEFAULT_LOADERS[value]
                break
            break
    return loaders


def _registry_of(load: Load, loaders: dict[str, str], root: str,
                 by_registry: dict[str, dict[str, list[tuple[str, str]]]]) -> str | None:
    """The registry a load reads, or None when it is not one of the domain's loaders."""
    if load.base and load.base != root:
        return None  # `self.load_x(...)`, `np.load_x(...)`: someone else's function
    if load.loader.endswith("_registry"):
        return load.loader if load.loader in by_registry or load.loader in loaders.values() else None
    return loaders.get(load.loader)


MAX_MATCH_STEPS = 200_000  # ids compared with one file's wildcard loader arguments (vision: 154 at most)


class TooCostly(Exception):
    """A file whose loader arguments would be compared with more than MAX_MATCH_STEPS registered ids."""


class RegistryIndex:
    """The ids registered in one registry, sorted as written and reversed, built once per catalog: a wildcard
    pattern is compared only with the ids that start with its first literal part or end with its last, whichever
    are fewer (issue 35 round 2: comparing every pattern with every id made each detect quadratic). Also what an
    unbounded load depends on (every plugin of the registry), computed once."""

    def __init__(self, table: dict[str, list[tuple[str, str]]]):
        self.table = table
        self.ids = sorted(table)
        self.reversed_ids = sorted(identifier[::-1] for identifier in table)
        self.everything = sorted({key for keys in table.values() for key in keys})
        self.dep_types = ",".join(sorted({key[0] for key in self.everything}))

    def candidates(self, pattern: str) -> tuple[int, list[str]]:
        """(how many, the ids) that can fully match a wildcard pattern, by its literal prefix or suffix."""
        segments = idpattern._segments(pattern) or ("", "")  # a slot pattern: every id
        lo, hi = _prefix_range(self.ids, segments[0])
        rlo, rhi = _prefix_range(self.reversed_ids, segments[-1][::-1])
        if hi - lo <= rhi - rlo:
            return hi - lo, self.ids[lo:hi]
        return rhi - rlo, [self.reversed_ids[i][::-1] for i in range(rlo, rhi)]


def _prefix_range(ordered: list[str], prefix: str) -> tuple[int, int]:
    """The slice of a sorted list whose items start with `prefix`."""
    lo = bisect.bisect_left(ordered, prefix)
    end = prefix.rstrip(chr(sys.maxunicode))  # the least text above every text that starts with `prefix`
    if not end:
        return lo, len(ordered)
    return lo, bisect.bisect_left(ordered, end[:-1] + chr(ord(end[-1]) + 1), lo)


def _matches(load: Load, index: RegistryIndex | dict[str, list[tuple[str, str]]],
             spent: list[int] | None = None) -> set[tuple[str, str]] | None:
    """The plugins whose registered ids a load's patterns match (None: the load cannot be bounded). Matched
    without backtracking (`idpattern`): a pattern of many wildcards against a long id is linear, not exponential.
    A wildcard pattern is compared only with the ids its literal prefix or suffix allows; `spent[0]` counts those
    comparisons for the load's file, which is TooCostly past MAX_MATCH_STEPS."""
    if load.patterns is None:
        return None
    if not isinstance(index, RegistryIndex):
        index = RegistryIndex(index)
    spent = spent if spent is not None else [0]
    found: set[tuple[str, str]] = set()
    for pattern in load.patterns:
        literal = idpattern.literal(pattern)
        if literal is not None:
            found.update(index.table.get(literal, ()))
            continue
        count, identifiers = index.candidates(pattern)
        spent[0] += count + 1
        if spent[0] > MAX_MATCH_STEPS:
            raise TooCostly(f"its loader arguments would be compared with more than {MAX_MATCH_STEPS:,} registered "
                            "ids")
        for identifier in identifiers:
            if idpattern.fullmatch(pattern, identifier):
                found.update(index.table[identifier])
    return found


def _unescape(pattern: str) -> str | None:
    """The literal a pattern stands for, or None when it has a wildcard."""
    return idpattern.literal(pattern)


def _import_target(level: int, module: str, names: list[str], path: str, root: str) -> list[tuple[str, str]]:
    """(type, folder) of the plugins an import names: `root.data.x`, `from root.data import x`, `from ..x import`."""
    if level:
        package = path.split("/")[:-1]  # the file's package (for __init__.py, the folder itself)
        if level - 1 > len(package):
            return []
        base = package[:len(package) - (level - 1)]
        dotted = ".".join(base + ([module] if module else []))
    else:
        dotted = module
    parts = dotted.split(".")
    if not parts or parts[0] != root:
        return []
    out = []
    if len(parts) >= 3 and parts[1] in PLUGIN_TYPES:
        out.append((parts[1], parts[2]))
    elif len(parts) == 2 and parts[1] in PLUGIN_TYPES:
        out.extend((parts[1], name) for name in names)
    return out
