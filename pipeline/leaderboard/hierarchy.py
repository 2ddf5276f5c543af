"""The leaderboard's tree per domain: the levels above the benchmarks (Brain-Score's, shipped in
hierarchies/default.toml, overridable with the `hierarchy` setting), the dataset nodes brain-score.org curates, and
each benchmark under the parent its plugin passes, or where the hierarchy places it. Parents are looked up in the
benchmark's own domain only (Brain-Score looks them up by name across domains, which hangs one domain's
benchmarks under the other's `behavior`). A domain with no table gets `average_<domain>` (the website's
convention) over every node its plugins name."""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pipeline.errors import BadInput
from pipeline.leaderboard.rules import Rules, check_table, make_rules

DEFAULT_FILE = Path(__file__).parent / "hierarchies" / "default.toml"
DEFAULT_ORDER = 999  # brainscore_core creates a type with order 999 (submission/database.py 360)


@dataclass
class Tree:
    """One domain's nodes for one leaderboard: levels, the benchmarks (leaves) and where each hangs."""

    parents: dict[str, str | None]  # node -> parent; None: a root
    leaves: set[str]
    roots: list[str]  # the domain average first, then the roots shown apart, then unattached ones
    average: str | None  # the node models are ranked by
    engineering: set[str]  # leaves under a root shown apart: their raw score counts, not the ceiled one
    unattached: dict[str, str] = field(default_factory=dict)  # node -> why it hangs under no level
    placed: dict[str, str] = field(default_factory=dict)  # leaf -> the hierarchy's entry that placed it
    order: dict[str, int] = field(default_factory=dict)  # node -> its place among its siblings

    def children(self) -> dict[str, list[str]]:
        """node -> its direct children, as the website sorts them: by `order`, then identifier (mv.sql 40, 58)."""
        out: dict[str, list[str]] = {}
        for child, parent in self.parents.items():
            if parent is not None:
                out.setdefault(parent, []).append(child)
        return {k: sorted(v, key=lambda n: (self.order.get(n, DEFAULT_ORDER), n)) for k, v in out.items()}

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
    place: dict[str, str] = field(default_factory=dict)  # benchmark id or glob -> node (over its plugin's parent)
    visible: dict[str, bool] = field(default_factory=dict)  # node, benchmark id or glob -> shown
    order: dict[str, int] = field(default_factory=dict)
    rules_table: dict = field(default_factory=dict)
    adopt: bool = False  # a node the plugins name and no level places hangs under the root

    def rules(self, forced: str | None = None) -> Rules:
        return make_rules(self.rules_table, "lab", forced)

    def placement(self, *names: str) -> tuple[str, str] | None:
        """(node, entry) a benchmark is placed under by this hierarchy: an exact entry first, else the longest
        glob that matches one of its names (runtime identifier, registry name)."""
        for name in names:
            if name in self.place:
                return self.place[name], name
        globs = sorted((p for p in self.place if any(c in p for c in "*?[")), key=len, reverse=True)
        for pattern in globs:
            if any(fnmatch.fnmatchcase(n, pattern) for n in names if n):
                return self.place[pattern], pattern
        return None

    def shown(self, *names: str) -> bool | None:
        """Whether the hierarchy shows a node or benchmark (None: it does not say)."""
        for name in names:
            if name in self.visible:
                return self.visible[name]
        for pattern in sorted(self.visible, key=len, reverse=True):
            if any(c in pattern for c in "*?[") and any(fnmatch.fnmatchcase(n, pattern) for n in names if n):
                return self.visible[pattern]
        return None

    def tree(self, declared: Mapping[str, str | None], notes: Mapping[str, str | None] | None = None,
             aka: Mapping[str, str] | None = None) -> Tree:
        """The tree of these benchmarks (id -> declared parent, None: none or unreadable, `notes` say why; `aka`:
        id -> its other name, for placements)."""
        notes = notes or {}
        aka = aka or {}
        parents: dict[str, str | None] = dict(self.levels)
        unattached: dict[str, str] = {}
        placed: dict[str, str] = {}
        for leaf, parent in sorted(declared.items()):
            where = self.placement(leaf, aka.get(leaf, ""))
            if where is not None:
                wanted: str | None = where[0] or None
                placed[leaf] = where[1]
            else:
                wanted = self.aliases.get(parent, parent) if parent else None
            if wanted is None:
                parents[leaf] = None
                unattached[leaf] = ("the hierarchy places it as a root (in no average)" if leaf in placed else
                                    notes.get(leaf) or "its plugin passes parent=None (a root, in no average)")
            elif wanted == leaf:
                parents[leaf] = None
                unattached[leaf] = "it declares itself as its parent"
            else:
                parents[leaf] = wanted
                if wanted not in parents and wanted not in declared:
                    if self.adopt and self.root and wanted != self.root:
                        parents[wanted] = self.root
                    else:
                        parents[wanted] = None
                        if wanted != self.root:
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
        return Tree(parents, leaves, ordered, self.root, engineering, unattached, placed, dict(self.order))


