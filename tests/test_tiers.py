"""Memory tiers: settings, the first tier (measured, declared, default), one array per tier with its own header,
out-of-memory escalation on the local executor and on the one-node Slurm cluster, and refusals at plan time."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.capacity.attempts import failure_kind
from pipeline.config import load_settings
from pipeline.errors import BadInput
from pipeline.executors.slurm import ArrayPart, parse_sacct
from pipeline.capacity.sizing import Estimates
from pipeline.tiers import Need, Tier, first_tier, next_tier, parse_tiers
from tests.conftest import commit_all, write

GB = 2**30


def site_tiers(workspace, *tiers: dict, **extra: object) -> None:
    """A site settings file with these [[tiers]] tables (SCORE_PLUGINS_CONFIG)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    for tier in tiers:
        lines.append("\n[[tiers]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in tier.items())
    # its own state folder, named: a stray .score-plugins in a parent folder (/tmp) is never picked up
    workspace.env["SCORE_PLUGINS_STATE_DIR"] = str(workspace.state)
    path = workspace.path / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    workspace.env["SCORE_PLUGINS_CONFIG"] = str(path)


def add_benchmark(repo, folder: str, identifier: str, body: str, metadata: str = "") -> None:
    write(repo, f"sklearn_scores/benchmarks/{folder}/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
          + "".join(f"        {line}\n" for line in body.splitlines())
          + f"\nbenchmark_registry['{identifier}'] = Bench\n")
    write(repo, f"sklearn_scores/benchmarks/{folder}/requirements.txt", "scikit-learn>=1.3\n")
    if metadata:
        write(repo, f"sklearn_scores/benchmarks/{folder}/metadata.yml", metadata)


def test_tier_settings_are_checked_and_default_to_the_plain_request(workspace):
    plain = load_settings(environ={"SCORE_PLUGINS_MEM": "6G", "SCORE_PLUGINS_TIME_MINUTES": "30"})
    assert plain.tier_list == [Tier("default", "6G", 30, 0)]
    assert plain.slurm_options("x", "0", plain.tier_list[0]) == plain.slurm_options("x", "0")  # nothing changes
    for bad, words in (([{"name": "a", "mem": "8G"}, {"name": "b", "mem": "2G"}], "smallest first"),
                       ([{"name": "a", "mem": "lots"}], "not a size"),
                       ([{"name": "a b", "mem": "1G"}], "needs a name"),
                       ([{"name": "a", "mem": "1G", "cores": 4}], "unknown keys cores"),
                       ([{"name": "a", "mem": "1G"}, {"name": "a", "mem": "2G"}], "names repeat")):
        with pytest.raises(BadInput, match=words):
            parse_tiers(bad, mem="4G", time_minutes=60, gpus=0)
    with pytest.raises(BadInput, match="tier_unseen_percentile: 120 is not 0 to 100"):
        load_settings(environ={"SCORE_PLUGINS_TIER_UNSEEN_PERCENTILE": "120"})
    site_tiers(workspace, {"name": "small", "mem": "8G"}, {"name": "big", "mem": "2G"})
    proc = workspace.cli("config")
    assert proc.returncode == 2 and "smallest first" in proc.stderr and "Traceback" not in proc.stderr


def test_first_tier_next_tier_and_failure_kinds():
    tiers = parse_tiers([{"name": "s", "mem": "4G", "time_minutes": 60}, {"name": "m", "mem": "16G"},
                         {"name": "g", "mem": "16G", "gpus": 1, "gpu_type": "a100"},
                         {"name": "l", "mem": "64G", "time_minutes": 240}], mem="4G", time_minutes=60, gpus=0)
    assert first_tier(tiers, None, Need(), 0.2) == (tiers[0], "default: nothing measured or declared")
    assert first_tier(tiers, int(3.5 * GB), Need(), 0.2)[0].name == "m"  # 3.5 GB + 20 % does not fit 4 GB
    assert first_tier(tiers, 3 * GB, Need(), 0.2)[0].name == "s"
    assert first_tier(tiers, None, Need(10 * GB), 0.2) == (tiers[1], "declared in metadata.yml")
    assert first_tier(tiers, None, Need(gpus=1), 0.2)[0].name == "g"
    assert first_tier(tiers, None, Need(time_minutes=120), 0.2)[0].name == "l"
    assert tiers[2].gres == "gpu:a100:1"
    assert next_tier(tiers, "s", "OOM").name == "m" and next_tier(tiers, "m", "OOM").name == "l"
    assert next_tier(tiers, "g", "OOM") is None  # no larger tier keeps its GPU
    assert next_tier(tiers, "s", "TIMEOUT").name == "l" and next_tier(tiers, "l", "OOM") is None
    assert failure_kind("OUT_OF_MEMORY", None, "exceeded its memory limit") == "OOM"
    assert failure_kind("FAILED", "score", "MemoryError: ") == "OOM"
    assert failure_kind("FAILED", "score", "_ArrayMemoryError: Unable to allocate 8.00 GiB") == "OOM"
    assert failure_kind("FAILED", "score", "ValueError: bad input") == "PLUGIN"
    assert failure_kind("TIMEOUT", None, "TIMEOUT") == "TIMEOUT"
    assert failure_kind("NODE_FAIL", None, "NODE_FAIL") == "INFRASTRUCTURE"
    assert failure_kind("FAILED", None, "FAILED: exit code 0:9", 3_900 * 2**20, 4 * GB) == "OOM"
    assert failure_kind("FAILED", None, "FAILED: exit code 0:9", 100 * 2**20, 4 * GB) == "UNKNOWN"
    assert failure_kind("COMPLETED", None, None) is None
    # what an attempt row takes from sacct for a task killed without a result: its peak and its time
    killed = parse_sacct("100_1|FAILED|0:9|vm|00:01:08|None||800M\n"
                         "100_1.batch|CANCELLED by 0|0:9|vm|00:01:08||957728K|\n", [ArrayPart("100", 0, 3)])[1]
    assert (killed.state, killed.max_rss_bytes, killed.elapsed_seconds) == ("OUT_OF_MEMORY", 957728 * 1024, 68.0)
    # learnt peaks: a model's part beyond each benchmark's fixed cost, plus the benchmark's fixed cost
    est = Estimates.learn({("small", "heavy"): 70 * GB, ("big", "heavy"): 78 * GB, ("small", "light"): 1 * GB,
                           ("big", "light"): 9 * GB})
    assert est.estimate("small", "light") == (1 * GB, "this pair")
    assert est.fixed == {"heavy": 70 * GB, "light": 1 * GB} and est.model_part == {"small": 0, "big": 8 * GB}
    assert est.estimate("small", "new") == (0 + 70 * GB, "its model")  # unseen benchmark: 75th percentile cost
    assert est.estimate("new", "light") == (8 * GB + 1 * GB, "its benchmark")
    assert est.estimate("new", "newer") == (None, "")
    # the unseen side's percentile is a setting (tier_unseen_percentile, default 75; see benchmarks/tier_bench.py)
    five = Estimates.learn({("m", f"b{i}"): i * GB for i in range(1, 6)})  # fixed costs 1..5 GB, model part 0
    assert five.estimate("m", "new")[0] == 4 * GB
    assert Estimates.learn(five.pairs, q=0.9).estimate("m", "new")[0] == 5 * GB


GPU_TIERS = ({"name": "small", "mem": "1G", "time_minutes": 20}, {"name": "gpu", "mem": "8G", "gpus": 1,
                                                                   "gpu_type": "a100", "time_minutes": 120})


def test_each_tier_is_its_own_array_and_a_gpu_declaration_renders_gres(workspace, example_repo):
    add_benchmark(example_repo, "on_gpu", "on-gpu", "return 0.5", "resources:\n  gpus: 1\n  memory: 6G\n")
    commit_all(example_repo, "a benchmark that needs a GPU")
    site_tiers(workspace, *GPU_TIERS)
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--all", "--models", "logreg")
    tiers = {p["benchmark"]: (p["tier"], p["tier_why"]) for p in plan["to_run"]}
    assert tiers["on-gpu"] == ("gpu", "declared in metadata.yml")
    assert tiers["wine-accuracy"] == ("small", "default: nothing measured or declared")
    assert plan["tiers"] == {"small": 4, "gpu": 1}
    bundle = workspace.json("render", "--repo", str(example_repo), "--all", "--models", "logreg",
                            "--out", str(workspace.path / "bundle"))
    run_dir = workspace.path / "bundle"
    small, gpu = (run_dir / "job.sh").read_text(), (run_dir / "job-gpu.sh").read_text()
    assert "#SBATCH --mem=1G" in small and "--gres" not in small and "#SBATCH --array=0-0" in small
    assert "#SBATCH --gres=gpu:a100:1" in gpu and "#SBATCH --mem=8G" in gpu and "#SBATCH --time=120" in gpu
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [(t["tier"], t["script"]) for t in manifest["tasks"]] == [("small", "job.sh"), ("gpu", "job-gpu.sh")]
    assert bundle["array_tasks"] == 2
    assert bundle["job_scripts"] == [str(run_dir / "job.sh"), str(run_dir / "job-gpu.sh")]


def test_a_declaration_larger_than_every_tier_is_refused_at_plan_time(workspace, example_repo):
    add_benchmark(example_repo, "huge", "huge", "return 0.5", "resources:\n  memory: 500G\n")
    commit_all(example_repo, "a benchmark that declares 500 GB")
    site_tiers(workspace, *GPU_TIERS)
    proc = workspace.cli("plan", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2, proc.stderr
    assert "huge declares 500.0 GB of memory; the largest tier is gpu (8G" in proc.stderr
    assert json.loads(proc.stdout)["counts"]["to_run"] == 0
    run = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert run.returncode == 2 and json.loads(run.stdout)["run_id"] is None  # nothing submitted


def test_memory_errors_escalate_on_the_local_executor_and_the_next_run_starts_where_it_fitted(
        workspace, example_repo):
    """MemoryError (Python's, and numpy's _ArrayMemoryError) at the small tier's limit: OOM, one tier up,
    COMPLETED there, two attempt rows each; the packed neighbour keeps its result; a later run of the same model
    on a new benchmark starts on the tier that fitted, because it was measured."""
    add_benchmark(example_repo, "hog", "hog", "blocks = [bytearray(100 * 2**20) for _ in range(14)]\nreturn 0.5")
    add_benchmark(example_repo, "np_hog", "np-hog", "import numpy\nx = numpy.ones(180 * 2**20)\nreturn 0.5")
    add_benchmark(example_repo, "quiet", "quiet", "return 0.6")
    commit_all(example_repo, "two benchmarks that need 1.4 GB, one that needs little")
    site_tiers(workspace, {"name": "small", "mem": "1G"}, {"name": "large", "mem": "3G"}, pairs_per_task=4)
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert result["states"] == {"COMPLETED": 3}, result["pairs"]
    status = workspace.json("status", result["run_id"])
    tries = {}
    for a in status["attempts"]:
        tries.setdefault(a["benchmark"], []).append((a["tier"], a["failure_kind"]))
        assert {"model", "benchmark", "tier", "failure_kind", "max_rss_bytes", "elapsed_seconds", "job_id"} <= set(a)
    assert tries == {"hog": [("small", "OOM"), ("large", None)], "np-hog": [("small", "OOM"), ("large", None)],
                     "quiet": [("small", None)]}
    hog = [a for a in status["attempts"] if a["benchmark"] == "hog"]
    assert hog[0]["escalated_to"] == "large" and hog[1]["max_rss_bytes"] > 2**30  # the peak that fitted
    assert status["usage"]["escalations"] == 2 and status["usage"]["gb_hours_requested"] > 0
    outbox = "".join(p.read_text(errors="replace") for p in (workspace.state / "outbox").rglob("*.eml"))
    assert "logreg on hog: small OOM" in outbox and "escalation(s) to a larger tier" in outbox

    add_benchmark(example_repo, "later", "later", "return 0.7")
    commit_all(example_repo, "a new benchmark")
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    [pair] = plan["to_run"]
    assert pair["tier"] == "large" and pair["tier_why"].startswith("measured") and "its model" in pair["tier_why"]
    # the unseen benchmark counts as the tier_unseen_percentile of those measured: at 0, the cheapest (quiet's)
    workspace.env["SCORE_PLUGINS_TIER_UNSEEN_PERCENTILE"] = "0"
    plan = workspace.json("plan", "--pairs", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert [p["tier"] for p in plan["to_run"]] == ["small"]


def test_a_pair_larger_than_the_largest_tier_fails_after_one_attempt_per_tier(workspace, example_repo):
    add_benchmark(example_repo, "bottomless", "bottomless", "raise MemoryError('wants everything')")
    commit_all(example_repo, "a benchmark no tier can hold")
    site_tiers(workspace, {"name": "small", "mem": "1G"}, {"name": "large", "mem": "2G"})
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg", expect=1)
    [pair] = result["pairs"]
    assert pair["state"] == "FAILED" and pair["reason"].startswith("needs more than the largest tier (large: 2 GB)")
    status = workspace.json("status", result["run_id"])
    assert [(a["tier"], a["failure_kind"]) for a in status["attempts"]] == [("small", "OOM"), ("large", "OOM")]


@pytest.mark.integration
def test_on_slurm_an_oom_task_escalates_its_pair_reruns_its_neighbours_and_tops_out(slurm_cluster, workspace,
                                                                                  example_repo):
    """The one-node Slurm cluster kills a task over its memory (OverMemoryKill): the pair that was running goes
    one tier up and completes there (two attempt rows, the first with the peak sacct measured); its packed
    neighbours, which never started, are the same model's: they start where it moved (issue 36: escalation learns
    within the run), one attempt each; a MemoryError is OOM too, and at the largest tier ends FAILED. A later run
    of the same model on a new benchmark starts on the tier that fitted."""
    add_benchmark(example_repo, "a_hog", "a-hog", "import time\nblocks = []\nfor _ in range(12):\n"
                  "    blocks.append(bytearray(100 * 2**20))\n    time.sleep(0.05)\ntime.sleep(4)\nreturn 0.5")
    add_benchmark(example_repo, "b_quiet", "b-quiet", "return 0.6")
    add_benchmark(example_repo, "c_bottomless", "c-bottomless", "raise MemoryError('wants everything')")
    commit_all(example_repo, "a 1.2 GB benchmark, a small one, one no tier can hold")
    site_tiers(workspace, {"name": "small", "mem": "800M", "time_minutes": 10},
               {"name": "large", "mem": "3G", "time_minutes": 10}, pairs_per_task=4)
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                            "--executor", "slurm", expect=1)
    pairs = {p["benchmark"]: p for p in result["pairs"]}
    assert pairs["a-hog"]["state"] == "COMPLETED" and pairs["b-quiet"]["state"] == "COMPLETED", pairs
    assert pairs["c-bottomless"]["state"] == "FAILED"
    assert pairs["c-bottomless"]["reason"].startswith("needs more than the largest tier (large: 3 GB)")
    status = workspace.json("status", result["run_id"], expect=0)
    tries: dict[str, list] = {}
    for a in status["attempts"]:
        tries.setdefault(a["benchmark"], []).append(a)
    assert [(a["tier"], a["failure_kind"]) for a in tries["a-hog"]] == [("small", "OOM"), ("large", None)]
    assert tries["a-hog"][0]["max_rss_bytes"] > 700 * 2**20  # sacct's MaxRSS of the killed task
    assert tries["a-hog"][0]["job_id"] != tries["a-hog"][1]["job_id"]
    assert [(a["tier"], a["failure_kind"]) for a in tries["b-quiet"]] == [("large", None)]
    assert [(a["tier"], a["failure_kind"]) for a in tries["c-bottomless"]] == [("large", "OOM")]

    add_benchmark(example_repo, "d_new", "d-new", "return 0.7")
    commit_all(example_repo, "a new benchmark")
    later = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                           "--executor", "slurm")
    [attempt] = workspace.json("status", later["run_id"])["attempts"]
    assert (attempt["benchmark"], attempt["tier"], attempt["failure_kind"]) == ("d-new", "large", None)


def test_a_timeout_at_the_tier_limit_moves_to_the_next_tier_with_a_longer_limit(workspace, example_repo):
    """The local executor stops a task at its tier's time limit, as Slurm would (TIMEOUT); the pair runs again
    on the next tier with a longer limit, and completes there."""
    add_benchmark(example_repo, "slow", "slow", "import time\ntime.sleep(75)\nreturn 0.5")
    commit_all(example_repo, "a benchmark that takes 75 s")
    site_tiers(workspace, {"name": "quick", "mem": "2G", "time_minutes": 1},
               {"name": "roomy", "mem": "2G", "time_minutes": 5}, pairs_per_task=4)
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert result["states"] == {"COMPLETED": 1}, result["pairs"]
    status = workspace.json("status", result["run_id"])
    assert [(a["tier"], a["failure_kind"], a["req_time_minutes"]) for a in status["attempts"]] == [
        ("quick", "TIMEOUT", 1), ("roomy", None, 5)]
    assert "time limit of 1 minutes" in status["attempts"][0]["reason"]


BURN = ("import resource, time\nstart = time.process_time()\nwhile time.process_time() - start < {seconds}:\n"
        "    pass\nused = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(f'CPU {side} {{used.ru_utime + used.ru_stime:.3f}}', flush=True)\n")


@pytest.mark.integration
def test_on_slurm_a_model_that_needs_the_large_tier_takes_all_its_pairs_there_in_one_round(slurm_cluster, workspace,
                                                                                         example_repo):
    """Issue 36's acceptance: a model that needs about 600 MB, tiers of 300M and 1500M, 4 benchmarks packed 2 per
    task. The first round's tasks are killed on small (the pair that ran is OOM, its neighbour never started);
    escalation moves the model's every pair to large at once: one escalation round, every pair COMPLETED on
    large, one attempt row per attempt (a pair that ran on both tiers has two), each naming its own job and task.
    Each attempt's CPU seconds are its processes' (both sides, as they measure themselves) within 20 %."""
    write(example_repo, "sklearn_scores/models/hungry/__init__.py",
          "from sklearn_scores import model_registry\n\nKEEP = []\n\ndef build():\n    side = 'model'\n"
          "    KEEP.append(bytearray(b'\\x01') * (600 * 2**20))  # touched: resident, held while it serves\n"
          + "".join(f"    {line}\n" for line in BURN.format(seconds=2.0, side="{side}").splitlines())
          + "    return object()\n\nmodel_registry['hungry'] = build\n")
    write(example_repo, "sklearn_scores/models/hungry/requirements.txt", "scikit-learn>=1.3\n")
    for name in ("b1", "b2", "b3", "b4"):
        add_benchmark(example_repo, name, name, "side = 'benchmark'\n" + BURN.format(seconds=0.5, side="{side}")
                      + "return 0.5")
    commit_all(example_repo, "a model that needs 600 MB, four benchmarks")
    site_tiers(workspace, {"name": "small", "mem": "300M", "time_minutes": 10},
               {"name": "large", "mem": "1500M", "time_minutes": 10}, pairs_per_task=2)
    calls = workspace.log_slurm_calls()
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "hungry", "--benchmarks",
                            "b1,b2,b3,b4", "--executor", "slurm")
    assert result["states"] == {"COMPLETED": 4}, result["pairs"]
    run_dir = workspace.state / "runs" / result["run_id"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rounds = {t["script"].split("-")[1] for t in manifest["tasks"] if t["script"].startswith("job-a")}
    assert rounds == {"a2"}, [t["script"] for t in manifest["tasks"]]  # one escalation round
    assert len([line for line in calls.read_text().splitlines() if " sbatch " in line]) == 2  # an array a round
    tries: dict[str, list[dict]] = {}
    for a in workspace.json("status", result["run_id"])["attempts"]:
        tries.setdefault(a["benchmark"], []).append(a)
    jobs = {b: a for b, a in workspace.rows("SELECT benchmark, attempt FROM jobs WHERE run_id = ?",
                                           result["run_id"])}
    assert sorted(tries) == ["b1", "b2", "b3", "b4"]
    for benchmark, rows in tries.items():
        assert [a["attempt"] for a in rows] == list(range(1, jobs[benchmark] + 1))  # one row per attempt
        assert rows[-1]["tier"] == "large" and rows[-1]["failure_kind"] is None, rows
        assert [(a["tier"], a["failure_kind"], a["escalated_to"]) for a in rows[:-1]] in (
            [], [("small", "OOM", "large")]), rows
    ran_twice = [b for b, rows in tries.items() if len(rows) == 2]
    assert len(ran_twice) == 2  # the pair each killed task was running; its neighbour never started there
    ids = [a["job_id"] for rows in tries.values() for a in rows]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"\d+_\d+", i) for i in ids), ids
    for benchmark, rows in tries.items():
        log = (run_dir / "logs").glob("*.log")
        text = next(p.read_text() for p in log if f"on {benchmark} (" in p.read_text())
        last = text[text.rindex("scoring hungry"):]
        real = sum(float(v) for v in re.findall(r"^CPU (?:model|benchmark) ([\d.]+)$", last, re.MULTILINE))
        assert real > 2.4 and abs(rows[-1]["cpu_seconds"] - real) <= 0.2 * real, (benchmark, rows[-1], real)


