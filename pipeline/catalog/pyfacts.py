"""The kinds of facts a Python blob gives, from one parse: `py` (`sourcefacts`: registrations, loads, imports,
declarations) and `construction` (`construction`: what a benchmark's construction passes through, wanted only for
benchmark plugins, the domain's helpers and its `__init__.py`). A blob wanted as both is parsed once.

Standard library only: the parse workers (`parseworker`, run with `-S`) import it."""

from __future__ import annotations

from pipeline import bigints
from pipeline.catalog.bounds import Refused
from pipeline.catalog.construction import read_construction
from pipeline.catalog.sourcefacts import FileFacts, facts_of_tree, parse_source

PYTHON_KINDS = ("py", "construction")


def python_facts(data: bytes, kinds: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """kind -> facts of one Python blob, for each of `kinds` (a subset of PYTHON_KINDS), from one parse."""
    unknown = [k for k in kinds if k not in PYTHON_KINDS]
    if unknown:
        raise ValueError(f"unknown kind of Python facts {unknown[0]!r}")
    tree = parse_source(data)
    out: dict[str, dict] = {}
    for kind in kinds:
        if isinstance(tree, FileFacts):  # refused, or a syntax error: the same for every kind
            out[kind] = tree.to_json() if kind == "py" else _failed(tree)
            continue
        try:
            out[kind] = facts_of_tree(tree).to_json() if kind == "py" else construction_of_tree(tree)
        except (ValueError, OverflowError) as exc:  # a value the reading bounds missed: refused, never a crash
            out[kind] = unreadable(kind, exc)
    return out


def unreadable(kind: str, exc: BaseException) -> dict:
    """The facts of a Python blob whose reading failed on a value (kept out of every later read: cached)."""
    reason = str(exc) if isinstance(exc, bigints.TooLarge) else f"cannot be read ({type(exc).__name__}); not read"
    return FileFacts(refused=reason).to_json() if kind == "py" else {"refused": reason}


def construction_of_tree(tree) -> dict:  # noqa: ANN001 - an ast.Module
    """`{"construction": facts}`, or `{"refused": why}` when reading them would go past Python's nesting limit or
    cost more than `construction.MAX_STEPS` (`construction` caps depth, items and nodes itself)."""
    try:
        return {"construction": read_construction(tree)}
    except RecursionError:
        return {"refused": "nested too deeply to read statically; not read"}
    except Refused as exc:
        return {"refused": str(exc)}


def _failed(facts: FileFacts) -> dict:
    if facts.refused:
        return {"refused": facts.refused}
    return {"syntax_error": list(facts.syntax_error or (0, ""))}
