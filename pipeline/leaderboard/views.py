"""The leaderboard by model, for people and programs: the models view (table, JSON, CSV) and the static
HTML page (one file, no server): Brain-Score's tree with collapsible levels, ranks, X and empty told apart,
coverage, sortable columns, and every score's provenance in a table of its own (not only on hover)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pipeline.inert import inert_value
from pipeline.leaderboard.aggregate import X, is_number, rounded
from pipeline.leaderboard.standings import DomainBoard, model_rows

# finalize: every value the page prints (ids, reasons, provenance) is made inert before it is HTML-escaped
_env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")), undefined=StrictUndefined,
                   finalize=inert_value, autoescape=select_autoescape(["html", "html.j2"], default_for_string=True), trim_blocks=True,
                   lstrip_blocks=True)

# Colour stops (value, hue, lightness): red at 0, yellow at 0.7, green at 0.85, teal-blue at 1, so the top
# of the scale, where models differ most, is not one shade of green (0.85 and 0.98 look different).
STOPS = ((0.0, 0, 80), (0.5, 35, 78), (0.7, 58, 74), (0.85, 110, 72), (1.0, 200, 62))


def colour(value: Any) -> str:
    """The cell colour of a value on an absolute scale (a number of [0, 1]; beyond is clamped)."""
    v = min(max(float(value), 0.0), 1.0)
    for (v0, h0, l0), (v1, h1, l1) in zip(STOPS, STOPS[1:]):
        if v <= v1:
            t = (v - v0) / (v1 - v0)
            return f"hsl({round(h0 + t * (h1 - h0))}, 65%, {round(l0 + t * (l1 - l0))}%)"
    return f"hsl({STOPS[-1][1]}, 65%, {STOPS[-1][2]}%)"


def _cell(value: Any) -> str:
    """A value as brain-score.org shows it: 2 decimals, rounded half-up (0.125 -> 0.13); X; empty."""
    if is_number(value):
        return f"{rounded(value):.2f}" if abs(value) < 10 else f"{rounded(value, 1):.1f}"
    return "X" if value == X else ""


def emit_models(cmd: Any, boards: list[DomainBoard]) -> None:
    """`leaderboard --view models`: JSON one object per model; CSV one row per model with a column per node;
    a table per domain for people (the domain's upper levels, rank, coverage)."""
    from rich.table import Table

    from pipeline.console import out

    rows = model_rows(boards)
    nodes = list(dict.fromkeys(n for b in boards for n in b.nodes))
    flat = [{"model": r["model"], "domain": r["domain"], "rank": r["rank"], "average": r["average"],
             **{f"coverage_{k}": v for k, v in r["coverage"].items()},
             **{n: ("" if r["aggregates"].get(n) is None else r["aggregates"][n]) for n in nodes}} for r in rows]

    def people() -> None:
        if not boards:
            out.print("no scores yet")
        for board in boards:
            shown = [n for n in board.nodes if n not in board.tree.leaves and board.tree.depth(n) <= 2]
            table = Table("rank", "model", *shown, "coverage", title=f"{board.domain}: by {board.tree.average}")
            for r in board.models:
                c = r["coverage"]
                table.add_row(str(r["rank"] or "-"), r["model"], *[_cell(r["aggregates"].get(n)) or "-"
                                                                   for n in shown],
                              f"{c['scored']}/{c['total']}" + (f" ({c['failed']} X)" if c["failed"] else ""))
            out.print(table)
            for node, why in sorted(board.tree.unattached.items()):
                if node in board.nodes:
                    out.print(f"unattached: {node}: {why}", highlight=False, markup=False)

    cmd.emit(rows, people, rows=flat)


def render_html(boards: list[DomainBoard], scores: list[dict], title: str = "Leaderboard",
                generated: datetime | None = None) -> str:
    """The page: per domain, one row per model (rank, every node of the tree as a column, coverage); levels
    below the first two start collapsed. Below, every score with its provenance."""
    generated = generated or datetime.now(timezone.utc)
    score_ids = {(s["model"], s["benchmark"]): s["id"] for s in scores}
    domains = []
    for board in boards:
        tree = board.tree
        columns = [{"node": n, "depth": tree.depth(n), "parent": tree.parents.get(n) or "",
                    "leaf": n in tree.leaves, "apart": tree.depth(n) == 0 and n != tree.average,
                    "note": tree.unattached.get(n, "")} for n in board.nodes]
        models = []
        for r in board.models:
            cells = []
            for col in columns:
                value = r["aggregates"].get(col["node"])
                cells.append({"value": value, "text": _cell(value), "number": is_number(value),
                              "failed": value == X, "colour": colour(value) if is_number(value) else "",
                              "score_id": score_ids.get((r["model"], col["node"])) if col["leaf"] else None})
            models.append({**r, "cells": cells})
        domains.append({"domain": board.domain, "average": tree.average, "columns": columns, "models": models})
    return _env.get_template("leaderboard.html.j2").render(
        title=title, domains=domains, scores=scores, generated=generated.strftime("%Y-%m-%d %H:%M:%S UTC"),
        stops=[(v, colour(v)) for v in (0.0, 0.25, 0.5, 0.7, 0.85, 0.9, 0.95, 1.0)])
