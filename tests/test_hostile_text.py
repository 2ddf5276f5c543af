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
