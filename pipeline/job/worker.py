#!/usr/bin/env python3
"""The only code that runs inside a scoring job: score pairs, write results to the spool.

Standard library only, copied into every run bundle, so a job needs neither our
package nor any credential. `run-task` (under the base interpreter) loops over one
array task's pairs and runs each in two child processes, each under its own side's environment
(`score_pair`, the benchmark's side, in the benchmark's; `boundary`'s `serve-model`, the model's, in the model's:
nothing the model requires is installed where the benchmark runs), with a time limit, a clean
environment and a capped log. Each result, score or error with its stage, is written atomically as
`<spool>/<pair key>.json`; the coordinator ingests the spool into the database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file (`python job/worker.py run-task ...` in a run bundle):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run the job package's copy
    from importlib import import_module

    sys.exit(import_module(os.path.basename(os.path.dirname(os.path.abspath(__file__))) + ".worker").main())

from . import memcg  # noqa: E402
from . import sandbox as sb  # noqa: E402
from . import usage as pair_usage  # noqa: E402 - after the bootstrap above, as every import below
from .gpus import GpuMeter, GpuView, NoGpu, gpu_view
from .install import install_in_job
from .manifest import Manifest
from .outage import classify, key_line
from .pair_sandbox import (NO_SANDBOX, NOBODY, _process_limit, cache_folders, child_env, child_setup, launch,
                           own_cache_folder, pair_manifest, plugin_caches, sandbox_prepare, sandboxed, split_folders)
from .report_channel import REPORT_DRAIN_SECONDS, ReportReader, _child_outcome, wait_with_usage
from .spool import LOG_CAP_BYTES, StageError, announce, base_result, cap_log, now, tail, write_json_atomic


def run_pair(manifest: Manifest, pair: dict, env_python: str, log: Path, model_python: str | None = None,
             gpu: GpuView | None = None) -> dict:
    """Score one pair in two sandboxed child processes; whatever happens, return a result dict.

    The model runs in its own process (boundary.py serve-model), under its own environment (`model_python`'s),
    and sees only its own plugin folders and caches; the benchmark's process runs under the benchmark's
    environment (`env_python`'s), sees the benchmark's folders and caches, and talks to the model through a socket
    (boundary.RemoteModel). Started as root, each side runs as a user of its own (two node-wide slots), so
    neither can signal, trace or count as the other. Only the benchmark's process holds the report pipe this
    process owns: stages, then one result, never a file in a folder a plugin can write. Every message is
    size-capped and checked against a schema (`check_report`). `gpu`: the pair's GPUs (its model's process alone
    sees them; the benchmark's side computes metrics on the CPU), recorded with their peak memory.
    """
    result = base_result(manifest, pair)
    started = time.time()
    result["started_at"] = now()
    result["log_path"] = str(log)
    if manifest.trusted_caches:
        result["trusted_caches"] = list(manifest.trusted_caches)
    slots: list = []
    try:
        if manifest.sandbox != "off" and sb.running_as_root():
            for _side in ("model", "benchmark"):
                slots.append(sb.UidSlot(base=manifest.uid_base).__enter__())
    except (sb.SandboxUnavailable, OSError) as exc:
        for slot in slots:
            slot.__exit__()
        result.update({"status": "error", "state": "INFRA_FAIL", "stage": "import", "ended_at": now(),
                       "reason": f"{NO_SANDBOX}: {exc}",
                       "log_tail": "", "elapsed_seconds": 0.0})
        return result
    uids = (slots[0].uid, slots[1].uid) if slots else (NOBODY, NOBODY)
    meter = GpuMeter([g["id"] for g in gpu.gpus]) if gpu is not None and gpu.count else None
    if gpu is not None and gpu.count:
        result.update({"gpu_count": gpu.count, "gpu_model": ", ".join(sorted({g["model"] or "unknown" for g in
                                                                             gpu.gpus}))})
    try:
        failure = _run_pair_as(manifest, pair, env_python, log, result, uids, model_python or env_python, gpu,
                               meter)
    finally:
        for slot in slots:
            slot.__exit__()
        if meter is not None:
            meter.close()
            result["max_gpu_mem_bytes"] = meter.peak  # None: NVML could not measure it (never a made-up 0)
            result["gpus_used"] = len(meter.used_on) if meter.peak is not None else None
    result["ended_at"] = now()
    result["elapsed_seconds"] = round(time.time() - started, 3)
    if failure:
        result.update({"status": "error", **failure, "log_tail": tail(log)})
    else:
        result.update({"status": "ok", "state": "COMPLETED", "stage": None, "reason": None})
    return result


def _run_pair_as(manifest: Manifest, pair: dict, env_python: str, log: Path, result: dict,
                 uids: tuple[int, int], model_python: str, gpu: GpuView | None = None,
                 meter: GpuMeter | None = None) -> dict | None:
    """run_pair's body, the model's side as uids[0] under `model_python` and the benchmark's as uids[1] under
    `env_python` (when root); None when the pair scored, else its failure."""
    timeout = int(manifest.pair_timeout)
    model_uid, bench_uid = uids
    model_folders, bench_folders = split_folders(pair)
    failure: dict | None = None
    with tempfile.TemporaryDirectory(prefix="pair-") as tmp:
        os.chmod(tmp, 0o755)
        bench_dir, model_dir, handoff = Path(tmp) / "benchmark", Path(tmp) / "model", Path(tmp) / "handoff"
        for folder, uid in ((bench_dir, bench_uid), (model_dir, model_uid)):
            folder.mkdir()
            sandbox_prepare(manifest, folder, uid)
        handoff.mkdir(mode=0o755)  # the benchmark's side writes stimulus files here; the model's reads them
        if manifest.sandbox != "off":
            sb.give(str(handoff), bench_uid)
        installed: dict = {"installed": []}
        for side_dir, side_folders, uid, python in ((model_dir, model_folders, model_uid, model_python),
                                                    (bench_dir, bench_folders, bench_uid, env_python)):
            wanted = [f for f in pair.get("setup_in_job") or [] if f in side_folders]
            if wanted and not installed.get("failure"):
                done = install_in_job(manifest, pair, python, side_dir, log, wanted, side_folders, uid=uid)
                installed = {"installed": installed["installed"] + done.get("installed", []), **(
                    {"failure": done["failure"]} if done.get("failure") else {})}
        if pair.get("setup_in_job"):
            result["installed_in_job"] = installed.get("installed")
        read_fd, write_fd = os.pipe()
        bench_end, model_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        own = pair_manifest(manifest, pair)
        sides = []
        seccomp_fds: list[int] = []
        how = ""
        own_caches: tuple[str, ...] = ()
        try:
            model_caches = plugin_caches(manifest, "models", pair["model_plugin"])
            bench_caches = plugin_caches(manifest, "benchmarks", pair["benchmark_plugin"])
            own_caches = tuple(f for f in (own_cache_folder(manifest, "models", pair["model_plugin"]),
                                           own_cache_folder(manifest, "benchmarks", pair["benchmark_plugin"])) if f)
            if manifest.sandbox != "off" and (full := cache_over_limit(manifest, own_caches)):
                raise StageError("import", f"the plugin cache folder {full} already holds more than its limit of "
                                           f"{manifest.cache_limit_bytes} bytes (plugin_cache_limit): nothing was "
                                           "run; an administrator empties it or raises the limit")
            model_cmd = [*launch(model_python, manifest.worker, "boundary"), "serve-model", "--manifest", own.path, "--pair", pair["key"],
                         "--channel-fd", str(model_end.fileno()), "--cap", str(manifest.boundary_cap_bytes)]
            bench_cmd = [*launch(env_python, manifest.worker, "score_pair"), "--manifest", own.path, "--pair", pair["key"],
                         "--report-fd", str(write_fd), "--model-fd", str(bench_end.fileno()),
                         "--handoff", str(handoff)]
            model_argv, how, model_fds = sandboxed(own, pair, model_dir, model_cmd, extra_ro=(str(handoff),),
                                                   uid=model_uid, folders=model_folders,
                                                   writable=cache_folders(manifest, model_caches), gpu=gpu)
            seccomp_fds += model_fds
            sides.append((model_argv, model_dir, model_caches, (model_end.fileno(), *model_fds),
                          gpu.env if gpu is not None else None))
            bench_argv, how, bench_fds = sandboxed(own, pair, bench_dir, bench_cmd, uid=bench_uid,
                                                   folders=bench_folders,
                                                   writable=(*cache_folders(manifest, bench_caches), str(handoff)))
            seccomp_fds += bench_fds
            sides.append((bench_argv, bench_dir, bench_caches, (write_fd, bench_end.fileno(), *bench_fds), None))
        except StageError as exc:
            how = how or exc.reason
            failure = {"state": exc.state, "stage": exc.stage, "reason": exc.reason}
        reader = ReportReader(read_fd)
        processes = _process_limit(manifest)
        procs: list[subprocess.Popen] = []
        group, memory_note, no_group = pair_cgroup(manifest) if failure is None else (None, "", None)
        failure = failure or no_group
        result["memory_limit"] = memory_note or None
        with open(log, "ab") as logf:
            logf.write(f"[score-plugins] {now()} scoring {pair['model']} on {pair['benchmark']} ({how}; the model "
                       f"in its own process)\n".encode())
            if memory_note:
                logf.write(f"[score-plugins] memory: {memory_note}\n".encode())
            if manifest.trusted_caches:
                logf.write(f"[score-plugins] caches shared by every plugin (trusted_caches): "
                           f"{', '.join(manifest.trusted_caches)}\n".encode())
            if gpu is not None and gpu.count:
                logf.write(f"[score-plugins] the model's process gets {gpu.describe()}; CUDA_VISIBLE_DEVICES="
                           f"{gpu.env.get('CUDA_VISIBLE_DEVICES', '')}\n".encode())
            logf.flush()
            output = LogWriter(logf, manifest.output_limit_bytes)
            failure = failure or installed.get("failure")
            try:
                for argv, side_dir, caches, pass_fds, gpu_env in sides if failure is None else ():
                    procs.append(subprocess.Popen(
                        argv, cwd=side_dir, env=child_env(manifest, side_dir, caches, gpu_env), stdout=output.fd,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                        pass_fds=pass_fds, preexec_fn=group.joining(child_setup(manifest, processes)) if group
                        else child_setup(manifest, processes)))
                    SIDES.add(procs[-1].pid)
            except (OSError, subprocess.SubprocessError) as exc:  # a preexec failure (no cgroup joined) too
                failure = {"state": "FAILED", "stage": "env_build", "reason": f"cannot start {env_python}: {exc}"}
            finally:
                for fd in (write_fd, *seccomp_fds):
                    os.close(fd)
                bench_end.close()
                model_end.close()
                output.started()
            reader.start()
            ended_itself = False  # the benchmark's side ended on its own (not stopped at a limit)
            check = None
            if failure is None and len(procs) == 2:
                check = PairWatch(manifest, Path(tmp), uids, output, own_caches, meter).check
                code, usage, stopped = wait_with_usage(procs[1], timeout, check)
                ended_itself = stopped is None
                reader.join(REPORT_DRAIN_SECONDS)
                result["max_rss_bytes"] = int(usage.ru_maxrss) * 1024 if usage else None
                result["cpu_seconds"] = usage.ru_utime + usage.ru_stime if usage else None
                stage, reported, problem = reader.outcome()
                if reported and reported.get("max_rss_bytes"):  # the plugins' own, behind the PID namespaces
                    result["max_rss_bytes"] = max(result["max_rss_bytes"] or 0, reported["max_rss_bytes"])
                if stopped == "timeout":
                    failure = {"state": "TIMEOUT", "stage": stage,
                               "reason": f"pair exceeded its time limit of {timeout} s and was stopped"}
                elif stopped:
                    failure = {"state": "FAILED", "stage": stage, "reason": stopped}
                else:
                    failure = _child_outcome(code, stage, reported, problem, result)
                    if failure and code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
                        failure["reason"] = (f"pair wrote a file larger than its disk limit of "
                                             f"{manifest.disk_limit_bytes} bytes and was stopped (SIGXFSZ)")
                    elif failure and "[Errno 27]" in failure["reason"]:  # Python ignores SIGXFSZ: EFBIG instead
                        failure["reason"] += (f" (a file reached the pair's disk limit of {manifest.disk_limit_bytes}"
                                              " bytes)")
            model_usage = _end_model(procs, ended_itself, check)
            if failure is None and check is not None and manifest.sandbox != "off" and \
                    (full := cache_over_limit(manifest, own_caches)):
                failure = {"state": "FAILED", "stage": "score", "reason": cache_grew(manifest, full)}  # last bytes
            if model_usage is not None and result.get("max_rss_bytes") is not None:  # the pair's peak: either side's
                result["max_rss_bytes"] = max(result["max_rss_bytes"], int(model_usage.ru_maxrss) * 1024)
            cpu, peak = pair_usage.reap_adopted()  # each side's namespace init, handed to this process
            if result.get("cpu_seconds") is not None:  # every process of the pair: both sides, their children
                model_cpu = model_usage.ru_utime + model_usage.ru_stime if model_usage is not None else 0.0
                result["cpu_seconds"] = round(result["cpu_seconds"] + model_cpu + cpu, 3)
                result["max_rss_bytes"] = max(result["max_rss_bytes"] or 0, peak) or None
            if group is not None:  # every process of the pair has ended (inits reaped): what the OOM killer did
                failure = memcg_outcome(group, failure, stage=reader.outcome()[0])
                group.remove()
            output.finish()
            reader.close()
            if failure and len(procs) == 2 and "closed the channel" in str(failure.get("reason")):
                failure = _model_died(procs[0].returncode, failure)
        cap_log(log)
        Path(own.path).unlink(missing_ok=True)
    return failure


def pair_cgroup(manifest: Manifest) -> tuple["memcg.PairCgroup | None", str, dict | None]:
    """(the pair's memory cgroup, what bounds its memory in words, the failure when it cannot be bounded).

    With a local memory limit (the local executor's tier) and `local_memory = "cgroup"` (the default), every
    process of the pair runs in a memory cgroup of its own; where none can be made nothing runs (fail closed),
    except with the sandbox off (plugin code is unconfined anyway: it runs with RLIMIT_DATA only, and says so).
    `local_memory = "rlimit"` is the explicit choice of RLIMIT_DATA alone. Under Slurm (no local limit) the
    scheduler bounds the task and nothing is done here."""
    limit = manifest.mem_limit_bytes
    if not limit:
        return None, "", None
    rlimit_only = (f"RLIMIT_DATA only, {limit} bytes per process (local_memory = rlimit): shared memory, memfd "
                   "and page cache are not bounded")
    if manifest.local_memory == "rlimit":
        return None, rlimit_only, None
    try:
        group = memcg.PairCgroup.create(limit)
    except memcg.CgroupUnavailable as exc:
        if manifest.sandbox == "off":
            return None, f"RLIMIT_DATA only, {limit} bytes per process (no memory cgroup: {exc})", None
        return None, "", {"state": "FAILED", "stage": "import", "reason": (
            f"no memory cgroup can be made on this node, nothing was run: {exc} (local_memory = \"rlimit\" runs "
            "pairs with RLIMIT_DATA only)")}
    return group, f"cgroup {group.version}, {limit} bytes for the whole pair ({group.folder})", None


def memcg_outcome(group: "memcg.PairCgroup", failure: dict | None, stage: str) -> dict | None:
    """A pair whose processes the OOM killer ended at its cgroup's limit is OUT_OF_MEMORY, as Slurm records a task
    with an oom-kill event, even when the benchmark's side caught the loss and reported a score."""
    if not group.oom_kills():
        return failure
    return {"state": "OUT_OF_MEMORY", "stage": (failure or {}).get("stage") or stage,
            "reason": (f"the pair's processes held more than its memory limit of {group.limit} bytes (a memory "
                       "cgroup: anonymous memory, shared memory, memfd and page cache counted) and the kernel's "
                       "OOM killer ended them")}


def _end_model(procs: list[subprocess.Popen], grace: bool, check=None):  # noqa: ANN001, ANN202 - usage or None
    """Every process of the pair ends: the model's when the benchmark's side hangs up (given 2 s when that side
    ended on its own, scored or failed, so that the model's last output reaches the log), else it is stopped at
    once (a pair stopped at a limit); the pair's limits (`check`) still hold meanwhile. Returns the model's
    process's resource usage (its peak memory), if any."""
    usage = None
    for proc in procs:
        if proc.returncode is None:  # seen the moment it ends (a pidfd), killed with its group at the deadline
            _code, ended, _stopped = wait_with_usage(proc, 2 if proc is procs[0] and grace else 0.01, check)
            usage = ended if proc is procs[0] else usage
        try:  # nothing of the pair outlives it (bubblewrap's own children too)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        SIDES.discard(proc.pid)
    return usage


SIDES: set[int] = set()  # the process groups of the running pair's two sides (each leads a session of its own)


def stop_sides_on_signals() -> None:
    """A cancelled task (SIGTERM to its process group from the local executor or `reconcile`, Slurm's SIGTERM, a
    hang-up, Ctrl-C) ends its pair's sides before it ends: they lead sessions of their own, so no signal to the
    task's group reaches them, and without this they ran on, sandboxed plugin code outliving its cancel (until
    their time limit). The task then ends by the same signal, as it would have."""
    def handler(signum: int, _frame: object) -> None:
        for pid in list(SIDES):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # an ignored one (nohup, a background job) stays so
            signal.signal(signum, handler)


def _model_died(code: int | None, failure: dict) -> dict:
    """The benchmark's side lost the model: say how the model's process ended (a signal, e.g. the OOM killer)."""
    if code is not None and code > 128 and (code - 128) in set(signal.Signals):
        code = -(code - 128)  # bubblewrap reports a child killed by a signal as 128 + the signal
    if code is None or code >= 0:
        return {**failure, "reason": f"{failure['reason']} (the model's process exited with code {code})"}
    died = _child_outcome(code, failure["stage"], None, None, {}) or failure
    return {**died, "reason": died["reason"].replace("plugin process", "the model's process was", 1)}


class LogWriter:
    """The pair's stdout and stderr, capped while they are written: the first half of LOG_CAP_BYTES goes to the
    log as it comes, then only the last half is kept (in memory) and written with a marker at the end. Past
    `limit` bytes in all, `flooded` is set and the pair is stopped."""

    def __init__(self, logf, limit: int | None):  # noqa: ANN001 - a binary file
        import threading

        self.logf, self.limit = logf, limit
        read_fd, self.fd = os.pipe()
        self.read_fd = read_fd
        self.total = 0
        self.head_room = LOG_CAP_BYTES // 2
        self.tail = bytearray()
        self.flooded = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def started(self) -> None:
        os.close(self.fd)  # the child holds the write end now

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.total += len(chunk)
            if self.limit and self.total > self.limit:
                self.flooded = True
            if self.head_room > 0:
                head, chunk = chunk[:self.head_room], chunk[self.head_room:]
                self.head_room -= len(head)
                self.logf.write(head)
                self.logf.flush()
            if chunk:
                self.tail.extend(chunk)
                if len(self.tail) > LOG_CAP_BYTES // 2:
                    del self.tail[:len(self.tail) - LOG_CAP_BYTES // 2]

    def finish(self) -> None:
        self.thread.join(REPORT_DRAIN_SECONDS)  # a grandchild holding the pipe open cannot keep us waiting
        dropped = self.total - LOG_CAP_BYTES // 2 - len(self.tail)
        if dropped > 0:
            self.logf.write(f"\n[... {dropped} bytes cut by score-plugins ...]\n".encode())
        self.logf.write(bytes(self.tail))
        self.logf.flush()
        os.close(self.read_fd)


def cache_over_limit(manifest: Manifest, folders: tuple[str, ...]) -> str | None:
    """The first of these plugin cache folders that holds more than `cache_limit_bytes`, or cannot be measured
    (a path too long to open: fail closed), if one does; named with why when it could not be measured."""
    limit = manifest.cache_limit_bytes
    if limit:
        for folder in folders:
            try:
                if sb.tree_size(folder, limit, strict=True) > limit:
                    return folder
            except OSError as exc:
                return f"{folder} (it cannot be measured: {exc.strerror or exc})"
    return None


def cache_grew(manifest: Manifest, folder: str) -> str:
    """The reason a pair fails when a plugin cache folder passed its limit while it ran (checked during and after)."""
    return (f"the plugin cache folder {folder} grew past its limit of {manifest.cache_limit_bytes} bytes "
            "(plugin_cache_limit) while this pair ran; the pair was stopped")


class PairWatch:
    """Checks, while the pair runs, the limits no rlimit enforces for the pair as a whole: its output, its
    processes (per-pair user, root only), the bytes in its work folder and in its plugins' own cache folders
    (`caches`). Returns the reason to stop it."""

    def __init__(self, manifest: Manifest, workdir: Path, uids: tuple[int, ...], output: LogWriter,
                 caches: tuple[str, ...] = (), meter: GpuMeter | None = None):
        self.manifest, self.workdir, self.uids, self.output = manifest, workdir, tuple(set(uids)), output
        self.caches = caches
        self.meter = meter  # the pair's GPU memory, sampled at every check
        self.next_slow = self.next_cache = 0.0

    def check(self) -> str | None:
        m = self.manifest
        if self.meter is not None:
            self.meter.sample()
        if self.output.flooded:
            return f"pair printed more than its output limit of {m.output_limit_bytes} bytes and was stopped"
        if m.sandbox == "off" or time.monotonic() < self.next_slow:
            return None
        self.next_slow = time.monotonic() + 1.0
        if m.max_processes and sb.running_as_root() and \
                max(sb.count_processes(uid) for uid in self.uids) >= m.max_processes:
            return f"pair reached its limit of {m.max_processes} processes and was stopped"
        if m.disk_limit_bytes:
            try:
                over = sb.tree_size(str(self.workdir), m.disk_limit_bytes, strict=True) > m.disk_limit_bytes
            except OSError as exc:  # e.g. a path too long to open: what cannot be measured is not allowed
                return (f"pair's work folder cannot be measured against its disk limit of {m.disk_limit_bytes} "
                        f"bytes ({exc.strerror or exc}) and the pair was stopped")
            if over:
                return f"pair wrote more than its disk limit of {m.disk_limit_bytes} bytes and was stopped"
        if self.caches and time.monotonic() >= self.next_cache:
            began = time.monotonic()
            full = cache_over_limit(m, self.caches)
            if full:
                return cache_grew(m, full)
            # a cache of many files (a stimulus set) is walked at most a twentieth of the time, and at least
            # every 30 s however slow a plugin made its walk
            self.next_cache = time.monotonic() + min(30.0, max(1.0, 20 * (time.monotonic() - began)))
        return None


def env_failure_result(manifest: Manifest, pair: dict, env_log: Path, status: int) -> dict:
    """The pair's result when its environment could not be built: FAILED when the plugins' own build failed (a
    setup.py that fails, a build that changed the interpreter), INFRA_FAIL otherwise (the index, TLS, DNS, a full
    disk, a killed builder, the sandbox missing: outage.py), which is retried by the next build, not blamed."""
    result = base_result(manifest, pair)
    log_tail = tail(env_log)
    said = [line for line in log_tail.splitlines() if line.startswith("score-plugins: ")]
    reason = f"building the environment failed (exit {status})"
    kind = "sandbox unavailable" if status == 3 and said else classify(log_tail, status)
    if status == 3 and said:  # the sandbox could not be set up: nothing was built or run; say what is missing
        reason = f"{reason}: {said[-1][len('score-plugins: '):][:500]}"
    elif kind is not None and key_line(log_tail):
        reason = f"{reason}: {key_line(log_tail)}"
    if kind is not None:
        reason = f"infrastructure ({kind}): {reason}"
    result.update({"status": "error", "state": "FAILED" if kind is None else "INFRA_FAIL", "stage": "env_build",
                   "reason": reason, "log_path": str(env_log),
                   "log_tail": log_tail, "started_at": now(), "ended_at": now()})
    return result


def no_gpu_result(manifest: Manifest, pair: dict, reason: str) -> dict:
    """A GPU pair whose sandbox would show no GPU: the node's failure (NODE_FAIL), never a silent run on the CPU
    and never the submitter's."""
    result = base_result(manifest, pair)
    result.update({"status": "error", "state": "NODE_FAIL", "stage": None, "reason": f"no GPU for this pair: {reason}",
                   "log_tail": "", "started_at": now(), "ended_at": now(), "elapsed_seconds": 0.0})
    return result


def cmd_run_task(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    task = manifest.tasks[args.task]
    if "mem_limit_bytes" in task:  # the task's tier (the local executor's memory limit; None under Slurm)
        manifest = manifest.replace(mem_limit_bytes=task["mem_limit_bytes"])
    spool = Path(manifest.spool_dir)
    logs = Path(manifest.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    pair_usage.become_subreaper()  # each side's namespace init comes back here: the pair's real CPU time
    stop_sides_on_signals()
    gpu, no_gpu = None, None
    try:  # the GPUs the scheduler gave this task, as the model's sandbox will show them
        gpu = gpu_view(int(task.get("gpus") or 0), manifest.gpu_dev_dir, renumber=manifest.sandbox != "off")
    except NoGpu as exc:
        no_gpu = str(exc)
        print(f"[score-plugins] {no_gpu}", file=sys.stderr)
    failures = 0
    for pair in task["pairs"]:
        target = spool / f"{pair['key']}.json"
        if _already_ok(target):
            continue  # a re-run of this task keeps what an earlier attempt finished
        if args.env_status != 0:
            result = env_failure_result(manifest, pair, Path(args.env_log), args.env_status)
        elif no_gpu is not None:
            result = no_gpu_result(manifest, pair, no_gpu)
        else:
            result = run_pair(manifest, pair, args.env_python, logs / f"{pair['key']}.log", args.model_python,
                              gpu)
        try:
            write_json_atomic(target, result)
        except OSError as exc:
            print(f"[score-plugins] cannot write {target}: {exc}", file=sys.stderr)
            return 3
        announce(spool, target.name)
        failures += result["status"] != "ok"
        print(f"[score-plugins] {pair['model']} on {pair['benchmark']}: "
              f"{result.get('score_ceiled') if result['status'] == 'ok' else result['stage'] + ' error'}")
    return 0


def _already_ok(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def load_manifest(path: str) -> Manifest:
    return Manifest.load(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("run-task", help="score every pair of one array task")
    task.add_argument("--manifest", required=True)
    task.add_argument("--task", type=int, required=True)
    task.add_argument("--env-python", required=True, help="the benchmark's side's environment's interpreter")
    task.add_argument("--model-python", required=True, help="the model's side's environment's interpreter")
    task.add_argument("--env-status", type=int, default=0)
    task.add_argument("--env-log", default="")
    args = parser.parse_args(argv)
    return cmd_run_task(args)


if __name__ == "__main__":
    sys.exit(main())
