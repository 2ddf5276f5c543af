"""The house: each room (a folder under pipeline/, a shared module beside them, a top-level package) imports only
the rooms below it, so no folder imports a folder that imports it. One table says who may import whom; every
import of our own code, at module level or inside a function (or under TYPE_CHECKING), is read with `ast`.

No service, no subprocess: the source files are read as text.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "db", "envs", "notify", "jobscripts")

# Modules beside the rooms that import nothing of ours: any room may use them.
LEAVES = {"pipeline/errors.py", "pipeline/inert.py", "pipeline/safe_yaml.py", "pipeline/units.py",
          "pipeline/stopping.py", "pipeline/bigints.py", "pipeline/atomic.py"}
# What the coordinator's rooms share: settings (with the tiers they parse), a database, the fail-closed checks.
SHARED = LEAVES | {"pipeline/tiers.py", "pipeline/config.py", "pipeline/database.py", "pipeline/confine.py",
                   "pipeline/console.py"}
BELOW_STAGES = SHARED | {"pipeline/catalog", "pipeline/executors", "pipeline/job", "envs", "jobscripts", "db", "notify"}

# room -> the rooms it may import (besides itself), top to bottom (docs/design.md, "Rooms").
MAY_IMPORT: dict[str, set[str]] = {
    "pipeline/cli": {"pipeline/orchestrator", "pipeline/admin", "pipeline/leaderboard", "pipeline/capacity",
                     "pipeline/stages", "pipeline/examples", *BELOW_STAGES},
    "pipeline/orchestrator": {"pipeline/admin", "pipeline/leaderboard", "pipeline/capacity", "pipeline/stages",
                              *BELOW_STAGES},
    "pipeline/admin": {"pipeline/capacity", "pipeline/stages", *BELOW_STAGES},
    "pipeline/capacity": {"pipeline/stages", *BELOW_STAGES},
    "pipeline/stages": BELOW_STAGES,
    "pipeline/leaderboard": {"pipeline/catalog", "db", *SHARED},
    "pipeline/examples": {"pipeline/catalog", *LEAVES},
    "pipeline/catalog": {"envs", "pipeline/tiers.py", *LEAVES},
    "pipeline/executors": {"pipeline/config.py", "pipeline/job", "jobscripts", "db", *LEAVES},
    "pipeline/confine.py": {"pipeline/config.py", "envs", "pipeline/job", *LEAVES},
    "pipeline/config.py": {"pipeline/tiers.py", "jobscripts", "pipeline/job", *LEAVES},
    "pipeline/database.py": {"db", *LEAVES},
    "pipeline/console.py": LEAVES,
    "pipeline/tiers.py": LEAVES,
    "envs": {"pipeline/job", *LEAVES},
    "db": LEAVES,
    "notify": LEAVES,
    "jobscripts": set(),
    "pipeline/job": set(),  # runs on a node, copied into every bundle: the standard library only
    **{leaf: set() for leaf in LEAVES},
    "pipeline/safe_yaml.py": {"pipeline/bigints.py"},  # the bound on integers, shared with the parse workers
}


def room_of_module(name: str) -> str | None:
    """The room a dotted module name lives in (None: not ours, or the `pipeline` package itself)."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] != "pipeline":
        return parts[0]
    if len(parts) == 1:
        return None
    if (ROOT / "pipeline" / parts[1]).is_dir():
        return f"pipeline/{parts[1]}"
    return f"pipeline/{parts[1]}.py"


