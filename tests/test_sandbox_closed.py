"""The sandbox fails closed, and each pair's limits end only that pair (issue 22; /dev/shm: issue 29 item 1).

Run as root, as CI runs: bubblewrap is hidden from the pipeline with a private mount namespace (`unshare -m` and
/dev/null bound over the binary), never uninstalled; every other part is real.
"""

from __future__ import annotations

import os
import shutil
import shlex
import socket
import subprocess
import threading

import pytest
from pathlib import Path

from pipeline.job import sandbox as sb
from tests.conftest import CLI, commit_all, write


def benchmark(repo: Path, folder: str, body: str, requirements: str = "scikit-learn>=1.3\n") -> None:
    identifier = folder.replace("_", "-")
    write(repo, f"sklearn_scores/benchmarks/{folder}/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
          + "".join(f"        {line}\n" for line in body.splitlines())
          + f"\nbenchmark_registry['{identifier}'] = Bench\n")
    write(repo, f"sklearn_scores/benchmarks/{folder}/requirements.txt", requirements)


def without_bwrap(workspace, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a mount namespace of its own where /usr/bin/bwrap is /dev/null (not executable: not found)."""
    bwrap = sb.bwrap_path()
    script = f"mount --bind /dev/null {shlex.quote(bwrap)} && exec \"$@\""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(CLI), *args],
                          cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=600)


def test_run_refuses_when_bubblewrap_is_missing(workspace, example_repo, tmp_path):
    marker = tmp_path / "plugin-code-ran"
    write(example_repo, "sklearn_scores/benchmarks/marker/__init__.py",
          f"try:\n    open({str(marker)!r}, 'w').write('ran')\nexcept OSError:\n    pass  # in the sandbox\n"
          "from sklearn_scores import benchmark_registry\n"
          "benchmark_registry['marker'] = lambda: (lambda model: 0.5)\n")
    write(example_repo, "sklearn_scores/benchmarks/marker/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "a benchmark that leaves a marker")
    workspace.make_database()  # where the run would record: "nothing recorded" is read there
    for setting in ("bwrap", "auto"):  # auto is an alias of bwrap: never a silent fallback
        workspace.env["SCORE_PLUGINS_SANDBOX"] = setting
        proc = without_bwrap(workspace, "run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
        assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "bubblewrap (bwrap) is not installed" in lines[0], proc.stderr
        assert "apt-get install bubblewrap" in lines[0] and "Traceback" not in proc.stderr
        assert not marker.exists()
        assert workspace.rows("SELECT state FROM jobs") == [] and workspace.rows("SELECT id FROM runs") == []
        assert not list(workspace.state.glob("runs/*"))
    # planning alone locks, and locking runs build scripts of requirements: it refuses the same way
    proc = without_bwrap(workspace, "plan", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert proc.returncode == 3 and "locking runs build scripts" in proc.stderr, proc.stderr
    assert "apt-get install bubblewrap" in proc.stderr and "Traceback" not in proc.stderr
    # the same machine with bubblewrap visible runs it, sandboxed
    workspace.env["SCORE_PLUGINS_SANDBOX"] = "bwrap"
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert result["states"] == {"COMPLETED": 1}, result
    assert workspace.json("status")["sandbox"] == "bwrap"


def test_network_on_refuses_without_slirp4netns(workspace, example_repo):
    """Network on means the outside, not the node (issue 35, finding 9): without slirp4netns nothing runs, and one
    line says what to install or which setting keeps the node's own network (the old mode, named then)."""
    slirp = sb.network_tools()["slirp4netns"]
    script = f"mount --bind /dev/null {shlex.quote(slirp)} && exec \"$@\""
    workspace.make_database()
    for command in ("run", "plan"):
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(CLI),
                               command, "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg"],
                              cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=600)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 3 and len(lines) == 1, (command, proc.returncode, proc.stderr)
        assert "slirp4netns (slirp4netns) is not installed" in lines[0] and "apt-get install slirp4netns" in lines[0]
        assert 'sandbox_network = "host"' in lines[0] and "Traceback" not in proc.stderr
    assert workspace.rows("SELECT id FROM runs") == [] and not list(workspace.state.glob("runs/*"))


