"""The Jenkins jobs: rendered by jenkins-job-builder, and their entry scripts run exactly as Jenkins runs them (its
variables, the shell step started in a real git workspace), against real Postgres and a real SMTP server (aiosmtpd),
locally and on real Slurm. A real Jenkins cannot be installed here: what it adds (the UNSTABLE mapping of
`unstable-return`, the triggers) is checked in the XML jenkins-job-builder renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import CLI, ROOT, commit_all, git, write
from tests.services import SmtpServer

JJB = Path(sys.executable).parent / "jenkins-jobs"
UNSTABLE = 4  # jenkins/common.sh; jobs.yaml's unstable-return


def test_job_builder_renders_every_job(tmp_path):
    subprocess.run([str(JJB), "test", str(ROOT / "jenkins/jobs.yaml"), "-o", str(tmp_path)], check=True,
                   capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev_score_plugins", "score_plugins", "unittests_plugins"]
    assert f"\nUNSTABLE={UNSTABLE}\n" in (ROOT / "jenkins/common.sh").read_text()
    for job in ("score_plugins", "dev_score_plugins"):
        root = ET.parse(tmp_path / job).getroot()
        params = {p.findtext("name") for p in root.iter() if p.tag.endswith("ParameterDefinition")}
        assert params == {"SUBMITTER_EMAIL", "DOMAIN", "MODELS", "BENCHMARKS", "FORCE", "EXECUTOR"}
        assert root.findtext(".//command") == 'bash "$SCORE_PLUGINS_HOME/jenkins/score_plugins.sh"'
        assert root.findtext(".//unstableReturn") == str(UNSTABLE)  # plugin failures: UNSTABLE, not red
        assert root.find(".//triggers/com.cloudbees.jenkins.GitHubPushTrigger") is not None
    unit = ET.parse(tmp_path / "unittests_plugins").getroot()
    assert unit.findtext(".//command") == 'bash "$SCORE_PLUGINS_HOME/jenkins/unittests_plugins.sh"'
    assert unit.findtext(".//testResults") == "reports/plugins-junit.xml"
    assert unit.find(".//triggers/org.jenkinsci.plugins.ghprb.GhprbTrigger") is not None
    assert unit.findtext(".//refspec").split() == ["+refs/pull/*:refs/remotes/origin/pr/*",
                                                   "+refs/heads/*:refs/remotes/origin/*"]
    assert unit.findtext(".//branches/hudson.plugins.git.BranchSpec/name") == "${ghprbActualCommit}"


def test_entry_scripts_pass_shellcheck():
    proc = subprocess.run(["shellcheck", "-x", "jenkins/common.sh", "jenkins/score_plugins.sh",
                           "jenkins/unittests_plugins.sh"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def state_root(workspace_repo: Path) -> Path:
    """Where the jobs' state folders go in these tests (XDG_STATE_HOME): outside the workspace, as on an agent."""
    return workspace_repo.parent / "agent-state"


