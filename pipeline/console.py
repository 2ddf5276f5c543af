"""The command line's two consoles (data to stdout, logs to stderr), shared by the CLI and the report helpers
that print (pipeline.leaderboard.views), so that nothing below the CLI imports it."""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from pipeline.inert import inert


class InertConsole(Console):
    """A rich Console that never sends a control character it was given as text: every string it renders (a
    printed line, a table cell, a title) is made inert first (pipeline/inert.py), before the layout, so the
    columns stay aligned; a `Text` built elsewhere is made inert segment by segment as it is written. Rich's own
    styles and cursor movements (the live status line) are not text and pass."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(inert(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else Segment(inert(segment.text), segment.style) for segment in buffer)


# Markup off everywhere: ids, errors and paths come from plugins, users and git, and are shown as text.
# Outside a terminal (Jenkins, a pipe) tables are as wide as their content: a long id is never cut or folded.
err = InertConsole(stderr=True, soft_wrap=True, markup=False, highlight=False,
                   width=None if sys.stderr.isatty() else 100_000)
out = InertConsole(soft_wrap=True, markup=False, highlight=False, width=None if sys.stdout.isatty() else 100_000)


def shown(text: str, style: str = "") -> Text:
    """`text` exactly as it is (never read as markup), inert, in `style`."""
    return Text(inert(text), style=style)


def coloured(label: str, style: str, text: str) -> Text:
    """`label` in `style`, then `text` exactly as it is (never read as markup, made inert)."""
    return Text.assemble((label, style), " ", inert(text))


class InertFormatter(logging.Formatter):
    """Log lines on stderr: a message that carries plugin text (a reason, a path) is made inert."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))
