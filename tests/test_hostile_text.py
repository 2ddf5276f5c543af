"""Hostile text in every place a user or a plugin can put it: brackets (Rich markup), HTML, quotes, `$(...)`,
non-ASCII and very long ids. Every command answers with the contract's exit code and no traceback, shows the
text literally, and escapes it in emails and the HTML leaderboard."""

from __future__ import annotations

import email
import json
from email import policy
from html.parser import HTMLParser
from pathlib import Path

from tests.conftest import commit_all, write

PWNED = "score-plugins-hostile-text-pwned"
MODEL_ID = "m[bold]y[red]<b>x<img src=x onerror=alert(1)>'\"$(touch " + PWNED + ")é" + "-long" * 20
BENCH_ID = "b[x]<script>alert(1)`id`ü"
ERROR = "<a href='http://evil.example/'>[/red]$(touch /tmp/" + PWNED + ")</a>"
REFUSED_ID = "tree[/red]"  # a path separator: refused, and the refusal must print literally


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.found.append((tag, dict(attrs)))


def test_hostile_text_everywhere(workspace, example_repo, tmp_path):
    write(example_repo, "sklearn_scores/models/hostile_model/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.linear_model import LogisticRegression\n\n"
          f"model_registry[{MODEL_ID!r}] = lambda: LogisticRegression(max_iter=500)\n")
    write(example_repo, "sklearn_scores/benchmarks/hostile_bench/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
          f"        raise RuntimeError({ERROR!r})\n\nbenchmark_registry[{BENCH_ID!r}] = Bench\n")
    for folder in ("models/hostile_model", "benchmarks/hostile_bench"):
        write(example_repo, f"sklearn_scores/{folder}/requirements.txt", "scikit-learn>=1.3\n")
    write(example_repo, "sklearn_scores/models/refused_model/__init__.py",
          f"from sklearn_scores import model_registry\nmodel_registry[{REFUSED_ID!r}] = lambda: None\n")
    commit_all(example_repo, "hostile text [/red] <b>", author="Eve <eve@example.org>")

    for fmt in ("table", "json"):
        proc = workspace.cli("detect", "--repo", str(example_repo), "--base", "HEAD~1", "--format", fmt)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr  # the refused id
        assert f"model_registry['{REFUSED_ID}']: identifier contains a path separator" in proc.stderr
        assert MODEL_ID in (json.loads(proc.stdout)["new_models"] if fmt == "json" else proc.stdout)
    proc = workspace.cli("detect", "--repo", str(example_repo), "--base", "v1[/x]<b>$(id)")
    assert proc.returncode == 2 and "'v1[/x]<b>$(id)'" in proc.stderr and "Traceback" not in proc.stderr

    proc = workspace.cli("plan", "--repo", str(example_repo), "--base", "HEAD~1")
    assert proc.returncode == 2 and MODEL_ID in proc.stdout and BENCH_ID in proc.stdout, proc.stdout + proc.stderr

    for fmt in ("table", "json"):
        proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", MODEL_ID,
                             "--format", fmt, "--force")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # the hostile pair fails
        if fmt == "json":
            pairs = {p["benchmark"]: p for p in json.loads(proc.stdout)["pairs"]}
            assert {p["model"] for p in pairs.values()} == {MODEL_ID}
            assert ERROR in pairs[BENCH_ID]["reason"]
        else:
            assert MODEL_ID in proc.stdout and BENCH_ID in proc.stdout
    assert not list(Path(workspace.path).rglob(PWNED)) and not list(example_repo.rglob(PWNED))
    assert not Path("/tmp", PWNED).exists()

    for args in (("status",), ("leaderboard",), ("leaderboard", "--format", "csv"), ("config",)):
        proc = workspace.cli(*args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert MODEL_ID in workspace.cli("status").stdout
    board = workspace.cli("leaderboard").stdout
    assert MODEL_ID in board  # literal, not cut, not read as markup

    html = workspace.cli("leaderboard", "--format", "html").stdout
    parser = Elements()
    parser.feed(html)
    assert not [t for t, _ in parser.found if t in ("b", "a", "img")]
    assert [t for t, _ in parser.found].count("script") == 1  # the page's own sorting script, nothing injected
    assert "&lt;b&gt;x&lt;img" in html

    mails = [email.message_from_bytes(p.read_bytes(), policy=policy.default)
             for p in (workspace.state / "outbox").rglob("*.eml")]
    assert mails
    for msg in mails:
        html_part = msg.get_body(("html",)).get_content()
        parser = Elements()
        parser.feed(html_part)
        assert not [(t, a) for t, a in parser.found if t in ("script", "img") or "evil.example" in (a.get("href") or "")]
        assert "\n" not in str(msg["Subject"])
        if MODEL_ID[:10] in html_part:
            assert "&lt;img src=x onerror=alert(1)&gt;" in html_part  # shown as text
    eve = [m for m in mails if "eve@example.org" in str(m["To"])]
    assert eve and ERROR in eve[0].get_body(("plain",)).get_content()

    # bad input everywhere is one line and exit 2
    for args in (("render", "--repo", str(example_repo), "--all", "--out", str(example_repo / "README.md")),
                 ("examples", "create", str(example_repo / "README.md")),
                 ("db", "downgrade"),
                 ("ingest", str(tmp_path))):
        proc = workspace.cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len([line for line in proc.stderr.splitlines() if line.strip()]) <= 3, (args, proc.stderr)


# Issue 35, finding 7: plugin text drives the operator's terminal. A benchmark whose exception message and
# output carry a window title (OSC 0), clear screen, colours, NUL, DEL, a C1 code and bidirectional overrides,
# and ids with an override and an isolate (format characters an id may hold): every screen shows them escaped.
TERMINAL = "\x1b]0;pwned-title\x07\x1b[2J\x1b[31mred\x00nul\x7fdel\x9b31mcsi\u202eevil\u2066iso"
CONTROL = ("\x1b", "\x07", "\x00", "\x7f", "\x9b", "\u202e", "\u2066")
RLO_MODEL = "rlo\u202eexe.model"
ISOLATE_BENCH = "isolate\u2066-bench"


def test_plugin_text_is_shown_inert_on_every_screen(workspace, example_repo):
    write(example_repo, "sklearn_scores/models/rlo_model/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.linear_model import LogisticRegression\n\n"
          f"model_registry[{RLO_MODEL!r}] = lambda: LogisticRegression(max_iter=500)\n")
    write(example_repo, "sklearn_scores/benchmarks/terminal_bench/__init__.py",
          "import sys\nfrom sklearn_scores import benchmark_registry\n\n"
          "class Raises:\n    def __call__(self, model):\n"
          f"        print({TERMINAL!r}, flush=True)\n        raise RuntimeError({TERMINAL!r})\n\n"
          "benchmark_registry['terminal-raises'] = Raises\n"
          f"benchmark_registry[{ISOLATE_BENCH!r}] = lambda: (lambda model: 0.5)\n")
    for folder in ("models/rlo_model", "benchmarks/terminal_bench"):
        write(example_repo, f"sklearn_scores/{folder}/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "text that drives a terminal", author="Eve <eve@example.org>")

    proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", RLO_MODEL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert not [c for c in CONTROL if c in proc.stdout + proc.stderr], repr(proc.stdout[-2000:])
    assert "\\x1b]0;pwned-title\\x07\\x1b[2J" in proc.stdout and "rlo\\u202eexe.model" in proc.stdout

    proc = workspace.cli("status")
    assert proc.returncode == 0 and not [c for c in CONTROL if c in proc.stdout], repr(proc.stdout)
    assert "\\x1b[2J" in proc.stdout and "isolate\\u2066-bench" in proc.stdout
    status = json.loads(workspace.cli("status", "--format", "json").stdout)  # valid JSON, the stored text as it was
    reasons = {j["benchmark"]: j["reason"] for j in status["jobs"]}
    assert TERMINAL in reasons["terminal-raises"] and ISOLATE_BENCH in reasons

    page = workspace.cli("leaderboard", "--format", "html").stdout
    assert not [c for c in CONTROL if c in page] and "rlo\\u202eexe.model" in page

    mails = [email.message_from_bytes(p.read_bytes(), policy=policy.default)
             for p in (workspace.state / "outbox").rglob("*.eml")]
    eve = [m for m in mails if "eve@example.org" in str(m["To"])]
    assert eve
    for part in (eve[0].get_body(("plain",)).get_content(), eve[0].get_body(("html",)).get_content()):
        assert not [c for c in CONTROL if c in part], repr(part)
        assert "\\x1b]0;pwned-title" in part and "rlo\\u202eexe.model" in part
    assert not [c for c in CONTROL if c in "".join(str(v) for v in eve[0].values())]