def domain_name(domain_root: str) -> str:
    """`brainscore_vision` -> `vision`: the key of a domain's hierarchy."""
    return domain_root.removeprefix("brainscore_")


def generic(name: str) -> Hierarchy:
    """The hierarchy of a domain with no table: `average_<name>` over neural, behavior and every node its plugins
    name; `engineering_<name>` apart; our own rules."""
    average, engineering = f"average_{name}", f"engineering_{name}"
    return Hierarchy(name, average, [engineering],
                     {average: None, engineering: None, f"neural_{name}": average, f"behavior_{name}": average},
                     {"behavior": f"behavior_{name}", "neural": f"neural_{name}", "engineering": engineering},
                     adopt=True)


KEYS = {"root": "text", "apart": "list of text", "adopt": "true/false", "parents": "table of text",
        "aliases": "table of text", "place": "table of text", "visible": "table of true/false",
        "order": "table of whole numbers", "rules": "table"}


def _valid(key: str, value: object) -> bool:
    if key == "root":
        return isinstance(value, str)
    if key == "apart":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if key == "adopt":
        return isinstance(value, bool)
    if key in ("parents", "aliases", "place"):
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if key == "visible":
        return isinstance(value, dict) and all(isinstance(v, bool) for v in value.values())
    if key == "order":
        return isinstance(value, dict) and all(isinstance(v, int) and not isinstance(v, bool)
                                               for v in value.values())
    return key == "rules"


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
            if not _valid(key, value):
                raise BadInput(f"hierarchy file {path}: [{domain}] {key} is not one of "
                               + ", ".join(f"{k} ({v})" for k, v in KEYS.items()))
        if "rules" in table:
            check_table(table["rules"], f"hierarchy file {path}: [{domain}]")
    return data


def load_hierarchies(override: Path | None = None) -> dict[str, Hierarchy]:
    """The shipped hierarchies, with an override file's domains merged over them (its root, apart and adopt
    replace; its parents, aliases, place, visible, order and rules add or change entries). A domain the override
    adds starts from the generic hierarchy of a domain with no table."""
    out: dict[str, Hierarchy] = {}
    for path in [DEFAULT_FILE] + ([Path(override)] if override else []):
        for domain, table in _read(path).items():
            h = out.get(domain) or (generic(domain) if path != DEFAULT_FILE else Hierarchy(domain))
            out[domain] = h
            h.root = table.get("root", h.root) or None
            h.apart = list(table.get("apart", h.apart))
            h.adopt = table.get("adopt", h.adopt)
            h.levels.update({k: (v or None) for k, v in table.get("parents", {}).items()})
            h.aliases.update(table.get("aliases", {}))
            h.place.update(table.get("place", {}))
            h.visible.update(table.get("visible", {}))
            h.order.update(table.get("order", {}))
            h.rules_table.update(table.get("rules", {}))
    return out


def hierarchy_for(domain_root: str, hierarchies: Mapping[str, Hierarchy]) -> Hierarchy:
    """A domain's hierarchy; a domain with none gets the generic one (`average_<domain>` over what it names)."""
    name = domain_name(domain_root)
    return hierarchies.get(domain_root) or hierarchies.get(name) or generic(name)
