"""GPUs reach the pairs that asked for them, and nothing else (issue 36).

This machine has no GPU. The tests make a private device folder holding NVIDIA character devices (major 195, made
with mknod as root: a stand-in for a GPU node's /dev, named so) and point the `gpu_dev_dir` setting at it: the
worker takes a GPU pair's device nodes from there, exactly as it takes them from /dev on a real node (the code path
is the same; only the folder differs). No driver answers behind those nodes, so what is checked is what the pair's
processes see (device nodes, CUDA_VISIBLE_DEVICES), not CUDA itself: `scripts/gpu-check` is what an administrator
runs on a real GPU node.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import threading
import time
from pathlib import Path

import pytest

from pipeline.capacity.attempts import failure_kind
from pipeline.capacity.escalation import _places
from pipeline.tiers import next_tier, parse_tiers
from pipeline.config import load_settings
from pipeline.executors.gpu_pool import GpuPool, discover
from pipeline.executors.slurm.ids import task_job_id
from pipeline.job import seccomp
from pipeline.job.gpus import NoGpu, gpu_view
from tests.conftest import commit_all, write
from tests.test_tiers import site_tiers

PROBE = ("import os\nnodes = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))\n"
         "print(f\"PROBE {SIDE} nodes={','.join(nodes)} cvd={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}\", "
         "flush=True)\n")


def fake_gpu_node(folder: Path, gpus: int) -> Path:
    """A stand-in for a GPU node's /dev: `gpus` NVIDIA GPU device nodes and the control nodes, made with mknod."""
    folder.mkdir()
    nodes = {f"nvidia{i}": (195, i) for i in range(gpus)}
    nodes.update({"nvidiactl": (195, 255), "nvidia-modeset": (195, 254), "nvidia-uvm": (235, 0),
                  "nvidia-uvm-tools": (235, 1)} if gpus else {})
    for name, (major, minor) in nodes.items():
        os.mknod(folder / name, 0o666 | 0o020000, os.makedev(major, minor))  # S_IFCHR
        os.chmod(folder / name, 0o666)
    (folder / "null").touch()  # not a device: never mistaken for one
    return folder


def probe_model(repo: Path, folder: str, identifier: str, gpus: int = 0, body: str = "") -> None:
    write(repo, f"sklearn_scores/models/{folder}/__init__.py",
          "import time\nfrom sklearn.linear_model import LogisticRegression\nfrom sklearn_scores import model_registry\n\n"
          "def build():\n    SIDE = 'model'\n" + "".join(f"    {line}\n" for line in PROBE.splitlines())
          + "".join(f"    {line}\n" for line in body.splitlines())
          + "    return LogisticRegression()\n\n"
          f"model_registry['{identifier}'] = build\n")
    write(repo, f"sklearn_scores/models/{folder}/requirements.txt", "scikit-learn>=1.3\n")
    if gpus:
        write(repo, f"sklearn_scores/models/{folder}/metadata.yml", f"resources:\n  gpus: {gpus}\n")


def probe_benchmark(repo: Path, folder: str, identifier: str) -> None:
    write(repo, f"sklearn_scores/benchmarks/{folder}/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
          "        SIDE = 'benchmark'\n" + "".join(f"        {line}\n" for line in PROBE.splitlines())
          + "        return 0.5\n\n" + f"benchmark_registry['{identifier}'] = Bench\n")
    write(repo, f"sklearn_scores/benchmarks/{folder}/requirements.txt", "scikit-learn>=1.3\n")


