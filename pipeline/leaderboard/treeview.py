"""`score-plugins tree`: where each benchmark of a repository hangs in the leaderboard, read statically (no
plugin runs): its declared parent (or why it cannot be read), the level above, and the leaves per parent.
For a plugin author checking `parent=`, and for an admin comparing the tree with brain-score.org's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.leaderboard.hierarchy import hierarchy_for, load_hierarchies
from pipeline.catalog.plugins import load_catalog


def repository_tree(repo: Path, rev: str, domain_root: str | None, cache_dir: Path | None,
                    hierarchy_file: Path | None) -> dict:
    """Every registered benchmark with its parent (None: unreadable, with the reason), the leaves per parent,
    and the nodes that hang under no level of the domain's hierarchy."""
    catalog = load_catalog(repo, rev, domain_root, cache_dir)
    hierarchy = hierarchy_for(catalog.domain_root, load_hierarchies(hierarchy_file))
    benchmarks = []
    declared: dict[str, str | None] = {}
    notes: dict[str, str | None] = {}
    for plugin in catalog.of_type("benchmarks"):
        for identifier in plugin.identifiers:
            parent = plugin.parents.get(identifier)
            declared[identifier] = parent
            notes[identifier] = plugin.parent_problems.get(identifier)
            benchmarks.append({"benchmark": identifier, "runtime_identifier": plugin.runtime_ids.get(identifier),
                               "plugin": plugin.name, "parent": parent,
                               "version": plugin.versions.get(identifier),
                               "unreadable": plugin.parent_problems.get(identifier),
                               # how: its construction followed, or a constructor whose identifier= fits the id
                               "read_by": plugin.parent_read_by.get(identifier)})
    tree = hierarchy.tree(declared, notes, {r["benchmark"]: r["runtime_identifier"] or "" for r in benchmarks})
    for row in benchmarks:
        row["attached_to"] = tree.parents.get(row["benchmark"])
        row["placed_by_hierarchy"] = tree.placed.get(row["benchmark"])  # the [D.place] entry, when one placed it
    per_parent = Counter(tree.parents[b] or "(unattached)" for b in declared)
    readable = sum(1 for row in benchmarks if not row["unreadable"])
    return {"commit": catalog.commit, "domain_root": catalog.domain_root, "domain": hierarchy.domain,
            "benchmarks": benchmarks, "leaves_per_parent": dict(sorted(per_parent.items())),
            "counts": {"benchmarks": len(benchmarks), "parent_read": readable,
                       "unreadable": len(benchmarks) - readable,
                       "under_a_level": sum(1 for b in declared if tree.parents[b] is not None
                                            and tree.parents[b] not in tree.unattached)},
            "unattached_nodes": {n: why for n, why in sorted(tree.unattached.items()) if n not in declared}}
