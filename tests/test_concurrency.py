"""One coordinator per pair: two `score-plugins run` started at the same instant on the same change never
score a pair twice (the claim is an atomic insert guarded by a partial unique index), on SQLite and Postgres."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from tests.conftest import CLI


def _race(workspace, example_repo, trials: int, profile: str) -> None:
    workspace.cli("db", "upgrade", "--profile", profile, check=True)
    seen_runs: set[str] = set()
    for trial in range(trials):
        args = [str(CLI), "run", "--profile", profile, "--repo", str(example_repo), "--all", "--models", "logreg",
                "--force", "--format", "json"]
        procs = [subprocess.Popen(args, cwd=workspace.path, env=workspace.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        results = [json.loads(o[0]) for o in outs]
        runs = {r["run_id"] for r in results if r["run_id"]} - seen_runs
        seen_runs |= runs
        executions: Counter = Counter()
        for run_id in runs:
            for spool in (workspace.state / "runs" / run_id / "spool").glob("*.json"):
                executions[spool.stem] += 1
        assert len(executions) == 4 and set(executions.values()) == {1}, (trial, executions)
        # what one coordinator left to the other is named as in flight, not silently dropped
        scored = sum(r.get("states", {}).get("COMPLETED", 0) for r in results)
        assert scored == 4, (trial, results)


def test_two_coordinators_at_once_sqlite(workspace, example_repo):
    _race(workspace, example_repo, trials=5, profile="local")


@pytest.mark.integration
def test_two_coordinators_at_once_postgres(workspace, example_repo, pg_url):
    workspace.env["SCORE_PLUGINS_DB_TEST"] = pg_url
    _race(workspace, example_repo, trials=3, profile="test")