def probes(workspace, run_id: str) -> dict[tuple[str, str], dict]:
    """(model, benchmark) -> what each side of the pair printed, from the pair's log."""
    seen = {}
    for log in (workspace.state / "runs" / run_id / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        pair = re.search(r"scoring (\S+) on (\S+) \(", text)
        if pair is None:
            continue  # an environment's log
        sides = dict(re.findall(r"PROBE (\w+) (nodes=\S* cvd=\S*)", text))
        seen[pair.groups()] = {"text": text, **sides}
    return seen


def test_a_gpu_pair_sees_exactly_its_gpu_concurrent_tasks_get_different_ones_and_a_cpu_pair_none(
        workspace, example_repo, tmp_path):
    """Two GPUs on a stand-in node, two GPU pairs in two tasks at once: each model process sees its own device
    node and the control nodes, CUDA_VISIBLE_DEVICES=0 (renumbered: its sandbox shows one GPU); the benchmark's
    side sees none, and so does a pair that asked for none. The attempts record one GPU each, its peak GPU memory
    "not measured" (no NVML here), never 0."""
    dev = fake_gpu_node(tmp_path / "dev", 2)
    probe_model(example_repo, "gpu_probe", "gpu-probe", gpus=1, body="time.sleep(4)  # holds its GPU a while")
    probe_model(example_repo, "cpu_probe", "cpu-probe")
    probe_benchmark(example_repo, "probe_a", "probe-a")
    probe_benchmark(example_repo, "probe_b", "probe-b")
    commit_all(example_repo, "GPU and CPU probes")
    site_tiers(workspace, {"name": "small", "mem": "2G"}, {"name": "gpu", "mem": "2G", "gpus": 1},
               pairs_per_task=1)
    workspace.env.update({"SCORE_PLUGINS_GPU_DEV_DIR": str(dev), "SCORE_PLUGINS_LOCAL_WORKERS": "4"})
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "gpu-probe,cpu-probe",
                            "--benchmarks", "probe-a,probe-b")
    assert result["states"] == {"COMPLETED": 4}, result["pairs"]
    seen = probes(workspace, result["run_id"])
    gpu_nodes = []
    for benchmark in ("probe-a", "probe-b"):
        gpu, cpu = seen[("gpu-probe", benchmark)], seen[("cpu-probe", benchmark)]
        nodes, cvd = gpu["model"].split(" ")
        listed = nodes[len("nodes="):].split(",")
        own = [n for n in listed if re.fullmatch(r"nvidia\d+", n)]
        assert len(own) == 1 and cvd == "cvd=0", gpu["model"]
        assert {"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"} <= set(listed), gpu["model"]
        gpu_nodes.append(own[0])
        assert "the model's process gets 1 GPU(s)" in gpu["text"]
        for side in (gpu["benchmark"], cpu["model"], cpu["benchmark"]):  # the other sides see no GPU at all
            assert side == "nodes= cvd=", (benchmark, side)
    assert sorted(gpu_nodes) == ["nvidia0", "nvidia1"]  # two tasks at once: two different GPUs
    status = workspace.json("status", result["run_id"])
    for a in status["attempts"]:
        if a["model"] == "gpu-probe":
            assert (a["req_gpus"], a["gpu_count"], a["max_gpu_mem_bytes"], a["gpus_used"]) == (1, 1, None, None)
        else:
            assert (a["req_gpus"], a["gpu_count"]) == (0, None)
    assert status["usage"]["gpu_hours_used"] is None and status["usage"]["gpu_attempts"] == 2
    table = workspace.cli("status", result["run_id"]).stdout
    assert "not measured" in table and "GPU-hours not measured of" in table
    # the submitter's email says the same (text and HTML), never "0 used"
    bodies = [part.get_content() for path in workspace.state.glob("outbox/**/*.eml")
              for part in email.message_from_bytes(path.read_bytes(), policy=email.policy.default).walk()
              if part.get_content_type() in ("text/plain", "text/html")]
    assert bodies and all(re.search(r"GPU-hours not measured of [0-9.]+ requested", b) for b in bodies), bodies


def test_no_silent_cpu_fallback_and_cuda_out_of_memory_escalates_to_more_gpu_memory(workspace, example_repo,
                                                                                   tmp_path):
    """A GPU pair on a node that shows no GPU fails as the infrastructure's (NODE_FAIL, with the reason; never
    run on the CPU, never the submitter's fault). CUDA's out-of-memory (TensorFlow's wording here) is its own
    failure kind, GPU_OOM, and moves the pair to the tier with more memory per GPU, where it completes."""
    probe_model(example_repo, "gpu_probe", "gpu-probe", gpus=1)
    probe_model(example_repo, "gpu_hungry", "gpu-hungry", gpus=1, body=(
        "marker = os.path.join(os.environ['XDG_CACHE_HOME'], 'tried-once')\n"
        "if not os.path.exists(marker):  # its first attempt runs out of GPU memory; the next one fits\n"
        "    os.makedirs(os.environ['XDG_CACHE_HOME'], exist_ok=True)\n"
        "    open(marker, 'w').close()\n"
        "    raise RuntimeError('ResourceExhaustedError: OOM when allocating tensor with shape[8192,8192,64] '\n"
        "                       'on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc')\n"))
    probe_benchmark(example_repo, "probe_a", "probe-a")
    commit_all(example_repo, "a GPU probe and a model that runs out of GPU memory once")
    site_tiers(workspace, {"name": "small", "mem": "2G"},
               {"name": "gpu16", "mem": "2G", "gpus": 1, "gpu_mem": "16G"},
               {"name": "gpu80", "mem": "2G", "gpus": 1, "gpu_mem": "80G"})
    workspace.env["SCORE_PLUGINS_GPU_DEV_DIR"] = str(tmp_path / "no-gpus")
    (tmp_path / "no-gpus").mkdir()
    none = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "gpu-probe", "--benchmarks",
                          "probe-a", expect=1)
    [pair] = none["pairs"]
    assert pair["state"] == "NODE_FAIL" and pair["reason"].startswith("no GPU for this pair"), pair
    assert "nothing ran on the CPU" in pair["reason"]
    [attempt] = workspace.json("status", none["run_id"])["attempts"]
    assert attempt["failure_kind"] == "INFRASTRUCTURE"
    assert not probes(workspace, none["run_id"])  # no plugin code ran

    workspace.env["SCORE_PLUGINS_GPU_DEV_DIR"] = str(fake_gpu_node(tmp_path / "dev", 1))
    hungry = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "gpu-hungry", "--benchmarks",
                            "probe-a")
    assert hungry["states"] == {"COMPLETED": 1}, hungry["pairs"]
    tries = workspace.json("status", hungry["run_id"])["attempts"]
    assert [(a["tier"], a["failure_kind"], a["escalated_to"]) for a in tries] == [
        ("gpu16", "GPU_OOM", "gpu80"), ("gpu80", None, None)]
    assert [a["req_gpu_mem_bytes"] for a in tries] == [16 * 2**30, 80 * 2**30]
    assert tries[0]["job_id"] != tries[1]["job_id"] and all(re.fullmatch(r"local-\d+-\d+_\d+", a["job_id"])
                                                            for a in tries)


