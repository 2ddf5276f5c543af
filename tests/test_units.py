"""Pure parts, no service: parsers of Slurm's output, sizes and times, stored job ids, the state names,
registry facts read from source, the manifest schema, and one golden file per job-script template.

Golden files are the rendered scripts as recorded in `tests/golden/`; a template change shows up as a diff.
After a deliberate change, record the new output with `pytest tests/test_units.py --update-golden` and review
the diff in git.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from db.states import OPEN, RETRYABLE, TERMINAL, State
from jobscripts import (EnvLine, PluginTestJob, PluginTestTask, ScoreJob, SlurmOptions, SubmitArray, TaskLine,
                        render_env_builder, render_plugin_test_job, render_score_job, render_submit)
from pipeline.executors.slurm import ArrayPart, array_chunks, parse_parts, parse_sacct, parse_squeue, slurm_state
from pipeline.executors.slurm.limits import mem_mb, time_minutes
from pipeline.executors.slurm.ids import stored_id
from pipeline.catalog.sourcefacts import read_facts
from pipeline.units import size_bytes
from pipeline.job.manifest import Manifest, ManifestError

GOLDEN = Path(__file__).with_name("golden")


# --- Slurm ---------------------------------------------------------------------------------------------------

def test_sacct_lines_become_our_states():
    parts = [ArrayPart("100", 0, 2), ArrayPart("101", 2, 3)]
    text = "\n".join([
        "100_0|COMPLETED|0:0|n1|00:00:05|None||4G",
        "100_0.batch|COMPLETED|0:0|n1|00:00:05||2000K|",
        "100_1|TIMEOUT|0:0|n1|00:10:00|None||4G",
        "101_0|CANCELLED by 0|0:0|n2|00:00:01|None||4G",
        "101_[1-2%1]|PENDING|0:0|None assigned|00:00:00|JobArrayTaskLimit||4G",
        "999_0|FAILED|1:0|n1|00:00:01|None||4G",  # another job: ignored
        "garbage",
    ])
    states = parse_sacct(text, parts)
    assert {i: s.state for i, s in states.items()} == {0: "COMPLETED", 1: "TIMEOUT", 2: "CANCELLED", 3: "PENDING",
                                                     4: "PENDING"}
    assert states[0].node == "n1" and states[3].node == ""
    assert states[2].reason.startswith("CANCELLED by 0")
    failed = parse_sacct("100_1|FAILED|3:0|n1|00:00:01|NonZeroExitCode||4G\n", parts)[1]
    assert failed.state == "FAILED" and "exit code 3:0" in failed.reason
    node_fail = parse_sacct("100_0|NODE_FAIL|0:0|n1|00:00:01|NodeDown||4G\n", parts)[0]
    assert node_fail.state == "NODE_FAIL" and node_fail.reason == "NODE_FAIL (NodeDown)"
    preempted = parse_sacct("100_0|PREEMPTED|0:15|n1|00:00:01|None||4G\n", parts)[0]
    assert preempted.state == "PREEMPTED" and preempted.state in RETRYABLE and preempted.exit_code == 15


def test_memory_kill_without_cgroups_is_out_of_memory_only_near_the_limit():
    parts = [ArrayPart("7", 0, 1)]
    near = parse_sacct("7_0|FAILED|0:9|n|00:00:08|None||800M\n7_0.batch|CANCELLED|0:9|n|00:00:08||790000K|\n",
                       parts)[0]
    assert near.state == "OUT_OF_MEMORY" and "MB used of 800 MB" in near.reason
    far = parse_sacct("7_0|FAILED|0:9|n|00:00:08|None||800M\n7_0.batch|CANCELLED|0:9|n|00:00:08||1000K|\n",
                      parts)[0]
    assert far.state == "FAILED"  # killed by signal 9 far below its limit: not a memory kill
    # the kill reached the worker before the job script, which exits 137; sacct prints that as 9:0 (CI, 2026-12)
    worker = parse_sacct("7_0|FAILED|9:0|n|00:00:16|None||800M\n7_0.batch|FAILED|9:0|n|00:00:16||1433644K|\n",
                         parts)[0]
    assert worker.state == "OUT_OF_MEMORY" and worker.exit_code == 9
    raised = parse_sacct("7_0|FAILED|1:0|n|00:00:16|None||800M\n7_0.batch|FAILED|1:0|n|00:00:16||790000K|\n",
                         parts)[0]
    assert raised.state == "FAILED" and raised.exit_code is None  # exit 1 near its limit: its own failure


def test_squeue_lists_what_is_alive_the_rest_has_ended():
    parts = [ArrayPart("5", 0, 4)]
    states = parse_squeue("5_0|RUNNING|n1|2026-12-06T19:00:00\n5_2|PENDING||N/A\n5_3|CANCELLED|n1|2026-12-06T18:14:01\n",
                          parts)
    assert {i: s.state for i, s in states.items()} == {0: "RUNNING", 1: "COMPLETED", 2: "PENDING", 3: "CANCELLED"}
    assert "no accounting" in states[1].reason and states[3].reason == "CANCELLED"  # ended lately: as it ended
    assert states[3].ended_at == datetime(2026, 12, 6, 18, 14, 1).timestamp() and states[0].ended_at is None
    assert {s.state for s in parse_squeue("", parts).values()} == {"COMPLETED"}


def test_an_end_accounting_has_not_recorded_waits_for_it_a_while():
    """Right after a task ends, slurmdbd may not list its job yet (squeue stands in), or list it killed by signal
    9 before the batch step's MaxRSS is in: memory or not cannot be told, so the task is held as running for
    ACCOUNTING_GRACE seconds (the 2026-12 CI run blamed a memory kill on the plugin and lost a task this way)."""
    from pipeline.executors.slurm.states import ACCOUNTING_GRACE, AccountingGrace, unrecorded_ends

    parts = [ArrayPart("7", 0, 2)]
    early = parse_sacct("7_0|FAILED|0:9|n|00:00:02|None||300M\n7_1|FAILED|1:0|n|00:00:02|None||300M\n", parts)
    late = parse_sacct("7_0|FAILED|0:9|n|00:00:02|None||300M\n7_0.batch|CANCELLED by 0|0:9|n|00:00:02||600000K|"
                       "\n7_1|FAILED|1:0|n|00:00:02|None||300M\n", parts)
    assert unrecorded_ends(early, from_accounting=True) == {0}  # exit 1 is the plugin's, recorded or not
    assert unrecorded_ends(late, from_accounting=True) == set() and late[0].state == "OUT_OF_MEMORY"
    now = [100.0]
    grace = AccountingGrace(clock=lambda: now[0])
    held = grace.hold("7", early, {0})
    assert held[0].state == "RUNNING" and "not in yet" in held[0].reason and held[1].state == "FAILED"
    now[0] += ACCOUNTING_GRACE - 1
    assert grace.hold("7", early, {0})[0].state == "RUNNING"
    now[0] += 1  # the record never came: what is known stands, nothing stalls
    assert grace.hold("7", early, {0})[0].state == "FAILED"
    worker = parse_sacct("7_0|FAILED|9:0|n|00:00:02|None||300M|2026-12-06T18:14:01\n", parts)  # exit 137
    assert unrecorded_ends(worker, from_accounting=True) == {0}
    ended = worker[0].ended_at
    assert ended == datetime(2026, 12, 6, 18, 14, 1).timestamp()  # sacct's End, local time
    # measured from its end, so a `reconcile` run again and again (a new process each time) settles it too
    assert AccountingGrace(clock=lambda: ended + 5).hold("7", worker, {0})[0].state == "RUNNING"
    assert AccountingGrace(clock=lambda: ended + ACCOUNTING_GRACE).hold("7", worker, {0})[0].state == "FAILED"
    listed = parse_squeue("7_1|RUNNING|n\n", parts)  # accounting on, the job not in it yet
    assert unrecorded_ends(listed, from_accounting=False) == {0}
    assert AccountingGrace(clock=lambda: 0.0).hold("8", listed, {0})[0].state == "RUNNING"


def test_slurm_words_map_to_ours():
    assert slurm_state("CANCELLED by 1234") == State.CANCELLED
    assert slurm_state("BOOT_FAIL") == State.NODE_FAIL and slurm_state("DEADLINE") == State.TIMEOUT
    assert slurm_state("REQUEUED") == State.PENDING and slurm_state("COMPLETING") == State.RUNNING
    assert slurm_state("SOMETHING_NEW") == State.RUNNING  # unknown: still running, never "over"
    assert slurm_state("") == State.PENDING


def test_stored_job_ids_round_trip():
    assert parse_parts("12@0+1000,13@1000+7") == [ArrayPart("12", 0, 1000), ArrayPart("13", 1000, 7)]
    assert str(ArrayPart("12", 3, 1)) == "12@3+1"
    assert stored_id("77", 4) == "77@0+4" and stored_id("77@0+4", 9) == "77@0+4"
    assert array_chunks(7, 3) == [(0, 3), (3, 3), (6, 1)] and array_chunks(0, 3) == []


@pytest.mark.parametrize(("text", "mb"), [("4G", 4096), ("800M", 800), ("21694", 21694), ("UNLIMITED", None),
                                          ("2Gn", 2048), ("1T", 1024 * 1024)])
def test_memory_sizes(text, mb):
    assert mem_mb(text) == mb


def test_sizes_and_times():
    assert size_bytes("957728K", default_unit="") == 957728 * 1024
    assert size_bytes("123", default_unit="") == 123 and size_bytes("", default_unit="") is None
    assert time_minutes("UNLIMITED") is None and time_minutes("30") == 30
    assert time_minutes("1:30:00") == 90 and time_minutes("2-00:00:00") == 2880 and time_minutes("10:30") == 10


# --- states --------------------------------------------------------------------------------------------------

def test_state_names_are_plain_text_and_partition_cleanly():
    assert json.dumps({"s": State.COMPLETED}) == '{"s": "COMPLETED"}'
    assert State.COMPLETED == "COMPLETED" and State.LOST.done and not State.RUNNING.done
    assert not set(OPEN) & TERMINAL and State.RENDERED not in TERMINAL
    # RENDERED (a hand-submitted bundle's) and HELD (waits for an administrator's approval) are neither open nor over
    assert set(State) == set(OPEN) | TERMINAL | {State.RENDERED, State.HELD} and State.HELD not in TERMINAL


# --- registry facts -------------------------------------------------------------------------------------------

def test_registry_facts_read_from_source():
    facts = read_facts(b"from brainscore_vision import benchmark_registry, load_dataset\n"
                       b"def build(split):\n"
                       b"    return load_dataset(f'MajajHong2015.{split}')\n"
                       b"benchmark_registry['MajajHong2015.IT-pls'] = lambda: build('public')\n"
                       b"benchmark_registry[f'dyn-{1}'] = lambda: build('private')\n")
    assert [(r.registry, r.key) for r in facts.registrations] == [("benchmark_registry", "MajajHong2015.IT-pls"),
                                                                 ("benchmark_registry", None)]
    [load] = facts.loads
    assert load.loader == "load_dataset" and sorted(load.patterns) == [r"MajajHong2015\.private", r"MajajHong2015\.public"]
    assert read_facts(b"def broken(:\n").syntax_error[0] == 1


# --- the manifest ----------------------------------------------------------------------------------------------

def manifest_data(**changes) -> dict:
    data = {"run_id": "r", "commit": "c" * 40, "domain_root": "d", "executor": "local", "code_dir": "/c",
            "spool_dir": "/s", "log_dir": "/l", "worker": "/w.py", "env_root": "/e", "env_mode": "cached",
            "env_backend": "uv", "state_dir": "/st", "created_at": "2026-01-01T00:00:00+00:00", "tasks": [],
            "schema": 1}
    data.update(changes)
    return data


def test_manifest_schema_is_checked_on_both_sides(tmp_path):
    manifest = Manifest.from_dict(manifest_data(pair_timeout=60))
    assert manifest.pair_timeout == 60 and manifest.sandbox == "auto"
    path = tmp_path / "manifest.json"
    path.write_text(manifest.to_json())
    assert Manifest.load(path) == manifest and Manifest.load(path).path == str(path.resolve())
    assert "path" not in json.loads(path.read_text())
    for bad, words in [(manifest_data(schema=2), "schema 2"), (manifest_data(scratch_dir="/x"), "unknown: scratch_dir"),
                       ({k: v for k, v in manifest_data().items() if k != "worker"}, "missing: worker"),
                       (manifest_data(pair_timeout="60"), "pair_timeout"), (manifest_data(pair_timeout=True), "bool")]:
        with pytest.raises(ManifestError, match=words):
            Manifest.from_dict(bad)


# --- golden job scripts -------------------------------------------------------------------------------------------

def _score_job(**changes) -> ScoreJob:
    base = dict(run_id="r1", run_dir="/runs/r1", manifest="/runs/r1/manifest.json", worker="/runs/r1/worker.py",
                python="/usr/bin/python3", build_env="/runs/r1/build_env.sh", log_dir="/runs/r1/logs",
                env_root="/envs", env_mode="cached",
                tasks=(TaskLine(0, EnvLine("abc123", "/runs/r1/locks/abc123.txt"), EnvLine("bench1", "/locks/b.txt")),
                       TaskLine(1, EnvLine("def456", "/locks/d.txt"), EnvLine("def456", "/locks/d.txt", "/c.sh"))),
                n_pairs=3, slurm=SlurmOptions(job_name="score-r1", array="0-1%1", partition="debug", account="lab",
                                              time_minutes=90, mem="8G", cpus_per_task=2))
    base.update(changes)
    return ScoreJob(**base)


TEMPLATES = {
    "score_job_cached.sh": lambda: render_score_job(_score_job()),
    "score_job_fresh_modules.sh": lambda: render_score_job(_score_job(env_mode="fresh", modules=("python/3.11",))),
    "build_env_uv.sh": lambda: render_env_builder(backend="uv", uv="/opt/uv", python="/usr/bin/python3",
                                                  package_cache="/cache"),
    "build_env_rattler.sh": lambda: render_env_builder(backend="rattler", rattler_python="/usr/bin/python3",
                                                       rattler_tool="/runs/r1/rattler_tool.py"),
    "build_env_micromamba.sh": lambda: render_env_builder(backend="micromamba", micromamba="/opt/micromamba"),
    "build_env_conda.sh": lambda: render_env_builder(backend="conda", conda="/opt/conda/bin/conda"),
    "submit.sh": lambda: render_submit("r1", "/runs/r1 $(x)", (SubmitArray("job.sh", 0, 2),
                                                                SubmitArray("job-large.sh", 2, 1))),
    "plugin_test_job.sh": lambda: render_plugin_test_job(PluginTestJob(
        code_dir="/code", report_dir="/reports", build_env="/b.sh", env_root="/envs",
        tasks=(PluginTestTask(0, "models/logreg", "abc", "/locks/abc.txt", ("/code/models/logreg/test.py",)),),
        slurm=SlurmOptions(job_name="plugin-tests", array="0-0"))),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_job_script_templates_match_their_golden_files(name, request):
    text = TEMPLATES[name]()
    golden = GOLDEN / name
    if request.config.getoption("--update-golden"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}: record it with --update-golden"
    assert text == golden.read_text(), f"{name} differs from {golden} (re-record with --update-golden if meant)"


# --- executors ---------------------------------------------------------------------------------------------------

def test_every_executor_is_built_by_the_one_registry_and_attaches(tmp_path):
    """reconcile and cancel reach any run's jobs through `get_executor` + `attach`; pyslurm, which this machine
    cannot load (no pyslurm for Slurm 22.05), says so in one line instead of failing later."""
    from types import SimpleNamespace

    from pipeline.config import load_settings
    from pipeline.errors import BadInput, InfrastructureError
    from pipeline.executors import EXECUTORS, Executor, get_executor

    settings = load_settings({"state_dir": str(tmp_path)}, environ={})
    bundle = SimpleNamespace(n_tasks=3, log_dir=tmp_path, job_script=tmp_path / "job.sh")
    for name in EXECUTORS:
        executor = get_executor(name, settings, check_limits=False)
        assert isinstance(executor, Executor) and executor.name == name
        executor.attach(bundle, "42")
        executor.close()
    assert get_executor("slurm", settings, check_limits=False).can_resubmit
    assert get_executor("local", settings, check_limits=False).can_resubmit  # an escalation's new tasks, too
    local = get_executor("local", settings, check_limits=False)
    local.attach(bundle, "local-1-1")  # a local run whose coordinator is gone: no pid files, no output
    assert {s.state for s in local.poll("local-1-1").values()} == {"LOST"}
    pyslurm = get_executor("pyslurm", settings, check_limits=False)
    pyslurm.attach(bundle, "42")
    with pytest.raises(InfrastructureError, match="pyslurm"):
        pyslurm.poll("42")
    with pytest.raises(BadInput, match="unknown executor"):
        get_executor("kubernetes", settings)


def test_a_local_task_stopped_by_another_process_cancel_is_cancelled_for_its_own_coordinator(tmp_path):
    """`score-plugins cancel` stops a local run's tasks from another process; the coordinator still watching them
    must read them as CANCELLED (the marker left before the signal), not as FAILED by a signal."""
    import time
    from types import SimpleNamespace

    from pipeline.executors.local import LocalExecutor

    (tmp_path / "logs").mkdir()
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    bundle = SimpleNamespace(n_tasks=2, run_dir=tmp_path, log_dir=tmp_path / "logs", job_script=script,
                             script_for=lambda index: (script, index), manifest=SimpleNamespace(tasks=[{}, {}]))
    watching, other = LocalExecutor(workers=2), LocalExecutor()
    try:
        job_id = watching.submit(bundle)
        deadline = time.monotonic() + 30
        while not all((tmp_path / "logs" / f"task-{i}.pid").exists() for i in range(2)):
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.05)
        other.attach(bundle, job_id)
        other.cancel(job_id)
        states = watching.poll(job_id)
        while not all(s.done for s in states.values()):
            assert time.monotonic() < deadline + 30, states
            time.sleep(0.05)
            states = watching.poll(job_id)
        assert {(s.state, s.reason) for s in states.values()} == {("CANCELLED", "cancelled")}, states
    finally:
        watching.cancel(job_id)
        watching.close()
        other.close()


# --- the sandbox's seccomp filter (libseccomp) -------------------------------------------------------------------

SECCOMP_CHILD = r"""
import ctypes, errno, json, os, sys
from pipeline.job import seccomp as sb

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
lib = sb._libseccomp()
fd = sb.seccomp_filter_fd()
program = os.read(fd, 1 << 20)
# a world of its own first: a call the filter failed to refuse must not touch this machine's hostname or mounts
libc.unshare(0x00020000 | 0x04000000 | 0x40000000)  # CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
prog = SockFprog(len(program) // 8, program)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, FILTER
seen = {}
def call(name, *args):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return "unknown"
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args] or [ctypes.c_long(0)] * 5)
    if rc == 0 and name == "clone":
        os._exit(0)  # a child the filter let through
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())) if rc == -1 else f"returned {rc}"
for name in sb.DENIED_CALLS:
    seen[name] = call(name, 0, 0, 0, 0, 0)