def test_progress_counts_pairs_not_attempts():
    """A pair that an escalation runs again is not done twice, and the total stays the run's pairs (issue 36)."""
    from pipeline.stages.watch import Progress

    progress = Progress(total=2)
    progress.add({"pair_key": "a", "status": "error", "model": "m", "benchmark": "x"})  # out of memory on small
    assert (progress.done, progress.failed, progress.left) == (1, 1, 1)
    progress.forget("a")  # escalated: it runs again
    progress.add({"pair_key": "a", "status": "ok", "model": "m", "benchmark": "x"})
    progress.add({"pair_key": "b", "status": "ok", "model": "m", "benchmark": "y"})
    assert (progress.total, progress.done, progress.failed, progress.left) == (2, 2, 0, 0)
    assert progress.line().startswith("2/2 pairs done (0 failed), 0 left")


def test_tier_why_says_what_the_estimate_is_made_of():
    """Issue 36 saw "measured: peak 1.62 GB (its benchmark)" for a benchmark that never used more than 0.29 GB:
    the figure was another model's part at the 75th percentile plus that benchmark's fixed cost. It says so now."""
    est = Estimates.learn({("a", "light"): int(0.29 * GB), ("b", "light"): int(1.62 * GB),
                           ("b", "heavy"): int(1.62 * GB)})
    peak, whose = est.estimate("new", "light")
    assert whose == "its benchmark" and round(peak / GB, 2) == 1.62
    assert est.explain("new", "light") == (
        "the 75th percentile of the measured models' parts 1.33 GB (its model was never measured) + its benchmark's "
        "fixed cost 0.29 GB (the least any model needed on it)")
    assert est.explain("a", "light") == "peak 0.29 GB of this very pair" and est.explain("new", "newer") == ""
