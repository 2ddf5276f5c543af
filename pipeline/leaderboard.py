"""The leaderboard as a static HTML page: one file, no server, sortable, coloured, provenance on hover."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

_env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")), undefined=StrictUndefined,
                   autoescape=select_autoescape(["html", "html.j2"], default_for_string=True), trim_blocks=True, lstrip_blocks=True)


def render_html(rows: list[dict], title: str = "Leaderboard") -> str:
    benchmarks = sorted({r["benchmark"] for r in rows})
    by_model: dict[str, dict] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["benchmark"]] = r
    models = []
    for model, cells in by_model.items():
        present = [cells[b]["score"] for b in benchmarks if b in cells and cells[b]["score"] is not None]
        # the average of the scores the model has (a missing score is unknown, not 0), and how many
        average = sum(present) / len(present) if present else 0.0
        models.append({"model": model, "cells": cells, "average": average, "scored": len(present)})
    models.sort(key=lambda m: (-m["average"], m["model"]))
    # colour on the absolute scale of a score: 0 red, 0.5 yellow, 1 green (0.85 is green whatever the table)
    for m in models:
        m["hues"] = {b: round(120 * min(max(cell["score"] or 0.0, 0.0), 1.0)) for b, cell in m["cells"].items()}
    return _env.get_template("leaderboard.html.j2").render(title=title, rows=rows, models=models,
                                                          benchmarks=benchmarks)
