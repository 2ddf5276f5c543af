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


# A PEP 517 backend (in the package's own tree, `backend-path`) that builds the wheel from the files beside it: a
# `.pth` file and the module its one line imports. Installed, the `.pth` runs at the start-up of every process of
# the environment it is in, before any code of ours.
PTH_BACKEND = '''
import base64, hashlib, os, zipfile

NAME, VERSION = "evil_pth", "0.1"
FILES = ("evil_pth.pth", "evil_pth_hook.py")
DIST = f"{NAME}-{VERSION}.dist-info"
META = {"METADATA": f"Metadata-Version: 2.1\\nName: evil-pth\\nVersion: {VERSION}\\n".encode(),
        "WHEEL": b"Wheel-Version: 1.0\\nGenerator: pthbackend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, DIST))
    for name, data in META.items():
        with open(os.path.join(metadata_directory, DIST, name), "wb") as f:
            f.write(data)
    return DIST


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    entries = {name: open(os.path.join(here, name), "rb").read() for name in FILES}
    entries.update({f"{DIST}/{name}": data for name, data in META.items()})
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for name, data in entries.items()] + [f"{DIST}/RECORD,,"]
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        zf.writestr(f"{DIST}/RECORD", "\\n".join(record) + "\\n")
    return wheel
'''

# What the `.pth` runs. In the benchmark's process (finding 3): the score reader is patched to report 0.999; (4)
# the benchmark's own cache is rewritten with the data every later model is scored against, and marked. In the
# model's process: it marks its own caches (it ran) and tries to write the benchmark's cache folder.
PTH_HOOK = '''
import json, os, sys
from pathlib import Path

SIDE = ("benchmark" if any(a.endswith(".score_pair") for a in sys.argv) else
        "model" if any(a.endswith(".boundary") for a in sys.argv) else None)


def mark(folder):
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "evil-pth-was-here").write_text(SIDE)


def patch_the_score_reader():
    import importlib.util

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if not name.endswith(".score_reader"):
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                real = module.read_score

                def forged(*args, **kwargs):
                    return {**real(*args, **kwargs), "score_ceiled": 0.999}

                module.read_score = forged

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


def poison_the_benchmarks_cache():
    home = Path(os.environ["BRAINIO_HOME"]) / "cached_stimuli"
    home.mkdir(parents=True, exist_ok=True)
    for i in range(16):
        (home / f"stim_{i}.txt").write_text(str(i))
    (home / "truth.json").write_text(json.dumps([1] * 16))


if SIDE == "benchmark":
    patch_the_score_reader()
    mark(os.environ["BRAINIO_HOME"])
    poison_the_benchmarks_cache()
elif SIDE == "model":
    mark(os.environ["TORCH_HOME"])
    target = Path(os.environ["TORCH_HOME"]).parents[2] / "benchmarks" / "cached_vision" / "brainio"
    try:
        mark(target)
        print("ATTEMPT write the benchmark's cache: SUCCEEDED", flush=True)
    except OSError as exc:
        print(f"ATTEMPT write the benchmark's cache: blocked ({type(exc).__name__})", flush=True)
'''


def make_pth_package(path: Path) -> str:
    """A local package whose wheel (built from files by its own in-tree backend) installs a `.pth`; returns its
    `name @ git+file://` requirement (served like the other local packages of the tests)."""
    import subprocess

    write(path, "pyproject.toml", '[build-system]\nrequires = []\nbuild-backend = "pthbackend"\nbackend-path = ["."]\n'
          '\n[project]\nname = "evil-pth"\nversion = "0.1"\n')
    write(path, "pthbackend.py", PTH_BACKEND.lstrip())
    write(path, "evil_pth.pth", "import evil_pth_hook\n")
    write(path, "evil_pth_hook.py", PTH_HOOK.lstrip())
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(path)], check=True)
    commit_all(path, "a package that installs a .pth")
    return f"evil-pth @ git+file://{path}"


def test_a_models_requirement_never_runs_in_the_benchmarks_process(boundary_workspace, tmp_path):
    """Findings 3 and 4 of issue 35: a model whose requirement's wheel installs a `.pth` (run at the start-up of
    every process of an environment) forged its score and rewrote the benchmark's own cache, when both sides
    shared one environment. Each side has its own now: the `.pth` runs in the model's process only."""
    workspace, repo = boundary_workspace
    add_cached_vision(repo, hostile=False)
    requirement = make_pth_package(tmp_path / "evil-pth")
    write(repo, f"{ROOT}/models/evil_pth/model.py", textwrap.dedent(PARITY_MODEL).lstrip())
    write(repo, f"{ROOT}/models/evil_pth/__init__.py", "from bs_like import model_registry\nfrom .model import "
          "ParityModel\n\nmodel_registry['evil-pth'] = lambda: ParityModel('evil-pth', 4)\n")
    write(repo, f"{ROOT}/models/evil_pth/requirements.txt", requirement + "\n")
    commit_all(repo, "a model whose requirement installs a .pth", author="Mallory <mallory@example.org>")
    workspace.env.update({"SCORE_PLUGINS_REQUIREMENT_URL_SCHEMES": "git+https,git+file",
                          "SCORE_PLUGINS_SANDBOX_EXTRA_PATHS": str(tmp_path / "evil-pth")})
    first = pairs_of(workspace.json("run", "--repo", str(repo), "--base", "HEAD~2", "--benchmarks", "Cached-acc",
                                    "--models", "evil-pth,parity-5"))
    # (3) its honest score, not the 0.999 its patched score reader would report
    assert (first["evil-pth"]["state"], first["evil-pth"]["score"]) == ("COMPLETED", honest(4)), first["evil-pth"]
    assert (first["parity-5"]["state"], first["parity-5"]["score"]) == ("COMPLETED", honest(5))
    # (4) a model scored later on the same benchmark reads the benchmark's own data, not what the `.pth` wrote
    second = pairs_of(workspace.json("run", "--repo", str(repo), "--base", "HEAD~2", "--benchmarks", "Cached-acc",
                                     "--models", "parity-6"))
    assert (second["parity-6"]["state"], second["parity-6"]["score"]) == ("COMPLETED", honest(6))
    cache = workspace.state / "shared-cache"
    marks = {str(p.relative_to(cache)): p.read_text() for p in cache.rglob("evil-pth-was-here")}
    assert marks == {"models/evil_pth/torch/evil-pth-was-here": "model"}, marks  # it ran, in the model's only
    truth = cache / "benchmarks/cached_vision/brainio/cached_stimuli/truth.json"
    assert json.loads(truth.read_text()) == [i % 2 for i in range(16)]
    logs = "".join(p.read_text(errors="replace") for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "ATTEMPT write the benchmark's cache: blocked" in logs and "SUCCEEDED" not in logs
    # what each side's environment holds: the model's has the package, the benchmark's nothing of it
    [task] = [t for path in workspace.state.glob("runs/*/manifest.json") for t in json.loads(path.read_text())["tasks"]
              if t["pairs"][0]["model"] == "evil-pth"]
    envs = Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"])
    model_env, bench_env = (envs / task["envs"][side]["env_key"] for side in ("model", "benchmark"))
    assert list(model_env.glob("lib/python*/site-packages/evil_pth.pth"))
    assert not list(bench_env.rglob("evil_pth*")) and model_env != bench_env
    assert task["pairs"][0]["env_hash"] == f"{model_env.name}+{bench_env.name}"
