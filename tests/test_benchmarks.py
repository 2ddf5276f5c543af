"""Every script in benchmarks/ runs from a clean clone of the repository, at its smallest size (`--smoke`), and
ends with the contract's last line: one JSON object with `ratio` (issue 36: env_bench.py had stopped working
when its build script came to need the job package beside it, and nothing noticed).

The clone is made from this checkout's committed HEAD (`git clone`, nothing untracked or ignored comes along but
the project's virtual environment, linked as set-up would make it). The figures of a smoke run mean nothing; the
test asserts only that each script runs end to end. It needs what the scripts need: Postgres binaries (plan and
ingest start their own server), the one-node Slurm cluster (slurm_bench), uv and PyPI (env_bench, boundary_bench).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("clean-clone") / "score-plugins"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=120)
    (dest / ".venv").symlink_to(ROOT / ".venv")  # what scripts/setup makes in a fresh clone
    return dest


def test_every_benchmark_script_is_covered():
    assert SCRIPTS == ["boundary_bench.py", "env_bench.py", "ingest_bench.py", "network_bench.py", "plan_bench.py",
                       "real_repo_bench.py", "scale_bench.py", "scale_sim.py", "sides_bench.py", "slurm_bench.py",
                       "tier_bench.py"]


@pytest.mark.integration
@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_runs_from_a_clean_clone_at_its_smallest_size(script, clone, tmp_path, slurm_cluster):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
    env.update({"SCORE_PLUGINS_STATE_DIR": str(tmp_path / "state"), "TMPDIR": str(tmp_path)})
    proc = subprocess.run([sys.executable, str(clone / "benchmarks" / script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(last, dict) and "ratio" in last, last