# --- fast: no service -----------------------------------------------------------------------------------------


def test_the_gpu_view_takes_the_schedulers_gpus_and_fails_closed(tmp_path):
    dev = fake_gpu_node(tmp_path / "dev", 4)
    view = gpu_view(2, str(dev), {"SLURM_JOB_GPUS": "1,3", "CUDA_VISIBLE_DEVICES": "1,3"})
    assert [d for _, d in view.devices][:2] == ["/dev/nvidia1", "/dev/nvidia3"]
    assert view.env["CUDA_VISIBLE_DEVICES"] == "0,1" and [g["id"] for g in view.gpus] == [1, 3]
    uuids = gpu_view(1, str(dev), {"SLURM_JOB_GPUS": "2", "CUDA_VISIBLE_DEVICES": "GPU-5a1f"})
    assert uuids.env["CUDA_VISIBLE_DEVICES"] == "GPU-5a1f"  # a UUID names its GPU whatever the numbering
    assert gpu_view(0, str(dev), {"SLURM_JOB_GPUS": "1"}).devices == []  # asked for none: sees none
    unconfined = gpu_view(1, str(dev), {"SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "3"}, renumber=False)
    assert unconfined.env["CUDA_VISIBLE_DEVICES"] == "3"  # sandbox off: the node's /dev, the scheduler's numbers
    for environ, words in (({}, "given none"), ({"CUDA_VISIBLE_DEVICES": "7,1"}, "not an NVIDIA device node"),
                           ({"SLURM_JOB_GPUS": "1"}, "given 1"), ({"SLURM_JOB_GPUS": "1,x"}, "not a number")):
        with pytest.raises(NoGpu, match=words):
            gpu_view(2, str(dev), environ)
    (dev / "nvidiactl").unlink()
    with pytest.raises(NoGpu, match="nvidiactl"):
        gpu_view(1, str(dev), {"SLURM_JOB_GPUS": "0"})
    (dev / "nvidia9").touch()  # a plain file named like a GPU is no GPU
    assert discover(str(dev)) == [0, 1, 2, 3] and discover(str(dev), "5,2") == [2, 5]


def test_local_tasks_get_disjoint_gpus_and_wait_for_a_free_one(tmp_path):
    dev = fake_gpu_node(tmp_path / "dev", 1)
    pool = GpuPool(discover(str(dev)), str(dev), folder=tmp_path / "locks")
    first = pool.acquire(1)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append((pool.acquire(1), time.monotonic())))
    waiter.start()
    time.sleep(0.6)
    assert not got  # the only GPU is taken: the second task waits rather than share
    released = time.monotonic()
    first.release()
    waiter.join(5)
    assert got and got[0][0].ids == [0] and got[0][1] >= released
    assert got[0][0].environment() == {"SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_ON_NODE": "1"}
    other = GpuPool([0], str(dev), folder=tmp_path / "locks")  # another coordinator on this machine
    assert other.try_acquire(1) is None
    got[0][0].release()
    assert other.try_acquire(1).ids == [0]
    with pytest.raises(ValueError, match="this machine has 1"):
        pool.acquire(2)
    assert pool.acquire(1, stop=lambda: True) is None  # a cancelled task stops waiting


def test_cuda_out_of_memory_is_its_own_kind_and_goes_to_more_memory_per_gpu():
    for reason in ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total)",
                   "RuntimeError: CUDA error: out of memory",
                   "ResourceExhaustedError: OOM when allocating tensor with shape[64] on /device:GPU:0",
                   "XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes.",
                   "RuntimeError: CUDNN_STATUS_ALLOC_FAILED"):
        assert failure_kind("OUT_OF_MEMORY", "score", reason) == "GPU_OOM", reason
        assert failure_kind("FAILED", "score", reason) == "GPU_OOM", reason
    assert failure_kind("OUT_OF_MEMORY", "score", "MemoryError: ") == "OOM"
    tiers = parse_tiers([{"name": "cpu", "mem": "8G"}, {"name": "g16", "mem": "8G", "gpus": 1, "gpu_mem": "16G"},
                         {"name": "big", "mem": "64G", "gpus": 1, "gpu_mem": "16G"},
                         {"name": "g80", "mem": "64G", "gpus": 1, "gpu_mem": "80G"}], mem="4G", time_minutes=60, gpus=0)
    assert next_tier(tiers, "g16", "GPU_OOM").name == "g80" and next_tier(tiers, "g16", "OOM").name == "big"
    assert next_tier(tiers, "g80", "GPU_OOM") is None and next_tier(tiers, "cpu", "GPU_OOM") is None


