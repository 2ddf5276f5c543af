"""Scores no longer in force. `scores` holds one score per pair key (the one the leaderboard, status and
emails report); a forced re-score replaces it and the replaced score moves to `score_history` with when and
why, as does a score an administrator removes (`score-plugins scores remove`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import Score, ScoreHistory

COLUMNS = [c.name for c in Score.__table__.columns]


def _utc(value: datetime | None) -> datetime | None:
    """Comparable instants: SQLite returns naive datetimes (stored as UTC), Postgres aware ones."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def move_to_history(session: Session, score_ids: Iterable[int], reason: str) -> int:
    """Move these scores out of force into the history, with `reason`; returns how many moved."""
    ids = list(score_ids)
    if not ids:
        return 0
    now = datetime.now(timezone.utc)
    moved = 0
    for score in session.scalars(select(Score).where(Score.id.in_(ids))):
        session.add(ScoreHistory(**{c: getattr(score, c) for c in COLUMNS}, superseded_at=now, reason=reason))
        moved += 1
    session.flush()
    session.execute(delete(Score).where(Score.id.in_(ids)))
    return moved


def forced_replacements(session: Session, rows: list[dict]) -> list[dict]:
    """Of new score rows whose key already has a score in force: those from another run that ended later (a
    forced re-score). Their old scores move to the history; returns the rows to insert in their place. The
    same result ingested again, or an older run's result ingested late, replaces nothing."""
    if not rows:
        return []
    keys = {(r["model_id"], r["benchmark_instance_id"], r["pair_key"]) for r in rows}
    current = {}
    pair_keys = sorted({k[2] for k in keys})
    for i in range(0, len(pair_keys), 900):
        for s in session.execute(select(Score.id, Score.model_id, Score.benchmark_instance_id, Score.pair_key,
                                        Score.run_id, Score.end_timestamp)
                                 .where(Score.pair_key.in_(pair_keys[i:i + 900]))):
            current[(s.model_id, s.benchmark_instance_id, s.pair_key)] = s
    gone = set(session.execute(select(ScoreHistory.run_id, ScoreHistory.pair_key)
                               .where(ScoreHistory.pair_key.in_(pair_keys))).all())
    replace: dict[int, dict] = {}
    for row in rows:
        cur = current.get((row["model_id"], row["benchmark_instance_id"], row["pair_key"]))
        if cur is None or not row.get("run_id") or row["run_id"] == cur.run_id \
                or (row["run_id"], row["pair_key"]) in gone:
            continue
        new_end, old_end = _utc(row.get("end_timestamp")), _utc(cur.end_timestamp)
        if old_end is None or (new_end is not None and new_end > old_end):
            replace[cur.id] = row
    for old_id, row in replace.items():
        move_to_history(session, [old_id], f"replaced by a forced re-score in run {row['run_id']}")
    return list(replace.values())


def link_successors(session: Session, rows: list[dict]) -> None:
    """Point each replaced score's history row at the score now in force for its key."""
    for row in rows:
        new_id = session.scalar(select(Score.id).where(Score.model_id == row["model_id"],
                                                       Score.benchmark_instance_id == row["benchmark_instance_id"],
                                                       Score.pair_key == row["pair_key"]))
        session.execute(update(ScoreHistory).where(ScoreHistory.pair_key == row["pair_key"],
                                                   ScoreHistory.model_id == row["model_id"],
                                                   ScoreHistory.superseded_by.is_(None),
                                                   ScoreHistory.reason.like("replaced by%"))
                        .values(superseded_by=new_id))
