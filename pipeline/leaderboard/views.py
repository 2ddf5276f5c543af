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
from pipeline.leaderboard.rules import Rules, shown
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


def _cell(value: Any, rules: Rules | None = None) -> str:
    """A value as the board shows it: 2 decimals, rounded as its rules say (brain-score.org: 3 decimals, then 2,
    0.224525 -> 0.23; ours: once, half-up, 0.125 -> 0.13); X; empty."""
    if is_number(value):
        if rules is not None and abs(value) < 10:
            return f"{shown(value, rules):.2f}"
        return f"{rounded(value):.2f}" if abs(value) < 10 else f"{rounded(value, 1):.1f}"
    return "X" if value == X else ""


def short_name(identifier: str) -> str:
    """The website's column label (mv.sql 226-237): the id without a lower-case lab prefix before its first dot
    (`dicarlo.MajajHong2015.IT-pls` -> `MajajHong2015.IT-pls`; `Li2026.V1-rdm` keeps its dot)."""
    head, dot, rest = identifier.partition(".")
    return rest if dot and not any(c.isupper() for c in head) else identifier


def emit_models(cmd: Any, boards: list[DomainBoard]) -> None:
    """`leaderboard --view models`: JSON one object per model; CSV one row per model with a column per node;
    a table per domain for people (the domain's upper levels, rank, coverage)."""
    from rich.table import Table
    from rich.text import Text

    from pipeline.console import out

    rows = model_rows(boards)
    nodes = list(dict.fromkeys(n for b in boards for n in b.nodes))
    flat = [{"model": r["model"], "domain": r["domain"], "rank": r["rank"], "average": r["average"],
             **{f"coverage_{k}": v for k, v in r["coverage"].items()},
             **{n: ("" if r["aggregates"].get(n) is None else r["aggregates"][n]) for n in nodes},
             "public": r["public"]} for r in rows]

    def people() -> None:
        if not boards:
            out.print("no scores yet")
        for board in boards:
            levels = [n for n in board.nodes if n not in board.tree.leaves and board.tree.depth(n) <= 2]
            rules = board.rules.preset if board.rules else "lab"
            table = Table("rank", "model", *levels, "coverage",
                          title=f"{board.domain}: by {board.tree.average} ({rules} rules)")
            for r in board.models:
                c = r["coverage"]
                table.add_row(str(r["rank"] or "-"), Text(r["model"] + ("" if r["public"] else " (private)")),
                              *[_cell(r["aggregates"].get(n), board.rules) or "-" for n in levels],
                              f"{c['scored']}/{c['total']}" + (f" ({c['failed']} X)" if c["failed"] else ""))
            out.print(table)
            for node, why in sorted(board.tree.unattached.items()):
                if node in board.nodes:
                    out.print(f"unattached: {node}: {why}", highlight=False, markup=False)
            hidden = sorted(n for n in board.hidden if n in board.tree.leaves)
            if hidden:
                out.print(f"hidden (in no average until shown): {', '.join(hidden)}", highlight=False, markup=False)

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
        # open at first, as the website draws it (leaderboard.py 512-536): the roots, and the levels right under the
        # domain average (neural, behavior); everything deeper, and what hangs under engineering, opens on a click
        columns = [{"node": n, "label": short_name(n), "depth": tree.depth(n), "parent": tree.parents.get(n) or "",
                    "open": tree.depth(n) == 0 or tree.parents.get(n) == tree.average,
                    "expanded": n == tree.average,
                    "leaf": n in tree.leaves, "apart": tree.depth(n) == 0 and n != tree.average,
                    "concealed": n in board.hidden, "placed": tree.placed.get(n, ""),
                    "names": ", ".join(x for x in board.names.get(n, []) if x != n),
                    "note": tree.unattached.get(n, "")} for n in board.nodes]
        models = []
        for r in board.models:
            cells = []
            for col in columns:
                value = r["aggregates"].get(col["node"])
                cells.append({"value": value, "text": _cell(value, board.rules), "number": is_number(value),
                              "failed": value == X, "colour": colour(value) if is_number(value) else "",
                              "score_id": next((score_ids[(r["model"], n)] for n in [col["node"], *board.names.get(
                                  col["node"], [])] if (r["model"], n) in score_ids), None) if col["leaf"] else None})
            models.append({**r, "cells": cells})
        domains.append({"domain": board.domain, "average": tree.average, "columns": columns, "models": models,
                        "rules": board.rules.preset if board.rules else "lab"})
    return _env.get_template("leaderboard.html.j2").render(
        title=title, domains=domains, scores=scores, generated=generated.strftime("%Y-%m-%d %H:%M:%S UTC"),
        stops=[(v, colour(v)) for v in (0.0, 0.25, 0.5, 0.7, 0.85, 0.9, 0.95, 1.0)])
