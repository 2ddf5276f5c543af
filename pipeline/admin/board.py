"""What an admin decides about the board, as brain-score.org's admins do in its database: which models are public
(a private model is on no public board; the website's upload form makes a submission public unless its submitter
says otherwise, forms.py 81-88) and which benchmark types are shown (a new type is hidden and counts in no average
until shown, models.py 112, mv.sql 483). Each change is one update of the rows named; naming an unknown one is bad
input and changes nothing."""

from __future__ import annotations

from sqlalchemy import select, update

from db.models import BenchmarkType, Model
from db.session import session_scope
from pipeline.database import Database
from pipeline.errors import BadInput


def _known(session, column, names: list[str], kind: str) -> list[str]:  # noqa: ANN001 - a Session and a column
    found = set(session.scalars(select(column).where(column.in_(names)))) if names else set()
    unknown = [n for n in names if n not in found]
    if unknown:
        raise BadInput(f"no {kind} {', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} in the "
                       f"database (nothing changed)")
    return sorted(set(names))


def set_public(db: Database, models: list[str], public: bool) -> list[str]:
    """Make these models public or private; returns them."""
    with session_scope(db.sessions) as session:
        names = _known(session, Model.identifier, models, "model")
        session.execute(update(Model).where(Model.identifier.in_(names)).values(public=public))
    return names


def set_visible(db: Database, benchmarks: list[str], visible: bool | None, every: bool = False) -> list[str]:
    """Show or hide these benchmark types (by registry name or the identifier they run as), or every one with
    `every`; `visible=None` hands the decision back to the board's rules. Returns the registry names changed."""
    with session_scope(db.sessions) as session:
        if every:
            names = sorted(session.scalars(select(BenchmarkType.identifier)))
        else:
            by_runtime: dict[str, list[str]] = {}
            for runtime, identifier in session.execute(select(BenchmarkType.runtime_identifier,
                                                              BenchmarkType.identifier)
                                                       .where(BenchmarkType.runtime_identifier.in_(benchmarks))):
                by_runtime.setdefault(runtime, []).append(identifier)
            names = _known(session, BenchmarkType.identifier,
                           [n for b in benchmarks for n in by_runtime.get(b, [b])], "benchmark type")
        if names:
            session.execute(update(BenchmarkType).where(BenchmarkType.identifier.in_(names)).values(visible=visible))
    return names


def flags(db: Database) -> dict:
    """Every model's public flag and every benchmark type's visibility as an admin set it (None: not set)."""
    with db.sessions() as session:
        models = {m: bool(p) for m, p in session.execute(select(Model.identifier, Model.public))}
        types = {b: {"runtime_identifier": r, "visible": v} for b, r, v in session.execute(
            select(BenchmarkType.identifier, BenchmarkType.runtime_identifier, BenchmarkType.visible))}
    return {"models": models, "benchmarks": types}
