"""Provenance on every score, `reproduce` giving the identical value, and the HTML leaderboard
rendered in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from pipeline.executors.base import job_environment
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"


def test_every_score_is_traceable_and_reproduces_identically(workspace, example_repo):
    workspace.json("run", "--repo", str(example_repo), "--all", "--models", "random-forest,knn-5",
                   "--benchmarks", "wine-accuracy,digits-accuracy")
    board = workspace.json("leaderboard")
    assert len(board) == 4
    for row in board:
        for key in ("commit", "lock_hash", "env_hash", "job_id", "model_code_hash", "benchmark_code_hash",
                    "executor", "node", "start", "end"):
            assert row[key], key
        assert row["array_index"] is not None and row["elapsed_seconds"] > 0
    status = workspace.json("status")
    assert status["cpu_hours"] > 0 and status["counts"] == {"COMPLETED": 4}

    row = next(r for r in board if r["model"] == "random-forest" and r["benchmark"] == "digits-accuracy")
    out = workspace.path / "reproduced"
    data = workspace.json("reproduce", str(row["id"]), "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    [pair] = [p for t in manifest["tasks"] for p in t["pairs"]]
    assert (pair["lock_hash"], pair["env_hash"], manifest["commit"]) == (row["lock_hash"], row["env_hash"],
                                                                         row["commit"])
    proc = subprocess.run(["bash", data["job_script"]], env=job_environment({"SLURM_ARRAY_TASK_ID": "0"}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    [result] = [json.loads(p.read_text()) for p in (out / "spool").glob("*.json")]
    assert result["status"] == "ok" and result["score_ceiled"] == row["score"]  # identical, not approximately
    assert workspace.cli("reproduce", "99999", "--out", str(workspace.path / "x")).returncode == 2


def test_html_leaderboard_in_headless_chromium(workspace, example_repo, tmp_path):
    workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg,gaussian-nb",
                   "--benchmarks", "iris-accuracy,wine-accuracy")
    page = tmp_path / "leaderboard.html"
    page.write_text(workspace.cli("leaderboard", "--format", "html", check=True).stdout)
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by scripts/test (Debian package chromium)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1100,500", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 5000
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert len(re.findall(r'<tr data-model="', dom)) == 2  # two models
    shown = [f"{r['score']:.4f}" for r in workspace.json("leaderboard")]  # as recorded in this environment
    assert len(shown) == 4
    for text in ("logreg", "gaussian-nb", "iris-accuracy", "wine-accuracy", *shown, "hsl("):
        assert text in dom, text
    # provenance is visible, not only on hover: a table of every score with its commit, lock, env and job
    assert 'id="provenance"' in dom and dom.count("score-plugins reproduce ") == 4 and "Generated at " in dom
    # sorting: the page's own script, driven by real clicks on its headers in the browser (a stable sort: ties
    # keep the order they had, as in the page)
    rows = workspace.json("leaderboard")
    initial = re.findall(r'<tr data-model="([^"]+)"', dom)
    iris = {r["model"]: r["score"] for r in rows if r["benchmark"] == "iris-accuracy"}
    by_name, by_score = sorted(initial), sorted(initial, key=iris.__getitem__)
    # rank, model, then the example's tree: average_sklearn_scores, multiclass, its leaves iris and wine (binary has
    # no score of these two models: left out)
    header = {"model": 1, "iris-accuracy": 4}
    for clicks, expected in ((("model",), by_name), (("model", "model"), by_name[::-1]),
                             (("iris-accuracy",), sorted(by_score, key=lambda m: -iris[m])),  # best first
                             (("iris-accuracy", "iris-accuracy"), by_score)):
        script = "".join(f"document.querySelectorAll('table.board th')[{header[c]}].click();" for c in clicks)
        clicked = tmp_path / "clicked.html"
        clicked.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
        after = subprocess.run([chromium, *flags, "--dump-dom", clicked.as_uri()], check=True, capture_output=True,
                               text=True, timeout=120).stdout
        order = re.findall(r'<tr data-model="([^"]+)"', after)
        assert order == expected, (clicks, order, expected, iris)
