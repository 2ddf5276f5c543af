"""A submitted model cannot change its own score (issue 23), on the Brain-Score-shaped repository, sandbox on.

The model runs in its own sandboxed process behind pipeline/job/boundary.py; the benchmark's process, which alone
holds the report pipe, sees a stand-in. A hostile model forges reports into every descriptor it holds, patches
the benchmark, the metric and Score, reads for the benchmark's data and writes into every cache it can reach,
all at import time: it is recorded FAILED or with its honest score, and models scored after it, in the same run
and in a later one, score exactly as a clean run does. A model returning what may not cross fails alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import textwrap

from tests.brainscore_like import PARITY_MODEL, ROOT, add_cached_vision, build
from tests.conftest import commit_all, write

CEILING = 0.8


def honest(p: int) -> float:
    """The clean score of a parity model: accuracy p/8, ceiled by 0.8, computed as the benchmark does."""
    return (p / 8) / CEILING


@pytest.fixture
def boundary_workspace(workspace, tmp_path):
    repo = build(tmp_path / "bs-boundary")
    workspace.env.update({"SCORE_PLUGINS_SANDBOX": "bwrap", "SCORE_PLUGINS_PAIR_TIMEOUT": "600",
                          "SCORE_PLUGINS_PAIRS_PER_TASK": "10"})  # one task: the pairs run one after another
    return workspace, repo


def pairs_of(result: dict) -> dict[str, dict]:
    return {p["model"]: p for p in result["pairs"]}


def test_a_hostile_model_cannot_change_any_score(boundary_workspace):
    workspace, repo = boundary_workspace
    add_cached_vision(repo)
    first = workspace.json("run", "--repo", str(repo), "--base", "HEAD~1", "--benchmarks", "Cached-acc",
                           "--models", "hostile,hostile-quiet,parity-5", expect=1)
    pairs = pairs_of(first)
    # (a) its forged reports reach no report: the model's process holds no pipe, and garbage on its own
    # channel fails its pair with the reason
    assert pairs["hostile"]["state"] == "FAILED", pairs["hostile"]
    assert "not a boundary message" in pairs["hostile"]["reason"], pairs["hostile"]
    # (b)-(d) without (a): its honest score, not the 0.99 its patches would give
    assert (pairs["hostile-quiet"]["state"], pairs["hostile-quiet"]["score"]) == ("COMPLETED", honest(4))
    # the second model, scored after both in the same task, as in a clean run
    assert (pairs["parity-5"]["state"], pairs["parity-5"]["score"]) == ("COMPLETED", honest(5))
    # a third model on the same benchmark, in a later run, reads nothing the hostile ones wrote
    second = workspace.json("run", "--repo", str(repo), "--base", "HEAD~1", "--benchmarks", "Cached-acc",
                            "--models", "parity-6")
    assert (pairs_of(second)["parity-6"]["state"], pairs_of(second)["parity-6"]["score"]) == ("COMPLETED",
                                                                                                 honest(6))
    board = {r["model"]: r["score"] for r in workspace.json("leaderboard")}
    assert board == {"hostile-quiet": honest(4), "parity-5": honest(5), "parity-6": honest(6)}
    logs = "".join(p.read_text(errors="replace") for p in workspace.state.glob("runs/*/logs/*.log"))
    attempts = [line for line in logs.splitlines() if line.startswith("ATTEMPT ")]
    assert len(attempts) == 2 * 7, logs[-3000:]  # 3 imports, 3 reads, 1 write, by each hostile model
    assert [line for line in attempts if "SUCCEEDED" in line] == []
    held = [json.loads(line.split(" ", 1)[1]) for line in logs.splitlines() if line.startswith("DESCRIPTORS ")]
    # stdout and stderr are the worker's capped log pipe (one pipe, read only as log text); no other pipe: the
    # report pipe is the benchmark's side's alone
    assert len(held) == 1 and held[0][1] == held[0][2], held
    assert not [d for d in held[0][3:] if d.startswith("pipe:")], held
    assert any(d.startswith("socket:") for d in held[0])  # its channel to the benchmark, nothing else
    # what they wrote stayed in their own cache folders
    cache = workspace.state / "shared-cache"
    poisoned = sorted(str(p.relative_to(cache)).split("/")[:2] for p in cache.rglob("truth.json")
                      if p.read_text() == json.dumps([1] * 16))
    assert {tuple(p) for p in poisoned} == {("models", "hostile"), ("models", "hostile_quiet")}, poisoned
    assert list(cache.glob("benchmarks/cached_vision/brainio/cached_stimuli/truth.json"))  # the benchmark's own


def test_what_may_not_cross_fails_its_pair_with_one_reason(boundary_workspace):
    workspace, repo = boundary_workspace
    add_cached_vision(repo, hostile=False)
    write(repo, f"{ROOT}/models/smuggler/parity.py", textwrap.dedent(PARITY_MODEL).lstrip())
    write(repo, f"{ROOT}/models/smuggler/__init__.py", (
        "import pickle\nimport numpy as np\nfrom bs_like import model_registry\n"
        "from .parity import ParityModel\n\n\n"
        "class Payload:\n    def __reduce__(self):\n        return (print, ('PAYLOAD RAN',))\n\n\n"
        "class Smuggler(ParityModel):\n    def __init__(self, identifier, what):\n"
        "        super().__init__(identifier, 5)\n        self.what = what\n\n"
        "    def look_at(self, stimuli, number_of_trials=1):\n"
        "        if self.what == 'object':\n            return Payload()\n"
        "        if self.what == 'pickle':\n            return pickle.dumps(Payload())\n"
        "        return np.zeros((600, 600))  # 2.9 MB, over a cap of 1 MB\n\n\n"
        "model_registry['smuggle-object'] = lambda: Smuggler('smuggle-object', 'object')\n"
        "model_registry['smuggle-pickle'] = lambda: Smuggler('smuggle-pickle', 'pickle')\n"
        "model_registry['smuggle-big'] = lambda: Smuggler('smuggle-big', 'big')\n"))
    commit_all(repo, "models that return what may not cross")
    workspace.env.update({"SCORE_PLUGINS_BOUNDARY_CAP": "1M", "SCORE_PLUGINS_TRUSTED_CACHES": "KERAS_HOME"})
    result = workspace.json("run", "--repo", str(repo), "--base", "HEAD~2", "--benchmarks", "Cached-acc",
                            "--models", "smuggle-object,smuggle-pickle,smuggle-big,parity-5", expect=1)
    pairs = pairs_of(result)
    expected = {"smuggle-object": "bs_like.models.smuggler.Payload cannot cross the model boundary",
                "smuggle-pickle": "builtins.bytes cannot cross the model boundary",
                "smuggle-big": "over its cap of 1048576 bytes"}
    for model, words in expected.items():
        assert (pairs[model]["state"], pairs[model]["stage"]) == ("FAILED", "score"), pairs[model]
        assert words in pairs[model]["reason"] and "\n" not in pairs[model]["reason"], pairs[model]
    assert (pairs["parity-5"]["state"], pairs["parity-5"]["score"]) == ("COMPLETED", honest(5))
    logs = "".join(p.read_text(errors="replace") for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "PAYLOAD RAN" not in logs
    # an admin's trusted, shared cache is named in the pair's log and its result file
    assert "caches shared by every plugin (trusted_caches): KERAS_HOME" in logs
    spool = [json.loads(p.read_text()) for p in workspace.state.glob("runs/*/spool/*.json")]
    assert spool and all(r.get("trusted_caches") == ["KERAS_HOME"] for r in spool)
    assert (workspace.state / "shared-cache" / "shared" / "keras").is_dir()