def test_sandbox_off_is_explicit_and_named_everywhere(workspace, example_repo, tmp_path):
    marker = tmp_path / "plugin-code-ran"
    write(example_repo, "sklearn_scores/benchmarks/marker/__init__.py",
          f"try:\n    open({str(marker)!r}, 'w').write('ran')\nexcept OSError:\n    pass  # in the sandbox\n"
          "from sklearn_scores import benchmark_registry\n"
          "benchmark_registry['marker'] = lambda: (lambda model: 0.5)\n")
    write(example_repo, "sklearn_scores/benchmarks/marker/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "a benchmark that leaves a marker", author="Mallory <mallory@example.org>")
    workspace.env["SCORE_PLUGINS_SANDBOX"] = "off"
    prod = workspace.cli("status", "--profile", "prod")
    assert prod.returncode == 2 and "prod profile refuses sandbox" in prod.stderr, prod.stderr
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert result["states"] == {"COMPLETED": 1} and marker.exists()
    logs = "".join(p.read_text() for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "no sandbox (sandbox=off: plugin code ran unconfined)" in logs
    assert workspace.json("status")["sandbox"] == "off"
    assert "sandbox OFF" in workspace.cli("status").stdout.replace("\n", " ")
    assert workspace.rows("SELECT sandbox FROM runs") == [("off",)]
    emails = [p.read_text() for p in workspace.state.glob("outbox/**/*.eml")]
    assert emails and all("Sandbox: off" in e and "(sandbox off)" in e for e in emails)


LIMITS = {
    # folder: (body, text in the reason)
    "fork_bomb": ("import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                  "        time.sleep(0.01)", "limit of 64 processes"),
    "disk_filler": ("import os\nchunk = b'x' * (1 << 20)\nfor i in range(100000):\n"
                    "    open(os.path.join(os.environ['HOME'], f'f{i}'), 'wb').write(chunk)", "disk limit of"),
    "big_file": ("import os\nos.makedirs(os.environ['XDG_CACHE_HOME'], exist_ok=True)\n"
                 "f = open(os.path.join(os.environ['XDG_CACHE_HOME'], 'big'), 'wb')\nwhile True:\n"
                 "    f.write(b'x' * (1 << 20))\n    f.flush()", "reached the pair's disk limit"),
    "cache_filler": ("import os, time\nchunk = b'x' * (1 << 20)\nos.makedirs(os.environ['XDG_CACHE_HOME'], exist_ok=True)\n"
                     "for i in range(400):  # 400 MB, each file under the pair's disk limit, then waits to be seen\n"
                     "    open(os.path.join(os.environ['XDG_CACHE_HOME'], f'c{i}'), 'wb').write(chunk)\n"
                     "time.sleep(60)",
                     "grew past its limit of 62914560 bytes (plugin_cache_limit) while this pair ran"),
    "output_flood": ("import sys\nwhile True:\n    sys.stdout.write('y' * 1023 + '\\n')", "output limit of"),
    "site_symlink": ("import os\nsite = os.path.join(os.path.dirname(os.environ['HOME']), 'site')\nos.rmdir(site)\n"
                     "os.symlink('/', site)", "PermissionError"),
}


def test_each_limit_ends_only_its_own_pair(workspace, example_repo):
    for folder, (body, _) in LIMITS.items():
        benchmark(example_repo, folder, body)
    commit_all(example_repo, "plugins that exhaust the node", author="Mallory <mallory@example.org>")
    workspace.env.update({"SCORE_PLUGINS_PAIR_MAX_PROCESSES": "64", "SCORE_PLUGINS_PAIR_DISK_LIMIT": "40M",
                          "SCORE_PLUGINS_PLUGIN_CACHE_LIMIT": "60M", "SCORE_PLUGINS_PAIR_OUTPUT_LIMIT": "5M",
                          "SCORE_PLUGINS_PAIR_TIMEOUT": "120", "SCORE_PLUGINS_PAIRS_PER_TASK": "3"})
    proc = workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    import json

    pairs = {p["benchmark"]: p for p in json.loads(proc.stdout)["pairs"]}
    for folder, (_, why) in LIMITS.items():
        pair = pairs[folder.replace("_", "-")]
        assert pair["state"] == "FAILED" and why in pair["reason"], pair
    honest = [p for name, p in pairs.items() if name.replace("-", "_") not in LIMITS]
    assert len(honest) == 4 and all(p["state"] == "COMPLETED" for p in honest), honest
    # the node stays usable: no process of a sandbox user is left, the logs stay small, the work folders are gone
    assert sb.count_processes_in_range(sb.UID_BASE, sb.UID_COUNT) == 0
    logs = list(workspace.state.glob("runs/*/logs/*.log"))
    assert max(p.stat().st_size for p in logs) < 2_100_000
    assert "bytes cut by score-plugins" in "".join(p.read_text(errors="replace") for p in logs)
    # the cache limit holds over the plugin's pairs: its folder is full, so its next pair runs nothing
    cache = workspace.state / "shared-cache" / "benchmarks" / "cache_filler"
    assert sb.tree_size(str(cache)) > 60 << 20
    again = workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "logreg,knn-5", "--benchmarks",
                          "cache-filler,iris-accuracy", "--format", "json")
    pairs = {(p["model"], p["benchmark"]): p for p in json.loads(again.stdout)["pairs"]}
    refused = pairs[("knn-5", "cache-filler")]
    assert refused["state"] == "FAILED" and refused["reason"] == (
        f"the plugin cache folder {cache} already holds more than its limit of 62914560 bytes (plugin_cache_limit): "
        "nothing was run; an administrator empties it or raises the limit"), refused
    assert pairs[("knn-5", "iris-accuracy")]["state"] == "COMPLETED"  # another plugin's pair is not touched


POOLS = """import multiprocessing, os, warnings
from multiprocessing import shared_memory
with warnings.catch_warnings():
    warnings.simplefilter('error')  # joblib's 'will operate in serial mode' would fail the pair
    import joblib
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
with multiprocessing.Pool(2) as pool:  # SemLock in /dev/shm
    assert pool.map(abs, [-1, -2]) == [1, 2]
# a DataLoader-like worker pool: worker processes hand batches back through shared memory and a queue
def load(index, queue):
    block = shared_memory.SharedMemory(create=True, size=1 << 20)
    block.buf[:4] = bytes([index] * 4)
    queue.put(block.name)
    block.close()
ctx = multiprocessing.get_context('fork')
queue = ctx.Queue()
workers = [ctx.Process(target=load, args=(i, queue)) for i in range(2)]
[w.start() for w in workers]
names = [queue.get(timeout=30) for _ in workers]
[w.join() for w in workers]
seen = []
for name in names:
    block = shared_memory.SharedMemory(name=name)
    seen.append(block.buf[0])
    block.close()
    block.unlink()
assert sorted(seen) == [0, 1]
return 0.5"""

# Which places a pair reaches, as a score: the outside (the package index this machine reaches: 0.5), a service
# on the node's 127.0.0.1 (0.25), the same service at the node's own other address (0.125), after trying to
# remove the routes that close the node. Each attempt's outcome is printed to the pair's log.
NETWORK = """import socket, subprocess
for cmd in (['ip', 'route', 'del', 'unreachable', NODE_ADDRESS + '/32'], ['ip', 'route', 'flush', 'type', 'unreachable'],
            ['ip', 'route', 'add', NODE_ADDRESS + '/32', 'via', '10.0.2.2']):  # reopen the node: no capability
    try:
        print('NETWORK', ' '.join(cmd), subprocess.run(cmd, capture_output=True, text=True, timeout=10).stderr.strip(),
              flush=True)
    except OSError as exc:
        print('NETWORK', ' '.join(cmd), exc, flush=True)
reached = 0.0
for name, host, port, worth in (('outside', OUTSIDE, 443, 0.5), ('node loopback', '127.0.0.1', PORT, 0.25),
                                ('node address', NODE_ADDRESS, PORT, 0.125)):
    try:
        socket.create_connection((host, port), timeout=10).close()
        print('NETWORK', name, 'reached', flush=True)
        reached += worth
    except OSError as exc:
        print('NETWORK', name, 'refused', exc, flush=True)
return reached"""


def index_host() -> str:
    """The package index's host: the one outside address this machine reaches (it has no other internet)."""
    from urllib.parse import urlparse

    url = os.environ.get("UV_INDEX_URL") or os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("PIP_INDEX_URL")
    return urlparse(url).hostname if url else "pypi.org"


def node_address() -> str:
    """An address of this node other than loopback (from `ip`, not from the code under test)."""
    lines = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    found = [line.split()[3].split("/")[0] for line in lines.splitlines() if " lo " not in line]
    assert found, lines
    return found[0]


def test_worker_pools_and_the_network_setting(workspace, example_repo):
    """Issue 35, finding 9: network on means the outside, not the node. A service listening on every address
    of the node (as a local database or SMTP server does) is out of reach at 127.0.0.1 and at the node's
    other address, while the index is reached; `host` (the old mode, explicit) reaches all three, and says so in
    the pair's log, the run record and `status`; `off` reaches none."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: [listener.accept()[0].close() for _ in range(16)], daemon=True).start()
    benchmark(example_repo, "pools", POOLS)
    benchmark(example_repo, "network", NETWORK.replace("PORT", str(port)).replace("OUTSIDE", repr(index_host()))
              .replace("NODE_ADDRESS", repr(node_address())))
    commit_all(example_repo, "worker pools and a network probe")
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    scores = {p["benchmark"]: (p["state"], p["score"], p["reason"]) for p in result["pairs"]}
    assert scores == {"pools": ("COMPLETED", 0.5, None), "network": ("COMPLETED", 0.5, None)}, scores
    logs = "".join(p.read_text() for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "serial mode" not in logs and "uid 20000" in logs
    assert "network: the outside only (slirp4netns; not this node)" in logs
    assert workspace.json("status")["network"] == "on"
    for mode, score in (("host", 0.875), ("off", 0.0)):
        workspace.env["SCORE_PLUGINS_SANDBOX_NETWORK"] = mode
        result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                                "--benchmarks", "network", "--force")
        assert [(p["state"], p["score"]) for p in result["pairs"]] == [("COMPLETED", score)], (mode, result["pairs"])
        status = workspace.json("status")
        assert status["network"] == mode, status
        mails = [m for m in (p.read_text() for p in workspace.state.glob("outbox/**/*.eml"))
                 if f"X-Score-Plugins-Run: {status['run_id']}" in m]
        assert mails and all(("(node network)" in m and "Network: host." in m) == (mode == "host") for m in mails)
    table = workspace.cli("status", workspace.json("runs")[1]["run_id"]).stdout
    assert "network HOST: plugins reached this node's own network" in table, table
    listener.close()


@pytest.mark.parametrize("envs_built", [False, True], ids=["the-build-refuses", "the-worker-refuses"])
def test_a_node_without_bubblewrap_fails_its_pairs_and_runs_nothing(workspace, example_repo, tmp_path, envs_built):
    """The coordinator had bubblewrap; the node that runs the job does not: each pair fails with what is missing
    (the environment build refuses, or, where the environments are already built, the worker does) as an
    infrastructure failure (INFRA_FAIL, never the plugins'), and no plugin code runs unconfined."""
    marker = tmp_path / "plugin-code-ran"
    write(example_repo, "sklearn_scores/benchmarks/marker/__init__.py",
          f"try:\n    open({str(marker)!r}, 'w').write('ran')\nexcept OSError:\n    pass  # in the sandbox\n"
          "from sklearn_scores import benchmark_registry\n"
          "benchmark_registry['marker'] = lambda: (lambda model: 0.5)\n")
    write(example_repo, "sklearn_scores/benchmarks/marker/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "a benchmark that leaves a marker")
    workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(tmp_path / "envs")  # built here or not at all, whatever ran before
    if envs_built:  # scored once on a node with bubblewrap: the environments are there, only the worker is left
        workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg,knn-5")
        marker.unlink(missing_ok=True)
    bundle = tmp_path / "bundle"
    rendered = workspace.json("render", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg,knn-5",
                              "--out", str(bundle), *(["--force"] if envs_built else []))
    bwrap = sb.bwrap_path()
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "0", "HOME": str(tmp_path)}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount --bind /dev/null {shlex.quote(bwrap)} && exec bash {shlex.quote(str(bundle))}/job.sh"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    workspace.json("ingest", str(bundle))
    jobs = workspace.json("status", rendered["run_id"])["jobs"]
    # the node's failure, not the plugins' (b34-outage: a sandbox the node cannot set up is infrastructure)
    assert len(jobs) == 2 and all(j["state"] == "INFRA_FAIL" and "bubblewrap (bwrap) is not installed" in j["reason"]
                                  and j["reason"].startswith("infrastructure (sandbox unavailable)")
                                  for j in jobs), [(j["state"], j["stage"], j["reason"]) for j in jobs]
    assert not marker.exists()


UNPRIVILEGED_PROBE = r"""
import ctypes, multiprocessing, os, socket
libc = ctypes.CDLL(None, use_errno=True)
with multiprocessing.Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
assert libc.unshare(0x10000000) == -1 and ctypes.get_errno() == 1  # CLONE_NEWUSER: EPERM from the filter
assert not os.path.exists(SECRET)
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=5).close()
    print("network reached")
except OSError:
    print("network refused")
try:
    socket.create_connection((OUTSIDE, 443), timeout=10).close()
    print("outside reached")
except OSError:
    print("outside refused")
print("contained")
"""


def test_the_sandbox_as_an_unprivileged_user():
    """The same module, started by an ordinary user (here nobody, with the system's Python): a user namespace
    instead of a per-pair user; the filter, /dev/shm, the hidden node and the network setting hold the same."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sandbox-unprivileged-", dir="/tmp"))  # pytest's folders are root-only
    try:
        _as_nobody(folder)
    finally:
        shutil.rmtree(folder)


def _as_nobody(folder: Path) -> None:
    folder.chmod(0o777)
    shutil.copytree(Path(sb.__file__).parent, folder / "job", ignore=shutil.ignore_patterns("__pycache__"))
    module = folder / "job" / "sandbox.py"
    secret = folder / "secret"
    secret.write_text("Pa55")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    threading.Thread(target=lambda: [listener.accept()[0].close() for _ in range(4)], daemon=True).start()
    script = folder / "probe.py"
    script.write_text(UNPRIVILEGED_PROBE.replace("SECRET", repr(str(secret)))
                      .replace("PORT", str(listener.getsockname()[1])).replace("OUTSIDE", repr(index_host())))
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i", "PATH=/usr/bin:/bin",
                 "HOME=/tmp", "/usr/bin/python3", str(module)]
    probe = subprocess.run([*as_nobody, "probe"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and "user namespace" in probe.stdout and "seccomp" in probe.stdout, probe
    # network on (the default): the outside through slirp4netns in the user namespace, never the node's loopback
    for flag, outcomes in (([], ("network refused", "outside reached")),
                           (["--network", "host"], ("network reached", "outside reached")),
                           (["--no-network"], ("network refused", "outside refused"))):
        proc = subprocess.run([*as_nobody, "exec", *flag, "--rw", str(folder / "work"), "--ro", str(script), "--",
                               "/usr/bin/python3", str(script)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "contained" in proc.stdout, proc
        assert all(outcome in proc.stdout for outcome in outcomes), (flag, proc)
    listener.close()


# Memory RLIMIT_DATA never counts (issue 35, finding 8): each hog holds 500 MB outside the heap, then reports
MEMORY_HOGS = {
    "memfd_hog": "import os\nfd = os.memfd_create('hold')\nfor _ in range(500):\n    os.write(fd, b'x' * (1 << 20))\n"
                 "return 0.5",
    "shm_hog": "with open('/dev/shm/hold', 'wb') as f:\n    for _ in range(500):\n        f.write(b'x' * (1 << 20))\n"
               "        f.flush()\nreturn 0.5",
}


def _pair_cgroups() -> list[str]:
    from pipeline.job import memcg

    _, own = memcg.locate()
    return [name for name in os.listdir(own) if name.startswith(memcg.PREFIX)]


def test_memory_outside_the_data_limit_ends_its_pair_out_of_memory(workspace, example_repo):
    """A tier of 400 MB (two sklearn processes need about 300): a pair that holds 500 MB in a memfd, and one that
    holds 500 MB in /dev/shm (neither counted by RLIMIT_DATA, so both scored before), end OUT_OF_MEMORY at their
    memory cgroup's limit; the other pairs packed in the same tasks score; no pair's cgroup is left behind."""
    for folder, body in MEMORY_HOGS.items():
        benchmark(example_repo, folder, body)
    commit_all(example_repo, "plugins that hold memory outside the heap", author="Mallory <mallory@example.org>")
    before = _pair_cgroups()
    workspace.env.update({"SCORE_PLUGINS_MEM": "400M", "SCORE_PLUGINS_PAIRS_PER_TASK": "3",
                          "SCORE_PLUGINS_PAIR_SHM": "1G"})
    result = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", expect=1)
    pairs = {p["benchmark"]: p for p in result["pairs"]}
    for folder in MEMORY_HOGS:
        pair = pairs[folder.replace("_", "-")]
        assert pair["state"] == "OUT_OF_MEMORY" and "memory limit of 419430400 bytes" in pair["reason"], pair
    honest = [p for name, p in pairs.items() if name.replace("-", "_") not in MEMORY_HOGS]
    assert len(honest) == 4 and all(p["state"] == "COMPLETED" for p in honest), honest
    status = workspace.json("status", result["run_id"])
    assert status["memory_limit"].startswith("cgroup v"), status["memory_limit"]
    assert {a["failure_kind"] for a in status["attempts"] if a["benchmark"] in ("memfd-hog", "shm-hog")} == {"OOM"}
    logs = "".join(p.read_text(errors="replace") for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "memory: cgroup v" in logs and "bytes for the whole pair" in logs
    assert not set(_pair_cgroups()) - set(before)  # the run's own are removed (stale ones swept)


def without_cgroups(workspace, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a mount namespace of its own where /sys/fs/cgroup is an empty read-only tmpfs: no cgroup can be
    made (the node's hierarchies are hidden, never changed)."""
    script = "mount -t tmpfs -o ro,size=1k none /sys/fs/cgroup && exec \"$@\""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(CLI), *args],
                          cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=600)


def test_no_memory_cgroup_runs_nothing_unless_rlimit_is_chosen_and_then_says_so(workspace, example_repo):
    """Where no memory cgroup can be made, `run` says so in one line and claims and runs nothing (exit 3);
    `local_memory = "rlimit"` runs with RLIMIT_DATA only, says so once, and the run record (status) names it."""
    workspace.make_database()
    proc = without_cgroups(workspace, "run", "--repo", str(example_repo), "--all", "--models", "logreg",
                           "--benchmarks", "iris-accuracy")
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no memory cgroup can be made here" in lines[0] and "local_memory" in lines[0], lines
    assert workspace.rows("SELECT id FROM runs") == [] and workspace.rows("SELECT state FROM jobs") == []
    workspace.env["SCORE_PLUGINS_LOCAL_MEMORY"] = "rlimit"
    proc = without_cgroups(workspace, "run", "--repo", str(example_repo), "--all", "--models", "logreg",
                           "--benchmarks", "iris-accuracy", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("RLIMIT_DATA only") == 1, proc.stderr
    status = workspace.json("status")
    assert status["memory_limit"] == "rlimit" and status["counts"] == {"COMPLETED": 1}
    assert "memory: RLIMIT_DATA only" in workspace.cli("status").stdout.replace("\n", " ")
    logs = "".join(p.read_text() for p in workspace.state.glob("runs/*/logs/*.log"))
    assert "memory: RLIMIT_DATA only" in logs


def test_the_memory_cgroup_is_found_where_this_process_runs_on_v1_and_v2(tmp_path):
    """Fast, and partly a stand-in (named so): this machine has cgroup v1 memory only, so the v2 layout is a folder
    tree shaped like one (what /proc/self/mountinfo and /proc/self/cgroup would say is given as text). The pair
    cgroups go below the process's own cgroup; on v2, below the coordinator's when it moved itself into its leaf."""
    from pipeline.job import memcg

    unified = tmp_path / "unified"
    (unified / "jobs" / "ci" / memcg.LEAF).mkdir(parents=True)
    (unified / "jobs" / "ci" / "cgroup.controllers").write_text("cpu memory pids\n")
    v2 = f"30 22 0:27 / {unified} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert memcg.locate(v2, "0::/jobs/ci\n") == ("v2", str(unified / "jobs" / "ci"))
    assert memcg.locate(v2, f"0::/jobs/ci/{memcg.LEAF}\n") == ("v2", str(unified / "jobs" / "ci"))
    (tmp_path / "v1" / "process_api" / "x").mkdir(parents=True)
    v1 = (f"31 22 0:28 / {tmp_path / 'v1'} rw - cgroup cgroup rw,memory\n"
          f"32 22 0:29 / {tmp_path / 'cpu'} rw - cgroup cgroup rw,cpu\n")
    assert memcg.locate(v1 + v2, "4:memory:/process_api/x\n1:cpu:/\n0::/elsewhere\n") == (
        "v1", str(tmp_path / "v1" / "process_api" / "x"))  # v2 without a memory controller there: v1's
    with pytest.raises(memcg.CgroupUnavailable, match="no memory cgroup controller is mounted"):
        memcg.locate(v2, "0::/gone\n")
    with pytest.raises(memcg.CgroupUnavailable, match="no cgroup file system is mounted"):
        memcg.locate("", "0::/\n")
