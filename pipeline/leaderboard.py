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
        average = sum(cells[b]["score"] if b in cells else 0.0 for b in benchmarks) / max(1, len(benchmarks))
        models.append({"model": model, "cells": cells, "average": average})
    models.sort(key=lambda m: -m["average"])
    # colour relative to the scores shown: red for the lowest, green for the highest
    scores = [r["score"] for r in rows if r["score"] is not None]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    hues = {id(r): round(120 * ((r["score"] - lo) / (hi - lo) if hi > lo else 1.0)) for r in rows}
    for m in models:
        m["hues"] = {b: hues[id(cell)] for b, cell in m["cells"].items()}
    return _env.get_template("leaderboard.html.j2").render(title=title, rows=rows, models=models,
                                                          benchmarks=benchmarks)