def room_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] != "pipeline":
        return rel[0]
    return f"pipeline/{rel[1]}"  # a folder, or a module beside the folders


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, relative ones resolved, `from pipeline import x` as pipeline.x."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if room_of_module(module) is None:
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def edges() -> dict[tuple[str, str], list[str]]:
    """(room, room it imports) -> where, for every import between two different rooms."""
    found: dict[tuple[str, str], list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "examples/commits" in path.as_posix():  # the example plugin repository: data, not our code
                continue
            me = room_of_file(path)
            for line, module in imports_of(path):
                room = room_of_module(module)
                if room is not None and room != me:
                    found.setdefault((me, room), []).append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_the_table_itself_has_no_cycle():
    """Read top to bottom, the table is an order: no room may import, directly or not, a room that may import it."""
    placed: list[str] = []
    left = dict(MAY_IMPORT)
    while left:
        ready = [room for room, allowed in left.items() if allowed <= set(placed)]
        assert ready, f"the rooms {sorted(left)} may import each other in a circle"
        placed += ready
        for room in ready:
            del left[room]


def test_every_room_is_placed_in_the_table():
    """A new folder (or a module beside the folders) is placed in the table before it is used."""
    rooms = {room_of_file(path) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
             if "examples/commits" not in path.as_posix()} - {"pipeline/__init__.py"}
    missing = sorted(rooms - set(MAY_IMPORT))
    assert not missing, f"rooms not in tests/test_layout.py's table: {missing}"


def test_no_room_imports_a_room_above_it():
    wrong = [f"{room} -> {target}: {where[0]}" + (f" (and {len(where) - 1} more)" if len(where) > 1 else "")
             for (room, target), where in sorted(edges().items()) if target not in MAY_IMPORT.get(room, set())]
    assert not wrong, "imports against the house's direction (tests/test_layout.py, docs/design.md):\n" + \
        "\n".join(wrong)


# The ledger owns every run and job row transition; ingest's one batch upsert of the jobs' final states is the other
# writer (db/ingest.py, called by pipeline/stages/ingest.py).
ROW_WRITERS = {"pipeline/stages/ledger.py", "db/ingest.py"}
ROW_TABLES = {"Run", "Job"}
RAW_WRITE = r"\b(update|insert\s+into|delete\s+from)\s+(jobs|runs)\b"


def _names_a_row_table(node: ast.AST) -> bool:
    """`Run`, `Job`, `Run.__table__`, `Job.__table__`."""
    if isinstance(node, ast.Attribute) and node.attr == "__table__":
        node = node.value
    return isinstance(node, ast.Name) and node.id in ROW_TABLES


def row_writes(path: Path) -> list[str]:
    """Where a file writes run or job rows: update/insert/delete of Run or Job, their raw tables, insert_many or
    insert_for of them, session.add of a new Run or Job, or raw SQL that updates, inserts into or deletes from them."""
    import re

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else \
                node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name in ("update", "insert", "delete") and node.args and _names_a_row_table(node.args[0]):
                found.append(f"{node.lineno}: {name}({ast.unparse(node.args[0])})")
            elif name in ("insert_many", "insert_for") and any(_names_a_row_table(a) for a in node.args):
                found.append(f"{node.lineno}: {name}(..., {ROW_TABLES & {ast.unparse(a) for a in node.args}})")
            elif name == "add" and node.args and isinstance(node.args[0], ast.Call) \
                    and _names_a_row_table(node.args[0].func):
                found.append(f"{node.lineno}: add({ast.unparse(node.args[0].func)}(...))")
        elif isinstance(node, ast.Attribute) and node.attr == "__table__" and _names_a_row_table(node):
            found.append(f"{node.lineno}: {ast.unparse(node)}")  # the raw table, e.g. update(table) after it
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.search(RAW_WRITE, node.value, re.IGNORECASE):
            found.append(f"{node.lineno}: raw SQL {node.value[:60]!r}")
    return found


def test_only_the_ledger_writes_run_and_job_rows():
    """Every run and job transition is one function of pipeline/stages/ledger.py (ingest's batch upsert of the
    jobs' final states aside): no `update(Run)`/`update(Job)` or new row anywhere else."""
    elsewhere = []
    for package in ("pipeline", "db"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ROW_WRITERS or "/migrations/" in rel or "examples/commits" in rel:
                continue
            elsewhere += [f"{rel}:{where}" for where in row_writes(path)]
    assert not elsewhere, "run/job rows written outside the ledger:\n" + "\n".join(elsewhere)
    assert row_writes(ROOT / "pipeline/stages/ledger.py"), "the check no longer sees the ledger's own writes"
