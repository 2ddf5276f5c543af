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
    # an administrator takes a (test) score off the board: it goes to the history with who and why
    removed = workspace.json("scores", "remove", str(board[0]["id"]), "--reason", "a test score", "--by", "ada")
    assert removed["removed_by"] == "ada"
    assert [r for r in workspace.json("leaderboard") if r["benchmark"] == "noisy"] == []
    history = workspace.json("scores", "history")
    assert [(h["id"], h["reason"]) for h in history][-1] == (board[0]["id"], "removed by ada: a test score")
    assert history[0]["superseded_by"] == board[0]["id"]
    assert workspace.cli("scores", "remove", str(board[0]["id"]), "--reason", "again").returncode == 2


def cli_in(workspace, cwd: Path, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    """`score-plugins` run from another folder than the workspace (same environment)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(CLI), *args], cwd=cwd, env=workspace.env, capture_output=True, text=True, timeout=900)


def test_runs_record_where_and_what_so_rerun_and_reproduce_work_from_any_folder(workspace, example_repo):
    write(example_repo, "sklearn_scores/benchmarks/raises/__init__.py",
          "from sklearn_scores import benchmark_registry\n\n"
          "class Raises:\n    def __call__(self, model):\n        raise ValueError('flaky benchmark')\n\n"
          "benchmark_registry['raises'] = Raises\n")
    commit_all(example_repo, "a failing benchmark")
    relative = os.path.relpath(example_repo, workspace.path)
    first = workspace.cli("run", "--repo", relative, "--base", "HEAD~1", "--models", "logreg", "--format", "json")
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    [(repo, base, head)] = workspace.rows("SELECT repo, base_commit, head_commit FROM runs WHERE id = ?", run_id)
    sha = subprocess.run(["git", "-C", str(example_repo), "rev-parse", "HEAD~1"], capture_output=True,
                         text=True).stdout.strip()
    assert repo == str(example_repo.resolve()) and base == sha and len(head) == 40
    elsewhere = workspace.path / "reports" / "deeper"  # the state folder is found from here; the repo is not
    rerun = cli_in(workspace, elsewhere, "rerun", run_id, "--failed", "--format", "json")
    assert rerun.returncode == 1, rerun.stderr  # the benchmark raises again: it ran
    assert [(p["model"], p["benchmark"]) for p in json.loads(rerun.stdout)["pairs"]] == [("logreg", "raises")]
    good = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                          "iris-accuracy")
    [score_id] = [r["id"] for r in workspace.json("leaderboard") if r["run_id"] == good["run_id"]]
    again = cli_in(workspace, elsewhere, "reproduce", str(score_id), "--out", str(workspace.path / "again"),
                   "--format", "json")
    assert again.returncode == 0, again.stderr
    reproduced = json.loads(again.stdout)
    assert Path(reproduced["job_script"]).exists()
    [scored] = [r for r in workspace.json("leaderboard") if r["id"] == score_id]
    assert reproduced["original"]["score"] == scored["score"]  # what to compare the new score with
    assert reproduced["submit"] == f"bash {reproduced['run_dir']}/submit.sh"
    busy = cli_in(workspace, elsewhere, "reproduce", str(score_id), "--out", str(workspace.path / "again"))
    assert busy.returncode == 2 and "not empty" in busy.stderr  # never writes into a used folder


def test_repo_dot_from_a_subfolder_of_the_plugin_repository(workspace, example_repo):
    workspace.env["SCORE_PLUGINS_STATE_DIR"] = str(workspace.state)
    proc = cli_in(workspace, example_repo / "sklearn_scores" / "models", "plan", "--repo", ".", "--all",
                  "--models", "logreg", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["to_run"] == 4


def test_read_only_commands_in_an_empty_folder_create_nothing_and_say_where_they_looked(workspace, tmp_path):
    empty = tmp_path / "empty"
    for args in (["status"], ["status", "--format", "json"], ["db", "current"], ["reproduce", "3", "--out", "x"],
                 ["leaderboard"], ["leaderboard", "--format", "csv"], ["reconcile"], ["cancel", "abc"],
                 ["rerun", "abc", "--failed"], ["ingest"]):
        proc = cli_in(workspace, empty, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert f"looked for .score-plugins in {empty}" in proc.stderr, (args, proc.stderr)
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert list(empty.iterdir()) == [], f"{args} created {list(empty.iterdir())}"


def _recipients(paths: list[str]) -> set[str]:
    import email

    return {str(email.message_from_bytes(Path(p).read_bytes())["To"]) for p in paths}


def test_rerun_keeps_the_original_scope_and_recipients(workspace, example_repo):
    write(example_repo, "sklearn_scores/models/broken/__init__.py", "def oops(:\n")
    commit_all(example_repo, "a broken model elsewhere", author="Bea Broken <broken@example.org>")
    write(example_repo, "sklearn_scores/benchmarks/raises/__init__.py",
          "from sklearn_scores import benchmark_registry\n\n"
          "class Raises:\n    def __call__(self, model):\n        raise ValueError('flaky benchmark')\n\n"
          "benchmark_registry['raises'] = Raises\n")
    commit_all(example_repo, "a failing benchmark", author="Rae Raises <raises@example.org>")
    first = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                          "--format", "json")
    assert first.returncode == 1, first.stderr
    original = json.loads(first.stdout)
    assert "broken/__init__.py" in first.stderr and "warning" in first.stderr  # not this change's plugin
    mailed = _recipients(original["emails"])
    assert "broken@example.org" not in mailed
    rerun = workspace.cli("rerun", original["run_id"], "--failed", "--format", "json")
    assert rerun.returncode == 1, rerun.stderr  # the benchmark fails again; the broken model is no error of it
    again = json.loads(rerun.stdout)
    assert [(p["model"], p["benchmark"]) for p in again["pairs"]] == [("logreg", "raises")]
    assert not [i for i in again["issues"] if i["severity"] == "error"], again["issues"]
    assert ": error: " not in rerun.stderr, rerun.stderr
    assert _recipients(again["emails"]) <= mailed and _recipients(again["emails"])


def test_a_change_whose_only_plugin_is_broken_says_nothing_was_scored(workspace, example_repo):
    import email
    import email.policy

    write(example_repo, "sklearn_scores/models/broken/__init__.py", "def oops(:\n")
    commit_all(example_repo, "a broken model", author="Bea Broken <broken@example.org>")
    proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2, proc.stderr
    [path] = json.loads(proc.stdout)["emails"]
    msg = email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)
    assert str(msg["To"]) == "broken@example.org"
    assert str(msg["Subject"]).endswith(": plugin problems, nothing scored"), msg["Subject"]


def test_status_follows_the_executor_runs_are_listed_and_named_by_prefix(workspace, example_repo):
    import signal

    from tests.test_repair import start_two_slow_pairs

    proc, _ = start_two_slow_pairs(workspace, example_repo)
    try:
        status = workspace.json("status")
        assert status["counts"] == {"RUNNING": 2}, status  # the coordinator's own line says "running 2"
        assert status["coordinator"] == "live"
        run_id = status["run_id"]
        assert workspace.json("status", run_id[:-3])["run_id"] == run_id  # a unique prefix names the run
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    # a rendered run, submitted by hand and ingested, is over (not PENDING forever)
    bundle = workspace.json("render", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                            "iris-accuracy", "--out", str(workspace.path / "bundle"))
    hand = workspace.json("status", bundle["run_id"])
    assert (hand["status"], hand["coordinator"]) == ("PENDING", "hand-submitted")
    assert bundle["submit"] == f"bash {bundle['run_dir']}/submit.sh"  # sbatch each tier, job ids recorded
    subprocess.run(["bash", "-c", bundle["run_locally"]], env=workspace.env, check=True, timeout=600,
                   capture_output=True)  # the printed local command runs the bundle
    ingested = workspace.json("ingest", bundle["run_dir"])
    assert ingested["scores"] == 1
    assert workspace.json("status", bundle["run_id"])["status"] == "COMPLETED"
    # the run closed by ingest is mailed as its coordinator would have (the model's and the benchmark's owners;
    # the local profile keeps them in the outbox's held/ folder), once: an ingest again mails nothing
    assert len(ingested["emails"]) == 2 and all("/outbox/held/" in e for e in ingested["emails"])
    assert workspace.json("ingest", bundle["run_dir"])["emails"] == []
    assert len([p for p in workspace.state.glob("outbox/**/*.eml")
                if f"X-Score-Plugins-Run: {bundle['run_id']}" in p.read_text()]) == 2
    listed = workspace.json("runs")
    assert [r["run_id"] for r in listed] == [bundle["run_id"], run_id]
    assert listed[1]["status"] == "CANCELLED" and listed[1]["counts"] == {"CANCELLED": 2}
    common = os.path.commonprefix([run_id, bundle["run_id"]])
    ambiguous = workspace.cli("status", common)
    assert ambiguous.returncode == 2 and run_id in ambiguous.stderr and bundle["run_id"] in ambiguous.stderr
    assert workspace.cli("status", "nope").returncode == 2


def test_a_closed_pipe_ends_quietly_and_a_mistyped_revision_lists_the_known_ones(workspace):
    workspace.cli("db", "upgrade", check=True)
    for args in (["leaderboard", "--format", "csv"], ["leaderboard", "--format", "json"], ["runs"], ["config"]):
        proc = subprocess.Popen([str(CLI), *args], cwd=workspace.path, env=workspace.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # the reader is gone before anything is written: every write is a broken pipe
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0, (args, err)
        assert err == "", (args, err)
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", f"{CLI} leaderboard --format csv | head -c 0"],
                           cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    typo = workspace.cli("db", "downgrade", "--revision", "nonsense", "--yes")
    assert typo.returncode == 2 and "unknown revision 'nonsense'" in typo.stderr and "0001" in typo.stderr
    assert "please report" not in typo.stderr


def test_a_failed_solve_is_retried_by_the_first_run_rerun_and_the_flag_with_honest_words(workspace, example_repo):
    write(example_repo, "sklearn_scores/benchmarks/unsolvable/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass B:\n    def __call__(self, model):\n"
          "        return 0.5\n\nbenchmark_registry['unsolvable'] = B\n")
    write(example_repo, "sklearn_scores/benchmarks/unsolvable/requirements.txt",
          "no-such-package-score-plugins-test==1.0\n")
    commit_all(example_repo, "a benchmark whose requirements do not solve")
    args = ("--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")

    def reasons(proc: subprocess.CompletedProcess) -> list[str]:
        assert proc.returncode == 1, proc.stderr
        return [p["reason"] for p in json.loads(proc.stdout)["pairs"]]

    planned = workspace.json("plan", *args, "--pairs")
    assert "cannot solve" in planned["cannot_run"][0]["problem"]
    # the plan's failure is its own: the first real run solves again and says so plainly
    [first] = reasons(workspace.cli("run", *args, "--format", "json"))
    assert "cannot solve" in first and "cached" not in first and "min ago" not in first, first
    # a run straight after reports the cached failure honestly: when, and how to retry now
    second_run = workspace.cli("run", *args, "--format", "json")
    [second] = reasons(second_run)
    assert "solve failed 0 min ago and is not tried again for" in second and "--retry-failed-solves" in second
    [flagged] = reasons(workspace.cli("run", *args, "--retry-failed-solves", "--format", "json"))
    assert "cannot solve" in flagged and "cached" not in flagged and "min ago" not in flagged, flagged
    [again] = reasons(workspace.cli("rerun", json.loads(second_run.stdout)["run_id"], "--failed", "--format", "json"))
    assert "cannot solve" in again and "cached" not in again and "min ago" not in again, again


def test_config_says_what_each_setting_means_and_where_it_came_from(workspace, tmp_path):
    import tomllib

    site = tmp_path / "site.toml"
    site.write_text('[score-plugins]\npartition = "gpu"\n')
    workspace.env.update({"SCORE_PLUGINS_CONFIG": str(site), "SCORE_PLUGINS_MEM": "8G"})
    printed = workspace.cli("--set", "time_minutes=30", "config", check=True).stdout
    assert tomllib.loads(printed)["score-plugins"]["time_minutes"] == 30  # still TOML for the site file
    lines = printed.splitlines()
    comment = {line.split(" = ")[0]: lines[i - 1] for i, line in enumerate(lines) if " = " in line
               and not line.startswith("#")}
    assert comment["mem"] == "# memory of one array task [from: environment SCORE_PLUGINS_MEM]"
    assert comment["time_minutes"].endswith("[from: --set]")
    assert comment["partition"].endswith(f"[from: site file {site}]")
    assert comment["cpus_per_task"] == "# CPUs of one array task [from: default]"
    assert all(c.startswith("# ") and not c.startswith("# [") for c in comment.values())  # every one explained


def test_misspelt_and_lower_case_variables_are_refused_with_the_right_name(workspace):
    env = dict(workspace.env, SCORE_PLUGINS_PAIRS_PER_TSK="2")
    proc = subprocess.run([str(CLI), "config"], cwd=workspace.path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "did you mean SCORE_PLUGINS_PAIRS_PER_TASK?" in proc.stderr, proc.stderr
    env = dict(workspace.env, score_plugins_sandbox="off")
    proc = subprocess.run([str(CLI), "config"], cwd=workspace.path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "SCORE_PLUGINS_SANDBOX" in proc.stderr and "upper-case" in proc.stderr


def test_reversed_revisions_and_uncommitted_plugin_edits_are_warned_about(workspace, example_repo):
    swapped = workspace.cli("detect", "--repo", str(example_repo), "--base", "HEAD", "--head", "HEAD~1")
    assert "warning: --base HEAD is newer than --head HEAD~1 (revisions reversed?)" in swapped.stderr, swapped.stderr
    assert "did you mean --base HEAD~1 --head HEAD?" in swapped.stderr
    write(example_repo, "sklearn_scores/models/logreg/__init__.py", "# edited, not committed\n")
    dirty = workspace.cli("detect", "--repo", str(example_repo), "--base", "HEAD~1")
    assert "uncommitted edits in plugin folders are not scored" in dirty.stderr, dirty.stderr
    assert "sklearn_scores/models/logreg/__init__.py" in dirty.stderr
    clean = workspace.cli("detect", "--repo", str(example_repo), "--base", "HEAD~1", "--head", "HEAD~1")
    assert "uncommitted" not in clean.stderr and "reversed" not in clean.stderr  # an explicit --head: no warning


def test_help_says_everything_and_offers_only_what_applies(workspace):
    def text(*args: str) -> str:
        out = workspace.cli(*args, "--help", check=True).stdout
        return " ".join(out.split())  # as one line: wrapping does not matter

    top = text()
    commands = top.split("Commands:")[1]
    assert "..." not in commands and "own environment (unittests_plugins)" in commands  # whole sentences
    detect = text("detect")
    for words in ("plugins git repository", "revision before the change", "revision after the change"):
        assert words in detect
    board = text("leaderboard")
    assert "csv for spreadsheets" in board and "html: one static page" in board
    for args in (("leaderboard",), ("status",), ("db", "current"), ("runs",), ("scores", "history")):
        options = text(*args).split("Options:")[1]
        assert "--yes-prod" not in options, args  # reading prod needs no confirmation: not offered
    assert all("--yes-prod" in text(*args).split("Options:")[1] for args in (("ingest",), ("scores", "remove")))


def test_prune_frees_unused_environments_and_old_run_folders_but_keeps_what_reproduces(workspace, example_repo):
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(workspace.path / "envs")  # private: the shared cache stays
    done = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                          "iris-accuracy")
    run_dir = Path(done["run_dir"])
    [env] = [p for p in (workspace.path / "envs").iterdir() if p.is_dir()]
    assert workspace.json("prune", "--older-than", "1") == {"environments": [], "runs": [], "freed_bytes": 0,
                                                            "removed": False}  # used today: kept
    listed = workspace.json("prune", "--older-than", "0")
    assert [e["path"] for e in listed["environments"]] == [str(env)] and listed["freed_bytes"] > 10 * 2**20
    assert [r["run_id"] for r in listed["runs"]] == [done["run_id"]]
    assert env.exists() and (run_dir / "logs").exists()  # without --yes nothing goes
    removed = workspace.json("prune", "--older-than", "0", "--yes")
    assert removed["removed"] and removed["freed_bytes"] == listed["freed_bytes"]
    assert not env.exists() and not (run_dir / "logs").exists() and not (run_dir / "spool").exists()
    assert (run_dir / "manifest.json").exists() and list((run_dir / "locks").iterdir())
    [row] = workspace.json("leaderboard")
    assert workspace.json("status", done["run_id"])["status"] == "COMPLETED"
    again = workspace.json("reproduce", str(row["id"]), "--out", str(workspace.path / "again"))
    assert Path(again["job_script"]).exists()  # the lockfile kept is enough to score it again
    assert workspace.json("prune", "--older-than", "0", "--yes")["freed_bytes"] == 0  # idempotent


def test_a_task_whose_pairs_cannot_fit_its_time_limit_is_warned_about(workspace, example_repo):
    """Per tier, with each task's real pair count (issue 36): one pair fits 30 minutes, four do not; a 10-minute
    tier with 2 x 900 s is named, and the tier's own limit is cited, never the unused global one."""
    args = ("render", "--repo", str(example_repo), "--all", "--models", "logreg")
    one = ("--benchmarks", "iris-accuracy")
    fits = workspace.cli(*args, *one, "--out", str(workspace.path / "a"))
    assert fits.returncode == 0 and "exceeds" not in fits.stderr, fits.stderr  # the defaults fit
    alone = workspace.cli("--set", "time_minutes=30", *args, *one, "--out", str(workspace.path / "b"))
    assert alone.returncode == 0 and "exceeds" not in alone.stderr, alone.stderr  # its task holds one pair
    tight = workspace.cli("--set", "time_minutes=30", *args, "--out", str(workspace.path / "c"))
    assert tight.returncode == 0, tight.stderr
    assert "warning: a task of 4 pair(s) x pair_timeout (900 s) = 60 min exceeds time_minutes (30)" in tight.stderr
    tiers = json.dumps([{"name": "quick", "mem": "2G", "time_minutes": 10}, {"name": "long", "mem": "4G"}])
    tiered = workspace.cli("--set", f"tiers={tiers}", "--set", "pairs_per_task=2", "--set", "pair_timeout=1800",
                           *args, "--out", str(workspace.path / "d"))
    assert tiered.returncode == 0, tiered.stderr
    assert ("warning: tier quick: a task of 2 pair(s) x pair_timeout (1800 s) = 60 min exceeds its time_minutes "
            "(10)") in tiered.stderr and "(60)" not in tiered.stderr


def test_a_rendered_bundle_of_two_tiers_runs_by_hand_with_the_printed_local_loop(workspace, example_repo):
    """render's `run_locally` line runs every tier's job script (each its own array), and a task number a script
    does not hold says so on the caller's stderr, not only in its log."""
    from tests.test_tiers import add_benchmark as tier_benchmark, site_tiers

    tier_benchmark(example_repo, "roomy", "roomy", "return 0.5", "resources:\n  memory: 1500M\n")
    commit_all(example_repo, "a benchmark that declares 1.5 GB")
    site_tiers(workspace, {"name": "small", "mem": "1G"}, {"name": "large", "mem": "2G"})
    bundle = workspace.json("render", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                            "iris-accuracy,roomy", "--out", str(workspace.path / "bundle"))
    assert [Path(s).name for s in bundle["job_scripts"]] == ["job.sh", "job-large.sh"]
    stray = subprocess.run(["bash", bundle["job_script"]], env={**workspace.env, "SLURM_ARRAY_TASK_ID": "7"},
                           capture_output=True, text=True, timeout=60)
    assert stray.returncode == 2 and "this job has no array task 7" in stray.stderr, stray.stderr
    subprocess.run(["bash", "-c", bundle["run_locally"]], env=workspace.env, check=True, timeout=600,
                   capture_output=True)
    assert workspace.json("ingest", bundle["run_dir"])["scores"] == 2
    status = workspace.json("status", bundle["run_id"])
    assert status["status"] == "COMPLETED" and status["counts"] == {"COMPLETED": 2}
    assert sorted(a["tier"] for a in status["attempts"]) == ["large", "small"]