def test_a_models_pairs_that_never_ran_start_where_its_out_of_memory_pair_moved():
    """Escalation learns within the run: the neighbours a killed task never reached move with their model."""
    settings = load_settings(environ={"SCORE_PLUGINS_TIERS": '[{"name": "small", "mem": "300M"}, '
                                      '{"name": "large", "mem": "1500M"}]'})
    tiers = settings.tier_list

    def row(key: str, model: str, kind: str | None, never: bool = False) -> dict:
        return {"pair_key": key, "model": model, "tier": "small", "failure_kind": kind, "stage": None,
                "reason": "OUT_OF_MEMORY", "attempt": 1, **({"never_started": True} if never else {})}

    rows = [row("m1", "big", "OOM"), row("m2", "big", "OOM", never=True), row("m3", "big", "OOM"),
            row("m4", "big", "OOM", never=True), row("o1", "other", "OOM", never=True), row("o2", "other", None)]
    target, moved, outgrown = _places(settings, tiers, rows)
    assert {k: t.name for k, t in target.items()} == {"m1": "large", "m2": "large", "m3": "large", "m4": "large",
                                                     "o1": "small"}  # another model's neighbour: its own tier
    assert moved == {"m1", "m3"} and not outgrown  # only the pairs that ran made an attempt


def test_attempt_job_ids_name_the_job_and_task_that_ran_it():
    assert task_job_id("4567@0+2,4570@2+1", 2) == "4570_0"  # the second tier's array: its own task 0
    assert task_job_id("4567@0+2,4570@2+1", 1) == "4567_1"
    assert task_job_id("local-12-3", 5) == "local-12-3_5"


def test_the_seccomp_filter_refuses_nothing_cuda_needs():
    refused = set(seccomp.DENIED_CALLS) | set(seccomp.ENOSYS_CALLS)
    assert not refused & set(seccomp.CUDA_CALLS), refused & set(seccomp.CUDA_CALLS)


def test_gpu_check_says_so_without_a_gpu_and_plans_its_torch_pair_onto_a_gpu_tier(tmp_path):
    """scripts/gpu-check is for a real GPU node (it was not run on one here: this machine has none). What can be
    checked without a GPU: it passes shellcheck, refuses clearly (exit 3) where there is no GPU, and on a stand-in
    node its plugin repository plans one torch pair onto its GPU tier (torch locked from PyPI, nothing run)."""
    import json
    import subprocess

    from tests.conftest import ROOT

    script = str(ROOT / "scripts/gpu-check")
    assert subprocess.run(["shellcheck", "--severity=style", script], capture_output=True).returncode == 0
    (tmp_path / "empty").mkdir()
    none = subprocess.run([script, "--dev-dir", str(tmp_path / "empty")], capture_output=True, text=True, timeout=60)
    assert none.returncode == 3 and "no NVIDIA GPU on this machine" in none.stderr, none.stderr
    assert "sbatch --gres=gpu:1" in none.stderr and not none.stdout
    bad = subprocess.run([script, "--torch", "torch; rm -rf /"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a plain requirement" in bad.stderr
    dev = fake_gpu_node(tmp_path / "dev", 1)
    plan = subprocess.run([script, "--dev-dir", str(dev), "--plan-only", "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")})
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert data["tiers"] == {"gpu": 1} and data["environments"] == 1
    [pair] = data["to_run"]
    assert (pair["model"], pair["benchmark"], pair["tier"]) == ("torch-probe", "on-cuda", "gpu")
