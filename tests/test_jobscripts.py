"""Job scripts: every rendered variant is clean under shellcheck, hostile paths and values are
quoted so that bash does exactly the intended thing, and settings layer as documented."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jobscripts import EnvLine, RenderError, ScoreJob, SlurmOptions, TaskLine, render_env_builder, render_score_job
from pipeline.stages.bundle import render_bundle
from pipeline.config import load_settings
from pipeline.stages.detect import detect_all
from pipeline.executors.base import job_environment
from pipeline.stages.plan import make_plan

HOSTILE = "we'ird \"dir\" $(touch PWNED) `touch PWNED2`; touch PWNED3 \\ end"


def shellcheck(text: str, tmp_path: Path, name: str = "script.sh") -> None:
    path = tmp_path / name
    path.write_text(text)
    proc = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def job(**changes) -> ScoreJob:
    base = dict(run_id="r1", run_dir="/runs/r1", manifest="/runs/r1/manifest.json", worker="/runs/r1/worker.py",
                python="/usr/bin/python3", build_env="/runs/r1/build_env.sh", log_dir="/runs/r1/logs",
                env_root="/envs", env_mode="cached", tasks=(TaskLine(0, EnvLine("abc123", "/runs/r1/locks/abc123.txt"),
                                                                  EnvLine("bench1", "/runs/r1/locks/bench1.txt")),),
                n_pairs=1, slurm=SlurmOptions(job_name="score-r1", array="0-0"))
    base.update(changes)
    return ScoreJob(**base)


@pytest.mark.parametrize("variant", [
    {},
    {"env_mode": "fresh"},
    {"modules": ("python/3.11", "cuda 12; rm -rf /")},
    {"run_dir": HOSTILE, "manifest": HOSTILE + "/m.json", "worker": HOSTILE + "/w.py", "log_dir": HOSTILE,
     "env_root": HOSTILE, "python": HOSTILE + "/python", "build_env": HOSTILE + "/b.sh"},
    {"tasks": tuple(TaskLine(i, EnvLine(f"env{i % 3}", f"/locks/{HOSTILE}{i}.txt"),
                             EnvLine(f"env{i % 2}", f"/locks/{HOSTILE}b{i}.txt", f"{HOSTILE}/c.sh")) for i in range(50))},
    {"slurm": SlurmOptions(job_name="score-r1", array="0-9%2", partition="gpu", account="lab", qos="high",
                           time_minutes=90, mem="16G", cpus_per_task=4, gpus=1,
                           extra=("#SBATCH --constraint=avx2", "--exclusive"), drop=("--mem",))},
])
def test_every_variant_passes_shellcheck(variant, tmp_path):
    shellcheck(render_score_job(job(**variant)), tmp_path)


def test_env_builder_passes_shellcheck_with_hostile_paths(tmp_path):
    shellcheck(render_env_builder(backend="uv", uv=HOSTILE + "/uv", python=HOSTILE + "/py", package_cache=HOSTILE),
               tmp_path)
    shellcheck(render_env_builder(backend="uv", uv="/usr/bin/uv", python="/usr/bin/python3"), tmp_path)


def test_the_hand_submit_script_passes_shellcheck_and_refuses_odd_script_names(tmp_path):
    from jobscripts import SubmitArray, render_submit

    shellcheck(render_submit("r1", HOSTILE, (SubmitArray("job.sh", 0, 3), SubmitArray("job-large.sh", 3, 1))),
               tmp_path)
    with pytest.raises(RenderError, match="job script name"):
        render_submit("r1", "/runs/r1", (SubmitArray("job.sh; rm -rf /", 0, 1),))


def test_header_values_sbatch_could_misread_are_refused():
    with pytest.raises(RenderError, match="partition"):
        render_score_job(job(slurm=SlurmOptions(job_name="x", array="0-0", partition="a b")))
    with pytest.raises(RenderError, match="extra"):
        render_score_job(job(slurm=SlurmOptions(job_name="x", array="0-0", extra=("--x=1\n#SBATCH --y",))))
    with pytest.raises(RenderError, match="environment key"):
        render_score_job(job(tasks=(TaskLine(0, EnvLine("a", "/l"), EnvLine("$(id)", "/l")),)))
    header = render_score_job(job(slurm=SlurmOptions(job_name="x", array="0-0", mem="8G", extra=("--mem=2G",),
                                                     drop=("mem",))))
    assert "--mem" not in header


def test_hostile_paths_run_exactly_as_intended(tmp_path, example_repo, env_cache):
    """State folder, environment root and interpreter all live under a hostile path; the rendered
    job scores the pair, and none of the embedded commands ran."""
    hostile = tmp_path / HOSTILE
    hostile.mkdir()
    python = hostile / "python3"
    python.symlink_to(os.path.realpath(load_settings(environ={}).python))
    settings = load_settings({"state_dir": str(hostile / "state"), "python": str(python),
                              "env_root": str(env_cache)}, environ={})
    change, catalog = detect_all(example_repo, "HEAD")
    plan = make_plan(change, catalog, locks_dir=settings.locks_dir, uv=settings.uv, python_version="3.11",
                     scored=lambda keys: set(), models=["logreg"], benchmarks=["iris-accuracy"])
    bundle = render_bundle(settings, plan, example_repo, "local")
    shellcheck(bundle.job_script.read_text(), tmp_path, "job.sh")
    env = job_environment({"SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "77"})
    proc = subprocess.run(["bash", str(bundle.job_script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr + (bundle.log_dir / "task-0.out").read_text()
    [result] = [json.loads(p.read_text()) for p in bundle.spool_dir.glob("*.json")]
    # the value scikit-learn gives in the same environment, computed here without the pipeline
    env_python = Path(env_cache) / bundle.manifest.tasks[0]["envs"]["benchmark"]["env_key"] / "bin" / "python"
    direct = subprocess.run([str(env_python), "-c", "from sklearn_scores import score; "
                             "print(repr(float(score('logreg', 'iris-accuracy'))))"],
                            env={"PYTHONPATH": bundle.manifest.code_dir, "PATH": os.environ["PATH"]},
                            capture_output=True, text=True, check=True).stdout
    assert result["status"] == "ok" and result["score_ceiled"] == float(direct)
    for root in (tmp_path, hostile, Path.cwd(), bundle.run_dir):
        assert not any(root.glob("PWNED*")), root


def test_settings_layering(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[score-plugins]\npartition = "from-file"\nmem = "8G"\ntime_minutes = 30\nmodules = ["a", "b"]\n')
    environ = {"SCORE_PLUGINS_CONFIG": str(site), "SCORE_PLUGINS_MEM": "16G", "SCORE_PLUGINS_MODULES": "x,y"}
    settings = load_settings({"time_minutes": 45}, environ=environ)
    assert (settings.partition, settings.mem, settings.time_minutes, settings.modules) == (
        "from-file", "16G", 45, ["x", "y"])
    assert load_settings(environ={}).partition == ""  # package default
    site.write_text('partition = "p"\nno_such_setting = 1\n')
    from pipeline.errors import BadInput

    with pytest.raises(BadInput, match="no_such_setting"):
        load_settings(environ=environ)


def test_plugin_test_job_passes_shellcheck(tmp_path):
    from jobscripts import PluginTestJob, PluginTestTask, render_plugin_test_job

    text = render_plugin_test_job(PluginTestJob(
        code_dir=HOSTILE, report_dir=HOSTILE + "/r", build_env=HOSTILE + "/b.sh", env_root=HOSTILE,
        tasks=(PluginTestTask(0, "models/knn", "abc", HOSTILE + "/l.txt", (HOSTILE + "/test.py", "/x/test_b.py")),),
        slurm=SlurmOptions(job_name="plugin-tests", array="0-0")))
    shellcheck(text, tmp_path)
