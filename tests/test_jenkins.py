"""The Jenkins jobs: rendered by jenkins-job-builder, and their entry scripts run exactly as Jenkins
runs them (its variables, a real git workspace), against real Postgres, locally and on real Slurm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import CLI, ROOT, commit_all, git, write

JJB = Path(sys.executable).parent / "jenkins-jobs"


def test_job_builder_renders_every_job(tmp_path):
    subprocess.run([str(JJB), "test", str(ROOT / "jenkins/jobs.yaml"), "-o", str(tmp_path)], check=True,
                   capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev_score_plugins", "score_plugins", "unittests_plugins"]
    for job in ("score_plugins", "dev_score_plugins"):
        root = ET.parse(tmp_path / job).getroot()
        params = {p.findtext("name") for p in root.iter() if p.tag.endswith("ParameterDefinition")}
        assert params == {"SUBMITTER_EMAIL", "DOMAIN", "MODELS", "BENCHMARKS", "FORCE", "EXECUTOR"}
        assert root.findtext(".//command") == 'bash "$SCORE_PLUGINS_HOME/jenkins/score_plugins.sh"'
    unit = ET.parse(tmp_path / "unittests_plugins").getroot()
    assert unit.findtext(".//command") == 'bash "$SCORE_PLUGINS_HOME/jenkins/unittests_plugins.sh"'
    assert unit.findtext(".//testResults") == "reports/plugins-junit.xml"


def jenkins_env(workspace_repo: Path, job: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
    env.update({"WORKSPACE": str(workspace_repo), "JOB_NAME": job, "BUILD_NUMBER": "42",
                "BUILD_URL": f"https://jenkins.example.org/job/{job}/42/",
                "GIT_COMMIT": git(workspace_repo, "rev-parse", "HEAD"),
                "GIT_PREVIOUS_SUCCESSFUL_COMMIT": git(workspace_repo, "rev-parse", "HEAD~1"),
                "SCORE_PLUGINS_BIN": str(CLI), "EXECUTOR": "local"})
    env.update(extra)
    return env


def entry(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "jenkins" / script)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def migrated(url: str, cwd: Path) -> str:
    """A database brought to the current schema, as an admin does before the prod and dev jobs run."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}, "SCORE_PLUGINS_DB_TEST": url}
    subprocess.run([str(CLI), "db", "upgrade", "--profile", "test"], env=env, cwd=cwd, check=True,
                   capture_output=True)
    return url


def scores_in(url: str, cwd: Path, env_root: Path) -> list[dict]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")},
           "SCORE_PLUGINS_DB_TEST": url, "SCORE_PLUGINS_ENV_ROOT": str(env_root)}
    proc = subprocess.run([str(CLI), "leaderboard", "--profile", "test", "--format", "json"], env=env, cwd=cwd,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_score_plugins_job_end_to_end(example_repo, postgres, env_cache, tmp_path):
    prod = migrated(postgres.create_database("prod"), tmp_path)
    env = jenkins_env(example_repo, "score_plugins", SCORE_PLUGINS_DB_PROD=prod, SUBMITTER_EMAIL="web@example.org",
                      SCORE_PLUGINS_ENV_ROOT=str(env_cache))
    proc = entry("score_plugins.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((example_repo / "score-plugins-result.json").read_text())
    assert result["states"] == {"COMPLETED": 4}  # the new benchmark, on every model
    assert len(scores_in(prod, tmp_path, env_cache)) == 4
    assert "web@example.org" in " ".join(
        open(p, encoding="utf-8").read() for p in (tmp_path / ".score-plugins/outbox").glob("*.eml"))


@pytest.mark.parametrize("name, value, message", [
    ("SUBMITTER_EMAIL", "web@example.org\nBcc: all@example.org", "SUBMITTER_EMAIL is not an email address"),
    ("MODELS", "logreg;touch /tmp/x", "MODELS must be comma-separated identifiers"),
    ("BENCHMARKS", "$(id)", "BENCHMARKS must be"),
    ("GIT_COMMIT", "HEAD", "GIT_COMMIT must be a full commit id"),
    ("EXECUTOR", "ssh", "EXECUTOR must be"),
    ("BUILD_NUMBER", "", "BUILD_NUMBER must be a number"),
    ("JOB_NAME", "other_job", "JOB_NAME must be"),
    ("DOMAIN", "../etc", "DOMAIN must be a folder name"),
])
def test_parameters_are_validated_before_anything_runs(example_repo, tmp_path, name, value, message):
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV="postgresql://u:pw@127.0.0.1:9/dev",
                      **{name: value})
    proc = entry("score_plugins.sh", env, tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / ".score-plugins").exists()  # nothing was started


def test_dev_job_cannot_reach_prod(example_repo, postgres, env_cache, tmp_path, slurm_cluster):
    prod = migrated(postgres.create_database("prod"), tmp_path)
    dev = migrated(postgres.create_database("dev"), tmp_path)
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_PROD=prod, SCORE_PLUGINS_DB_DEV=dev,
                      SCORE_PLUGINS_ENV_ROOT=str(env_cache), EXECUTOR="slurm", MODELS="logreg")
    proc = entry("score_plugins.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(scores_in(dev, tmp_path, env_cache)) == 1 and scores_in(prod, tmp_path, env_cache) == []
    same = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_PROD=prod, SCORE_PLUGINS_DB_DEV=prod)
    proc = entry("score_plugins.sh", same, tmp_path)
    assert proc.returncode == 2 and "prod database" in proc.stderr
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[db]\nprod = "{prod}"\ndev = "{prod}"\n')
    secrets.chmod(0o600)
    via_file = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_SECRETS=str(secrets))
    proc = entry("score_plugins.sh", via_file, tmp_path)
    assert proc.returncode == 2 and "points at the prod database" in proc.stderr
    assert scores_in(prod, tmp_path, env_cache) == []


def test_unittests_plugins_job_writes_one_junit_report(example_repo, env_cache, tmp_path):
    env = jenkins_env(example_repo, "unittests_plugins", SCORE_PLUGINS_ENV_ROOT=str(env_cache))
    proc = entry("unittests_plugins.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = ET.parse(example_repo / "reports/plugins-junit.xml").getroot()
    suites = {s.get("name"): s for s in report.iter("testsuite")}
    assert list(suites) == ["benchmarks/iris_cv"] and suites["benchmarks/iris_cv"].get("failures") == "0"

    write(example_repo, "sklearn_scores/models/bad_test/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['bad-test'] = lambda: None\n")
    write(example_repo, "sklearn_scores/models/bad_test/test.py",
          "from sklearn_scores import load_model\n\ndef test_model_loads():\n    assert load_model('bad-test')\n")
    commit_all(example_repo, "a model whose test fails")
    env = jenkins_env(example_repo, "unittests_plugins", SCORE_PLUGINS_ENV_ROOT=str(env_cache))
    proc = entry("unittests_plugins.sh", env, tmp_path)
    assert proc.returncode == 1 and "models/bad_test" in proc.stderr
    report = ET.parse(example_repo / "reports/plugins-junit.xml").getroot()
    [suite] = list(report.iter("testsuite"))
    assert suite.get("name") == "models/bad_test" and suite.get("failures") == "1"
