"""The plugin types and the domain's loaders, and how one load or import is matched to the plugins it names:
pure functions over source facts, from which pipeline.catalog.plugins builds the dependency graph."""

from __future__ import annotations

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


def _matches(load: Load, table: dict[str, list[tuple[str, str]]]) -> set[tuple[str, str]] | None:
    """The plugins whose registered ids a load's patterns match (None: the load cannot be bounded). Matched
    without backtracking (`idpattern`): a pattern of many wildcards against a long id is linear, not exponential."""
    if load.patterns is None:
        return None
    found: set[tuple[str, str]] = set()
    for pattern in load.patterns:
        literal = idpattern.literal(pattern)
        if literal is not None:
            found.update(table.get(literal, ()))
            continue
        for identifier, keys in table.items():
            if idpattern.fullmatch(pattern, identifier):
                found.update(keys)
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
