"""What the read-only `leaderboard` command shows, as plain data: the newest scores, the leaderboard as a
model x benchmark grid. The CLI only formats these. (A run's status is pipeline.admin.status.)"""

from __future__ import annotations

from db.queries import leaderboard_rows
from pipeline.database import Database


def leaderboard(db: Database) -> list[dict]:
    """The newest score of each model x benchmark, with its provenance."""
    with db.sessions() as session:
        return leaderboard_rows(session)


def leaderboard_grid(rows: list[dict]) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """Benchmarks (sorted), and one row per model: best mean first. The mean is over the scores a model has:
    a missing score is unknown, not 0."""
    benchmarks = sorted({r["benchmark"] for r in rows})
    cell = {(r["model"], r["benchmark"]): r["score"] for r in rows}

    def mean(model: str) -> float:
        present = [cell[(model, b)] for b in benchmarks if cell.get((model, b)) is not None]
        return sum(present) / len(present) if present else 0.0

    models = sorted({r["model"] for r in rows}, key=lambda m: (-mean(m), m))
    return benchmarks, [(m, [cell.get((m, b)) for b in benchmarks]) for m in models]
