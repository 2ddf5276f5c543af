"""Plugin text is inert (issue 35, finding 7): control characters, ESC sequences, NUL, DEL, C1 codes and the
bidirectional overrides and isolates that came from a plugin are shown escaped on every screen (the consoles'
tables and lines, the log lines, both parts of an email, sent through a real SMTP server, and the HTML page), while
what is stored keeps them. Fast: no run; the end-to-end attack is tests/test_hostile_text.py."""

from __future__ import annotations

import email
import io
import json
import logging
import sys
import unicodedata
from email import policy

from rich.table import Table

from notify.compose import PairOutcome, RunReport, compose
from notify.outbox import Outbox
from notify.smtp import flush, parse_smtp_url
from pipeline.console import InertConsole, InertFormatter, coloured
from pipeline.inert import inert
from tests.services import SmtpServer

# what the attack of finding 7 sent: a window title (OSC 0), clear screen, colours, a bell, NUL, DEL, a C1 CSI,
# a right-to-left override, an isolate, a zero-width space and a tag character
HOSTILE = ("\x1b]0;pwned-title\x07\x1b[2J\x1b[31mred\x00nul\x7fdel\x9b31mcsi\u202eevil.exe\u2066iso\u200bzw"
           "\U000e0041\r\x08end")
RAW = ("\x1b", "\x07", "\x00", "\x7f", "\x9b", "\u202e", "\u2066", "\u200b", "\U000e0041", "\r", "\x08")


def assert_inert(shown: str) -> None:
    """Nothing of HOSTILE arrives raw; its escapes do."""
    assert not [c for c in RAW if c in shown], [c for c in RAW if c in shown]
    for escaped in ("\\x1b]0;pwned-title\\x07\\x1b[2J", "\\x00nul\\x7fdel\\x9b31mcsi\\u202eevil.exe\\u2066iso",
                    "\\u200bzw\\U000e0041\\x0d\\x08end"):
        assert escaped in shown, shown


def test_every_control_format_and_separator_character_is_escaped_and_ordinary_text_is_not():
    dangerous = [chr(c) for c in range(sys.maxunicode + 1)
                 if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp") and chr(c) not in "\n\t"]
    shown = inert("".join(dangerous))
    assert not [c for c in shown if not (c.isascii() and c.isprintable())]
    assert inert("\n\t") == "\n\t" and inert("a\nb\tc", lines=False) == "a\\x0ab\\x09c"
    ordinary = "antialiased-r50 convnext_base:clip_laiona_augreg_ft_in1k_384 Überlauf ∞ 模型 résumé 🙂 ا"
    assert inert(ordinary) is ordinary  # nothing copied when nothing is unsafe


def test_tables_lines_and_log_records_on_a_terminal_are_inert():
    buffer = io.StringIO()
    console = InertConsole(file=buffer, force_terminal=True, color_system="truecolor", width=300, markup=False,
                           highlight=False)
    table = Table("model", "reason", title=f"run {HOSTILE}")
    table.add_row("knn-5", HOSTILE)
    console.print(table)
    console.print(f"a line: {HOSTILE}")
    console.print(coloured("error:", "red", HOSTILE))
    from rich.text import Text

    console.print(Text(HOSTILE))  # a Text built anywhere, not through the helpers: escaped as it is written
    # rich styles its own output (borders, the red label): ESC appears only as the start of an SGR sequence
    shown = buffer.getvalue()
    import re

    assert not re.search(r"\x1b(?!\[[0-9;]*m)", shown), repr(shown[:400])
    assert_inert(re.sub(r"\x1b\[[0-9;]*m", "", shown))
    record = logging.LogRecord("pipeline", logging.WARNING, __file__, 1, "lock failed: %s", (HOSTILE,), None)
    assert_inert(InertFormatter("%(levelname)s %(name)s: %(message)s").format(record))


def report(reason: str, log_tail: str) -> RunReport:
    return RunReport("run-1", "a" * 40, "dom", "test",
                     [PairOutcome(f"m{HOSTILE}", f"b{HOSTILE}", "FAILED", None, "score", reason, log_tail),
                      PairOutcome(f"m{HOSTILE}", "b-ok", "COMPLETED", 0.5)],
                     plugin_problems=[f"models/x/__init__.py:1: {HOSTILE}"], cancelled=HOSTILE)


def test_emails_sent_through_a_real_smtp_server_are_inert_in_both_parts_and_every_header(tmp_path):
    server = SmtpServer(tmp_path / "smtp")
    try:
        box = Outbox(tmp_path / "outbox")
        box.put(compose(report(f"RuntimeError: {HOSTILE}", f"first line\nplugin printed {HOSTILE}\nlast"),
                        "ada@example.org", "scores@example.org"))
        result = flush(box, parse_smtp_url(server.url()))
        assert len(result.sent) == 1
        raw = server.messages[0]["data"]
    finally:
        server.stop()
    msg = email.message_from_bytes(raw, policy=policy.default)
    for part in (msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()):
        assert_inert(part.replace("\r\n", "\n").replace("&#39;", "'"))  # CRLF: the wire's line ends
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "first line\n" in text and "| last" in text  # a log tail keeps its lines
    for name, value in msg.items():
        assert not [c for c in RAW if c in str(value)], (name, value)


def test_the_html_page_is_inert():
    from datetime import datetime, timezone

    from pipeline.leaderboard.views import render_html

    scores = [{"id": 1, "model": f"m{HOSTILE}", "benchmark": f"b{HOSTILE}", "score": 0.5, "commit": "c" * 40,
               "lock_hash": "l", "env_hash": "e", "job_id": HOSTILE, "score_raw": None, "ceiling": None,
               "array_index": 0, "node": HOSTILE, "executor": "local", "start": "s", "end": "e"}]
    page = render_html([], scores, title=f"Leaderboard {HOSTILE}", generated=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert_inert(page.replace("&#39;", "'"))


def test_json_output_keeps_the_text_and_stays_valid():
    from pipeline.cli.app import emit_json

    import contextlib

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        emit_json({"reason": HOSTILE})
    assert not [c for c in RAW if c in buffer.getvalue()]  # escaped the JSON way
    assert json.loads(buffer.getvalue()) == {"reason": HOSTILE}  # the stored text, unchanged