seen["clone3"] = call("clone3", 0, 0, 0, 0, 0)
for flag in sb.NEW_NAMESPACES:
    seen[f"clone {flag:#x}"] = call("clone", flag | 17, 0, 0, 0, 0)  # | SIGCHLD
seen["getpid"] = call("getpid")
print(json.dumps(seen))
"""


def test_seccomp_filter_refuses_each_call_with_eperm(tmp_path):
    """The filter libseccomp builds, loaded in a child process: every refused call returns EPERM (clone3 ENOSYS so
    glibc falls back to clone, whose namespace flags are refused), and ordinary calls still work."""
    import os
    import subprocess
    import sys

    from pipeline.job import seccomp as sb

    assert os.getuid() == 0, "as root, an unfiltered call would not fail with EPERM on its own"
    proc = subprocess.run([sys.executable, "-c", SECCOMP_CHILD], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    expected = {name: "EPERM" for name in sb.DENIED_CALLS if name in seen}
    expected.update({f"clone {flag:#x}": "EPERM" for flag in sb.NEW_NAMESPACES})
    expected.update({"clone3": "ENOSYS"})
    assert {k: v for k, v in seen.items() if k != "getpid" and v != "unknown"} == \
        {k: v for k, v in expected.items() if seen.get(k) != "unknown"}
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "ptrace", "bpf", "unshare"):
        assert seen.get(name) == "EPERM", (name, seen.get(name))
    assert seen["getpid"].startswith("returned ")
    # built for both architectures cluster nodes have: each one's AUDIT_ARCH constant is compared in the program
    fd = sb.seccomp_filter_fd()
    program = os.read(fd, 1 << 20)
    os.close(fd)
    for arch in (0xC000003E, 0xC00000B7):  # AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64
        assert arch.to_bytes(4, "little") in program, hex(arch)


def test_a_pairs_processes_take_only_the_options_the_worker_writes():
    """`job.flags.read_flags` (the options of `score_pair` and `boundary serve-model`, read without argparse):
    typed values and defaults; an unknown, repeated, missing or ill-typed option, or a value without its name, is
    refused with what is wrong, never guessed."""
    from pipeline.job.flags import FlagError, read_flags

    wanted = {"--manifest": str, "--model-fd": int, "--cap": int}
    assert read_flags(["--model-fd", "7", "--manifest", "m.json"], wanted, {"cap": 5}) == {
        "model_fd": 7, "manifest": "m.json", "cap": 5}
    assert read_flags(["--cap", "9", "--model-fd", "1", "--manifest", "x"], wanted)["cap"] == 9
    for argv, why in ((["--model-fd", "7"], "missing option(s): --manifest"),
                      (["--manifest", "a", "--model-fd", "1", "--evil", "x"], "unknown option --evil"),
                      (["--manifest", "a", "--manifest", "b", "--model-fd", "1"], "given twice"),
                      (["--manifest", "a", "--model-fd", "seven"], "bad value 'seven'"),
                      (["--manifest", "a", "--model-fd"], "options come in pairs")):
        with pytest.raises(FlagError, match=re.escape(why)):
            read_flags(argv, wanted, {"cap": 5})


def test_the_seccomp_filter_handed_to_bwrap_is_sealed_and_whole():
    """Each sandboxed command gets its own memfd holding the whole filter, sealed: nothing that holds the
    descriptor can rewrite the program bwrap loads."""
    import os

    from pipeline.job.seccomp import seccomp_filter_fd, seccomp_program

    first, second = seccomp_filter_fd(), seccomp_filter_fd()
    try:
        assert first != second
        assert os.read(first, 1 << 20) == seccomp_program() == os.read(second, 1 << 20)
        with pytest.raises(PermissionError):
            os.pwrite(first, b"\0" * 8, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(second, 0)
    finally:
        os.close(first)
        os.close(second)


def test_a_plugins_own_cache_folder_is_bounded_and_the_trusted_shared_caches_are_not(tmp_path):
    """`plugin_cache_limit`: the folder is the plugin's own (`<shared_cache>/<kind>/<plugin>`), measured in blocks
    allocated without following a link, and named when it holds more than the limit."""
    from pipeline.config import load_settings
    from pipeline.errors import BadInput
    from pipeline.job.pair_sandbox import CACHE_HOMES, own_cache_folder
    from pipeline.job import sandbox as sb
    from pipeline.job.worker import cache_over_limit

    with pytest.raises(BadInput, match="setting plugin_cache_limit: 'lots' is not a size"):
        load_settings({"plugin_cache_limit": "lots"}, environ={})
    assert load_settings(environ={}).plugin_cache_limit == "100G"

    def manifest(**changes) -> Manifest:
        fields = dict(run_id="r", commit="c" * 40, domain_root="dom", executor="local", code_dir="/c", spool_dir="/s",
                      log_dir="/l", worker="/w", env_root="/e", env_mode="cached", env_backend="uv", state_dir="/st",
                      created_at="2026-01-01T00:00:00+00:00", tasks=[], shared_cache=str(tmp_path / "cache"),
                      cache_limit_bytes=64 << 10)
        return Manifest(**{**fields, **changes})

    own = own_cache_folder(manifest(), "benchmarks", "filler")
    assert own == str(tmp_path / "cache" / "benchmarks" / "filler")
    assert own_cache_folder(manifest(trusted_caches=sorted(CACHE_HOMES)), "models", "m") is None
    assert own_cache_folder(manifest(shared_cache=None), "models", "m") is None
    other = own_cache_folder(manifest(), "models", "m")
    (Path(own) / "torch").mkdir(parents=True)
    Path(other).mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_bytes(b"x" * (1 << 20))
    (Path(own) / "torch" / "link").symlink_to(outside)  # a link is not followed: it holds no block here
    assert cache_over_limit(manifest(), (other, own)) is None
    (Path(own) / "torch" / "weights").write_bytes(b"x" * (65 << 10))
    assert cache_over_limit(manifest(), (other, own)) == own
    assert cache_over_limit(manifest(cache_limit_bytes=1 << 20), (other, own)) is None
    assert cache_over_limit(manifest(cache_limit_bytes=None), (other, own)) is None
    # a file below a path too long to open by name (> PATH_MAX) is not skipped: the limit fails closed
    (Path(own) / "torch" / "weights").unlink()
    fd = os.open(Path(other), os.O_RDONLY)
    for _ in range(20):
        os.mkdir("d" * 250, dir_fd=fd)
        deeper = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    hidden = os.open("weights", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(hidden, b"x" * (1 << 20))
    os.close(hidden)
    os.close(fd)
    assert sb.tree_size(other) < 1 << 20  # the lenient walk, as it was, misses it
    with pytest.raises(OSError):
        sb.tree_size(other, strict=True)
    assert cache_over_limit(manifest(), (own, other)) == f"{other} (it cannot be measured: File name too long)"


def test_a_folder_only_the_model_uses_is_never_on_the_benchmarks_side():
    """Hostile review round 2, F4: the benchmark's side got every non-`models/` folder the model uses, so a data
    plugin only the model uses had its dynamic setup.py run in the benchmark's sandbox, as the benchmark's user,
    able to write the benchmark's site (a sitecustomize.py there runs at the benchmark's start-up). A folder is on
    the benchmark's side only when the benchmark reaches it; one both reach is on both sides, each installing it
    into its own environment."""
    from pipeline.job.pair_sandbox import split_folders

    pair = {"model_plugin": "m", "benchmark_plugin": "b",
            "folders": ["models/m", "data/m_data", "metrics/shared", "benchmarks/b", "data/b_data", "metrics/shared"],
            "model_folders": ["models/m", "data/m_data", "metrics/shared"],
            "setup_in_job": ["data/m_data", "models/m", "metrics/shared"]}
    model, bench = split_folders(pair)
    assert model == ["models/m", "data/m_data", "metrics/shared"]
    assert bench == ["benchmarks/b", "data/b_data", "metrics/shared"]
    # what each side installs in the job (pipeline/job/worker.py): its own share of setup_in_job only
    assert [f for f in pair["setup_in_job"] if f in bench] == ["metrics/shared"]
    # a manifest written before the split: the model's part first, then the benchmark's
    old = {k: v for k, v in pair.items() if k != "model_folders"}
    assert split_folders(old) == (["models/m", "data/m_data", "metrics/shared"],
                                  ["benchmarks/b", "data/b_data", "metrics/shared"])
    # folders not in the plan's order (model's part first): nothing of the model's reaches the benchmark's side
    odd = {**pair, "folders": ["benchmarks/b", "data/m_data", "models/m", "data/b_data"]}
    assert split_folders(odd)[1] == ["benchmarks/b", "data/b_data"]
