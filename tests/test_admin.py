"""What a cluster administrator meets (issue 29): forced scores in force everywhere, runs repaired from any
folder, read-only commands that create nothing, rerun's scope and recipients, honest subjects, run listing and
id prefixes, quiet broken pipes, `--repo` from a subfolder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import CLI, commit_all, write
from tests.test_slurm import add_benchmark


def test_a_forced_score_is_the_score_in_force_and_the_old_one_is_history(workspace, example_repo):
    add_benchmark(example_repo, "noisy", "noisy", "import random\nreturn random.uniform(0.1, 0.9)")
    commit_all(example_repo, "a benchmark whose score changes every time")
    args = ("--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    first = workspace.json("run", *args)
    forced = workspace.json("run", *args, "--force")
    [old], [new] = first["pairs"], forced["pairs"]
    assert old["score"] != new["score"]
    board = [r for r in workspace.json("leaderboard") if r["benchmark"] == "noisy"]
    assert [(r["score"], r["run_id"]) for r in board] == [(new["score"], forced["run_id"])]
    csv = workspace.cli("leaderboard", "--format", "csv", check=True).stdout
    assert str(new["score"]) in csv and str(old["score"]) not in csv
    assert workspace.json("status", forced["run_id"])["jobs"][0]["score"] == new["score"]
    # the old score is kept, with when and why
    [(score, reason, successor)] = workspace.rows(
        "SELECT score_ceiled, reason, superseded_by FROM score_history")
    assert score == old["score"] and forced["run_id"] in reason and successor == board[0]["id"]
    # ingesting both runs' spools again changes nothing: the newer score stays in force
    workspace.json("ingest")
    assert [r["score"] for r in workspace.json("leaderboard") if r["benchmark"] == "noisy"] == [new["score"]]
    assert len(workspace.rows("SELECT id FROM score_history")) == 1