def jenkins_env(workspace_repo: Path, job: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
    env.update({"WORKSPACE": str(workspace_repo), "JOB_NAME": job, "BUILD_NUMBER": "42",
                "BUILD_URL": f"https://jenkins.example.org/job/{job}/42/",
                "GIT_COMMIT": git(workspace_repo, "rev-parse", "HEAD"),
                "GIT_PREVIOUS_SUCCESSFUL_COMMIT": git(workspace_repo, "rev-parse", "HEAD~1"),
                "SCORE_PLUGINS_BIN": str(CLI), "EXECUTOR": "local", "XDG_STATE_HOME": str(state_root(workspace_repo))})
    env.update(extra)
    return env


def entry(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The entry script as a Jenkins shell step runs it: in the workspace."""
    return subprocess.run(["bash", str(ROOT / "jenkins" / script)], env=env, cwd=env["WORKSPACE"],
                          capture_output=True, text=True, timeout=900)


def plain_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}, **extra}


def migrated(url: str, cwd: Path, profile: str) -> str:
    """A database brought to the current schema as an admin does before the prod and dev jobs run: it records
    which profile it is."""
    subprocess.run([str(CLI), "db", "upgrade", "--profile", profile, "--yes-prod"],
                   env=plain_env(**{f"SCORE_PLUGINS_DB_{profile.upper()}": url}), cwd=cwd, check=True,
                   capture_output=True)
    return url


def scores_in(url: str, cwd: Path, profile: str) -> list[dict]:
    proc = subprocess.run([str(CLI), "leaderboard", "--profile", profile, "--format", "json"],
                          env=plain_env(**{f"SCORE_PLUGINS_DB_{profile.upper()}": url}), cwd=cwd,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def runs_in(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()


def result_of(workspace_repo: Path) -> dict:
    return json.loads((workspace_repo / "score-plugins-result.json").read_text())


def test_score_plugins_job_end_to_end(example_repo, postgres, env_cache, tmp_path):
    prod = migrated(postgres.create_database("prod"), tmp_path, "prod")
    env = jenkins_env(example_repo, "score_plugins", SCORE_PLUGINS_DB_PROD=prod, SUBMITTER_EMAIL="web@example.org",
                      SCORE_PLUGINS_ENV_ROOT=str(env_cache))
    proc = entry("score_plugins.sh", env)
    assert proc.returncode == 0, proc.stderr
    result = result_of(example_repo)
    assert result["states"] == {"COMPLETED": 4}  # the new benchmark, on every model
    assert len(scores_in(prod, tmp_path, "prod")) == 4
    outbox = state_root(example_repo) / "score-plugins/prod/outbox"  # the state folder outside the workspace
    assert "web@example.org" in " ".join(open(p, encoding="utf-8").read() for p in outbox.glob("*.eml"))
    assert f"result in {example_repo}/score-plugins-result.json" in proc.stderr


@pytest.mark.parametrize("name, value, message", [
    ("SUBMITTER_EMAIL", "web@example.org\nBcc: all@example.org", "SUBMITTER_EMAIL is not an email address"),
    ("MODELS", "logreg;touch /tmp/x", "--models: 'logreg;touch /tmp/x': identifier contains a path separator"),
    ("BENCHMARKS", "-rf", "--benchmarks: '-rf': identifier starts with '-'"),
    ("GIT_COMMIT", "HEAD", "GIT_COMMIT must be a full commit id"),
    ("EXECUTOR", "ssh", "EXECUTOR must be"),
    ("BUILD_NUMBER", "", "BUILD_NUMBER must be a number"),
    ("JOB_NAME", "other_job", "JOB_NAME must be"),
    ("DOMAIN", "../etc", "DOMAIN must be a folder name"),
])
def test_parameters_are_validated_before_anything_runs(example_repo, name, value, message):
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV="postgresql://u:pw@127.0.0.1:9/dev",
                      **{name: value})
    proc = entry("score_plugins.sh", env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not list(state_root(example_repo).glob("score-plugins/*/runs/*"))  # nothing was started


def test_dev_job_cannot_reach_prod(example_repo, postgres, env_cache, tmp_path, slurm_cluster):
    prod = migrated(postgres.create_database("prod"), tmp_path, "prod")
    dev = migrated(postgres.create_database("dev"), tmp_path, "dev")
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_PROD=prod, SCORE_PLUGINS_DB_DEV=dev,
                      SCORE_PLUGINS_ENV_ROOT=str(env_cache), EXECUTOR="slurm", MODELS="logreg")
    proc = entry("score_plugins.sh", env)
    assert proc.returncode == 0, proc.stderr
    assert len(scores_in(dev, tmp_path, "dev")) == 1 and scores_in(prod, tmp_path, "prod") == []
    # prod's database spelled as no URL comparison can match: each refused by the database's own record
    from tests.test_db import other_spellings

    for spelling in [prod, *other_spellings(postgres, prod)]:
        for prod_given in (prod, None):
            env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV=spelling,
                              SCORE_PLUGINS_ENV_ROOT=str(env_cache), MODELS="logreg",
                              **({"SCORE_PLUGINS_DB_PROD": prod_given} if prod_given else {}))
            proc = entry("score_plugins.sh", env)
            assert proc.returncode == 2 and "prod database" in proc.stderr, (spelling, proc.stderr)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[db]\nprod = "{prod}"\ndev = "{other_spellings(postgres, prod)[0]}"\n')
    secrets.chmod(0o600)
    via_file = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_SECRETS=str(secrets))
    proc = entry("score_plugins.sh", via_file)
    assert proc.returncode == 2 and "is the prod database (recorded in it" in proc.stderr
    assert scores_in(prod, tmp_path, "prod") == [] and runs_in(prod) == 0  # no row written in prod


def add_model(repo: Path, folder: str, registrations: str, author: str) -> str:
    write(repo, f"sklearn_scores/models/{folder}/__init__.py",
          "from sklearn.linear_model import LogisticRegression\n\nfrom sklearn_scores import model_registry\n\n"
          + registrations)
    write(repo, f"sklearn_scores/models/{folder}/requirements.txt", "scikit-learn>=1.3\n")
    return commit_all(repo, f"add model plugin {folder}", author=author)


def test_a_broken_plugin_is_unstable_once_and_a_readme_commit_after_it_runs_nothing(example_repo, postgres,
                                                                                    env_cache, tmp_path):
    """Finding 2: a plugin whose pairs all fail makes an UNSTABLE build (not red) that names each failed pair and
    mails its submitter; the next commit (README only) is measured from it, not from Jenkins' last green build: it
    runs nothing, mails nobody and is green. Its pairs asked for again fail again and nobody is told twice."""
    prod = migrated(postgres.create_database("prod"), tmp_path, "prod")
    last_green = git(example_repo, "rev-parse", "HEAD")
    add_model(example_repo, "broken", "model_registry['broken'] = lambda: object()  # no fit(): every pair fails\n",
              "Eve Broken <eve@example.org>")
    server = SmtpServer(tmp_path / "smtp")
    try:
        def build(number: int, **extra: str) -> subprocess.CompletedProcess:
            return entry("score_plugins.sh", jenkins_env(
                example_repo, "score_plugins", SCORE_PLUGINS_DB_PROD=prod, SCORE_PLUGINS_SMTP_URL=server.url(),
                SCORE_PLUGINS_ENV_ROOT=str(env_cache), BUILD_NUMBER=str(number),
                GIT_PREVIOUS_SUCCESSFUL_COMMIT=last_green, SUBMITTER_EMAIL="web@example.org", **extra))

        first = build(1)
        assert first.returncode == UNSTABLE, first.stderr
        assert result_of(example_repo)["states"] == {"FAILED": 4}
        for benchmark in ("iris-accuracy", "wine-accuracy"):  # the console names each failed pair and why
            assert re.search(rf"score-plugins: FAILED broken on {benchmark}: \w+: .+", first.stderr), first.stderr
        assert "some pairs failed (UNSTABLE)" in first.stderr
        told = {m["to"][0]: m["data"] for m in server.messages}  # the model's, the benchmarks' owners, SUBMITTER_EMAIL
        assert sorted(told) == ["admin@example.org", "bob@example.org", "eve@example.org", "web@example.org"]
        assert b"4 of 4 failed" in told["eve@example.org"] and b"1 of 1 failed" in told["bob@example.org"]

        write(example_repo, "README.md", "Only the README changes.\n")
        commit_all(example_repo, "docs")
        second = build(2)  # Jenkins' last green build is still before the broken plugin
        assert second.returncode == 0, second.stderr
        result = result_of(example_repo)
        assert result["run_id"] is None and result["pairs"] == [] and result["planned"] == 0
        assert "nothing scored" in second.stderr and "FAILED" not in second.stderr
        assert len(server.messages) == 4  # nobody mailed

        third = build(3, MODELS="broken")  # the same pair keys, asked for by name: they fail again
        assert third.returncode == UNSTABLE and result_of(example_repo)["states"] == {"FAILED": 4}, third.stderr
        assert len(server.messages) == 4  # each failure was told to each of them once already
    finally:
        server.stop()
    assert runs_in(prod) == 2  # builds 1 and 3; the README build recorded nothing to run


def test_a_dev_build_mails_no_submitter_whatever_smtp_url_it_sees(example_repo, postgres, env_cache, tmp_path):
    """Finding 4: with SCORE_PLUGINS_SMTP_URL set, the dev job emails only its allow-list; its other messages, and
    a backlog an older version queued, are kept in the outbox's held/ folder and never sent."""
    from notify.compose import PairOutcome, RunReport, compose
    from notify.outbox import Outbox

    dev = migrated(postgres.create_database("dev"), tmp_path, "dev")
    outbox = Outbox(state_root(example_repo) / "score-plugins/dev/outbox")
    old = compose(RunReport("old-run", "a" * 40, "sklearn_scores", "dev", [PairOutcome("m", "b", "FAILED")]),
                  "stranger@example.org", "score-plugins@localhost")
    del old["X-Score-Plugins-Profile"]  # queued by a version that did not name its profile
    outbox.put(old)
    server = SmtpServer(tmp_path / "smtp")
    try:
        env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV=dev,
                          SCORE_PLUGINS_SMTP_URL=server.url(), SCORE_PLUGINS_ENV_ROOT=str(env_cache),
                          SCORE_PLUGINS_MAIL_ALLOW="bob@example.org", MODELS="logreg",
                          SUBMITTER_EMAIL="web@example.org")
        proc = entry("score_plugins.sh", env)
        assert proc.returncode == 0, proc.stderr
        assert result_of(example_repo)["states"] == {"COMPLETED": 1}
        assert [m["to"] for m in server.messages] == [["bob@example.org"]]  # the new benchmark's owner, allowed
        held = sorted(str(outbox.read(p)["To"]) for p in outbox.held_dir.glob("*.eml"))
        assert held == ["admin@example.org", "stranger@example.org", "web@example.org"]  # the model's owner too
        assert "2 held: this profile does not email submitters" in proc.stderr
    finally:
        server.stop()


def test_brainscore_ids_are_jenkins_parameters_and_the_state_outlives_a_workspace_wipe(example_repo, postgres,
                                                                                      env_cache, tmp_path):
    """Finding 5: MODELS takes the ids the CLI takes (`:` and `=` in them, spaces after commas). Finding 8: the
    state folder is outside the workspace by default, so `reproduce` works after the workspace is wiped."""
    dev = migrated(postgres.create_database("dev"), tmp_path, "dev")
    add_model(example_repo, "brainscore_ids",
              "model_registry['convnext_base:clip_laiona_augreg_ft_in1k_384'] = lambda: LogisticRegression()\n"
              "model_registry['alexnet_z_axis_iteration=1'] = lambda: LogisticRegression(C=0.5)\n",
              "Ada Lovelace <ada@example.org>")
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV=dev,
                      SCORE_PLUGINS_ENV_ROOT=str(env_cache), BENCHMARKS="iris-accuracy",
                      MODELS="convnext_base:clip_laiona_augreg_ft_in1k_384, alexnet_z_axis_iteration=1")
    proc = entry("score_plugins.sh", env)
    assert proc.returncode == 0, proc.stderr
    pairs = result_of(example_repo)["pairs"]
    assert sorted((p["model"], p["state"]) for p in pairs) == [
        ("alexnet_z_axis_iteration=1", "COMPLETED"), ("convnext_base:clip_laiona_augreg_ft_in1k_384", "COMPLETED")]

    kept = tmp_path / "kept-clone"  # the workspace wiped and checked out again, as "Wipe Out Workspace" does
    subprocess.run(["git", "clone", "--quiet", str(example_repo), str(kept)], check=True)
    shutil.rmtree(example_repo)
    subprocess.run(["git", "clone", "--quiet", str(kept), str(example_repo)], check=True)
    [score] = [s for s in scores_in(dev, tmp_path, "dev") if s["model"] == "alexnet_z_axis_iteration=1"]
    state = state_root(example_repo) / "score-plugins/dev"
    again = subprocess.run([str(CLI), "reproduce", str(score["id"]), "--profile", "dev", "--out",
                            str(tmp_path / "again"), "--format", "json"], cwd=example_repo, capture_output=True,
                           text=True, env=plain_env(SCORE_PLUGINS_DB_DEV=dev, SCORE_PLUGINS_STATE_DIR=str(state),
                                                    SCORE_PLUGINS_ENV_ROOT=str(env_cache)))
    assert again.returncode == 0, again.stderr
    assert Path(json.loads(again.stdout)["job_script"]).exists()


