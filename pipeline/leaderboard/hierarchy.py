"""The leaderboard's tree per domain: the levels above the benchmarks (Brain-Score's, shipped in
hierarchies/default.toml, overridable with the `hierarchy` setting), and each benchmark under the parent
its plugin declares. Parents are looked up in the benchmark's own domain only (Brain-Score looks them up
by name across domains, which hangs one domain's benchmarks under the other's `behavior`)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pipeline.errors import BadInput

DEFAULT_FILE = Path(__file__).parent / "hierarchies" / "default.toml"


@dataclass
class Tree:
    """One domain's nodes for one leaderboard: levels, the benchmarks (leaves) and where each hangs."""

    parents: dict[str, str | None]  # node -> parent; None: a root
    leaves: set[str]
    roots: list[str]  # the domain average first, then the roots shown apart, then unattached ones
    average: str | None  # the node models are ranked by
    engineering: set[str]  # leaves under a root shown apart: their raw score counts, not the ceiled one
    unattached: dict[str, str] = field(default_factory=dict)  # node -> why it hangs under no level

    def children(self) -> dict[str, list[str]]:
        from pipeline.leaderboard.aggregate import children_of

        return children_of(self.parents)

    def depth(self, node: str) -> int:
        seen, depth = {node}, 0
        while self.parents.get(node) is not None and self.parents[node] not in seen:
            node = self.parents[node]  # type: ignore[assignment]
            seen.add(node)
            depth += 1
        return depth


@dataclass
class Hierarchy:
    domain: str
    root: str | None = None
    apart: list[str] = field(default_factory=list)
    levels: dict[str, str | None] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def tree(self, declared: Mapping[str, str | None], notes: Mapping[str, str | None] | None = None) -> Tree:
        """The tree of these benchmarks (id -> declared parent, None: none or unreadable, `notes` say why)."""
        notes = notes or {}
        parents: dict[str, str | None] = dict(self.levels)
        unattached: dict[str, str] = {}
        for leaf, parent in sorted(declared.items()):
            wanted = self.aliases.get(parent, parent) if parent else None
            if wanted is None:
                parents[leaf] = None
                unattached[leaf] = notes.get(leaf) or "its plugin declares no parent"
            elif wanted == leaf:
                parents[leaf] = None
                unattached[leaf] = "it declares itself as its parent"
            else:
                parents[leaf] = wanted
                if wanted not in parents and wanted not in declared:
                    parents[wanted] = None
                    unattached[wanted] = f"{wanted!r} is not a level of the {self.domain} hierarchy"
        for node in list(parents):  # a loop in an override file: cut it where it closes
            seen = {node}
            current = parents[node]
            while current is not None and current in parents:
                if current in seen:
                    parents[node] = None
                    unattached[node] = "its parents form a loop"
                    break
                seen.add(current)
                current = parents[current]
        leaves = set(declared)
        kids = {p for p in parents.values() if p is not None}
        roots = [n for n in parents if parents[n] is None and (n in kids or n in leaves)]
        first = [r for r in [self.root, *self.apart] if r in roots]
        ordered = first + sorted(r for r in roots if r not in first)

        def top(node: str) -> str:
            seen = {node}
            while parents.get(node) is not None and parents[node] not in seen:
                node = parents[node]  # type: ignore[assignment]
                seen.add(node)
            return node

        engineering = {leaf for leaf in leaves if top(leaf) in self.apart}
        return Tree(parents, leaves, ordered, self.root, engineering, unattached)


def domain_name(domain_root: str) -> str:
    """`brainscore_vision` -> `vision`: the key of a domain's hierarchy."""
    return domain_root.removeprefix("brainscore_")


def _read(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"hierarchy file {path}: cannot be read ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"hierarchy file {path}: not TOML ({exc})") from None
    for domain, table in data.items():
        if not isinstance(table, dict):
            raise BadInput(f"hierarchy file {path}: [{domain}] must be a table")
        for key, value in table.items():
            ok = {"root": isinstance(value, str), "apart": isinstance(value, list) and all(isinstance(v, str)
                                                                                       for v in value),
                  "parents": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
                  "aliases": isinstance(value, dict) and all(isinstance(v, str) for v in value.values())}.get(key)
            if not ok:
                raise BadInput(f"hierarchy file {path}: [{domain}] {key} is not one of root (text), apart (list), "
                               "parents and aliases (tables of text)")
    return data


def load_hierarchies(override: Path | None = None) -> dict[str, Hierarchy]:
    """The shipped hierarchies, with an override file's domains merged over them (its root and apart replace,
    its parents and aliases add or change entries)."""
    out: dict[str, Hierarchy] = {}
    for path in [DEFAULT_FILE] + ([Path(override)] if override else []):
        for domain, table in _read(path).items():
            h = out.setdefault(domain, Hierarchy(domain))
            h.root = table.get("root", h.root) or None
            h.apart = list(table.get("apart", h.apart))
            h.levels.update({k: (v or None) for k, v in table.get("parents", {}).items()})
            h.aliases.update(table.get("aliases", {}))
    return out


def hierarchy_for(domain_root: str, hierarchies: Mapping[str, Hierarchy]) -> Hierarchy:
    """A domain's hierarchy; a domain with none has no levels (its benchmarks hang unattached, nothing ranks)."""
    name = domain_name(domain_root)
    return hierarchies.get(domain_root) or hierarchies.get(name) or Hierarchy(name)
