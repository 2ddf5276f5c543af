"""The command line's two consoles (data to stdout, logs to stderr), shared by the CLI and the report helpers
that print (pipeline.leaderboard.views), so that nothing below the CLI imports it."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

# Markup off everywhere: ids, errors and paths come from plugins, users and git, and are shown as text.
# Outside a terminal (Jenkins, a pipe) tables are as wide as their content: a long id is never cut or folded.
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False,
              width=None if sys.stderr.isatty() else 100_000)
out = Console(soft_wrap=True, markup=False, highlight=False, width=None if sys.stdout.isatty() else 100_000)


def coloured(label: str, style: str, text: str) -> Text:
    """`label` in `style`, then `text` exactly as it is (never read as markup)."""
    return Text.assemble((label, style), " ", text)