def test_an_early_error_leaves_a_whole_result_and_score_plugins_is_found_without_scores_plugins_bin(
        example_repo, tmp_path):
    """Finding 8: an error before any result (the database is down: exit 3) replaces the last build's result with a
    small JSON saying so, never with an empty file; SCORE_PLUGINS_BIN defaults to this checkout's .venv."""
    (example_repo / "score-plugins-result.json").write_text('{"run_id": "the-last-build", "states": {}}\n')
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV="postgresql://u:pw@127.0.0.1:9/dev")
    del env["SCORE_PLUGINS_BIN"]
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != CLI.parent)
    proc = entry("score_plugins.sh", env)
    assert proc.returncode == 3, proc.stderr
    result = result_of(example_repo)
    assert result == {"run_id": None, "states": {}, "pairs": [], "exit_code": 3,
                      "error": "score-plugins exited 3 before it wrote a result: see the console"}
    assert "cannot reach the dev database dev at 127.0.0.1:9" in proc.stderr and "pw@" not in proc.stderr
    assert not list(example_repo.glob(".score-plugins-result.*"))  # no partial file left behind


def test_sigterm_to_the_entry_script_reaches_the_coordinator(example_repo, postgres, env_cache, tmp_path):
    """Finding 8: Jenkins' abort (or a timeout) signalling only the entry script no longer leaves the coordinator
    running with parent 1: the script passes the signal on, waits while the run is cancelled and recorded, and
    exits with the coordinator's code."""
    dev = migrated(postgres.create_database("dev"), tmp_path, "dev")
    write(example_repo, "sklearn_scores/benchmarks/slow/__init__.py",
          "import time\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
          "    def __call__(self, model):\n        time.sleep(300)\n        return 0.5\n\n"
          "benchmark_registry['slow'] = Bench\n")
    commit_all(example_repo, "a slow benchmark")
    env = jenkins_env(example_repo, "dev_score_plugins", SCORE_PLUGINS_DB_DEV=dev, MODELS="logreg",
                      SCORE_PLUGINS_ENV_ROOT=str(env_cache))
    script = subprocess.Popen(["bash", str(ROOT / "jenkins/score_plugins.sh")], env=env, cwd=example_repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    for line in script.stderr:  # readiness: the pair runs
        lines.append(line)
        if "array tasks: running 1" in line:
            break
    [coordinator] = [int(p) for p in subprocess.run(["pgrep", "-P", str(script.pid)], capture_output=True,
                                                    text=True).stdout.split()]
    script.send_signal(signal.SIGTERM)  # the script alone, as a kill of its pid does
    _, rest = script.communicate(timeout=180)
    assert script.returncode == 143, "".join(lines) + rest
    assert "SIGTERM received: passed on to score-plugins" in rest
    deadline = time.monotonic() + 30
    while Path(f"/proc/{coordinator}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{coordinator}").exists(), "the coordinator outlived its entry script"
    result = result_of(example_repo)
    assert result["interrupted"] is True and result["states"] == {"CANCELLED": 1}


def test_unittests_plugins_job_writes_one_junit_report(example_repo, env_cache):
    env = jenkins_env(example_repo, "unittests_plugins", SCORE_PLUGINS_ENV_ROOT=str(env_cache))
    proc = entry("unittests_plugins.sh", env)
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
    proc = entry("unittests_plugins.sh", env)
    assert proc.returncode == 1 and "models/bad_test" in proc.stderr
    report = ET.parse(example_repo / "reports/plugins-junit.xml").getroot()
    [suite] = list(report.iter("testsuite"))
    assert suite.get("name") == "models/bad_test" and suite.get("failures") == "1"


def test_a_pull_request_is_tested_against_its_target_branch(example_repo, env_cache):
    """Finding 6: the plugins a pull request changes since its merge base with the target branch are tested, not
    everything since the last green build of any pull request (here: a plugin with a failing test that reached
    main meanwhile, and the benchmark added before it)."""
    last_green_elsewhere = git(example_repo, "rev-parse", "HEAD~1")
    write(example_repo, "sklearn_scores/models/bad_test/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['bad-test'] = lambda: None\n")
    write(example_repo, "sklearn_scores/models/bad_test/test.py", "def test_fails():\n    assert False\n")
    commit_all(example_repo, "someone else's plugin, merged into main with a failing test")
    git(example_repo, "update-ref", "refs/remotes/origin/main", "HEAD")  # what Jenkins fetched of the target
    git(example_repo, "checkout", "--quiet", "-b", "pr-7")
    write(example_repo, "sklearn_scores/models/pr_model/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['pr-model'] = lambda: None\n")
    write(example_repo, "sklearn_scores/models/pr_model/test.py", "def test_passes():\n    assert True\n")
    pr_head = commit_all(example_repo, "the pull request's plugin")
    git(example_repo, "checkout", "--quiet", "--detach", pr_head)
    for variables in ({"ghprbTargetBranch": "main", "ghprbActualCommit": pr_head},  # GitHub pull request builder
                      {"CHANGE_TARGET": "main", "CHANGE_ID": "7"}):  # a multibranch pipeline's pull request
        env = jenkins_env(example_repo, "unittests_plugins", SCORE_PLUGINS_ENV_ROOT=str(env_cache),
                          GIT_PREVIOUS_SUCCESSFUL_COMMIT=last_green_elsewhere, **variables)
        proc = entry("unittests_plugins.sh", env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "pull request against main" in proc.stderr
        suites = [s.get("name") for s in ET.parse(example_repo / "reports/plugins-junit.xml").getroot()
                  .iter("testsuite")]
        assert suites == ["models/pr_model"]
    env = jenkins_env(example_repo, "unittests_plugins", CHANGE_TARGET="release")
    proc = entry("unittests_plugins.sh", env)
    assert proc.returncode == 2 and "+refs/heads/release:refs/remotes/origin/release" in proc.stderr


def test_the_base_is_what_the_profile_processed_never_moving_back(example_repo, tmp_path):
    """The bookkeeping behind `run --since-processed`: nothing recorded, the fallback (else the first parent);
    then the recorded commit, whatever Jenkins says; a rebuild of an older commit does not move it back; a rewritten
    history starts from the merge base. A repository is its origin URL without credentials."""
    from pipeline.database import open_database
    from pipeline.stages.processed import choose_base, record_processed, repository_key

    git(example_repo, "remote", "set-url", "origin", "https://jenkins:s3cret-token@git.example.org/lab/plugins.git")
    assert repository_key(example_repo) == "https://git.example.org/lab/plugins.git"
    c1, c2, c3 = (git(example_repo, "rev-parse", f"HEAD~{n}") for n in (2, 1, 0))
    db = open_database("local", tmp_path / "state")
    try:
        first = choose_base(db, example_repo, c3, None)
        assert (first.commit, first.recorded) == (c2, None) and "first parent" in first.why
        assert choose_base(db, example_repo, c3, c1).commit == c1  # Jenkins' last green, for a first build only
        assert record_processed(db, example_repo, first, c3, "run-1", "score_plugins#1")
        assert choose_base(db, example_repo, c3, c1).commit == c3  # the same commit again: nothing changes
        assert not record_processed(db, example_repo, first, c2, "run-2", "score_plugins#2")  # older: kept
        git(example_repo, "checkout", "--quiet", "-b", "rewritten", c2)
        write(example_repo, "notes.txt", "history rewritten under the job\n")
        c4 = commit_all(example_repo, "force-pushed")
        rewritten = choose_base(db, example_repo, c4, None)
        assert rewritten.commit == c2 and "merge base" in rewritten.why
    finally:
        db.close()
