"""The benchmark's side of a pair, inside the plugins' environment and the sandbox: import the benchmark plugin,
score it against the model's process (a `boundary.RemoteModel`), report through the pipe to the worker.

Its own module, apart from the task loop (worker.py), because every pair starts this process: it imports only what
scoring needs (no argparse, no subprocess handling, no installer), which halves its start-up."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import boundary
from .flags import FlagError, read_flags
from .manifest import Manifest
from .score_reader import read_score
from .spool import StageError

OPTIONS = {"--manifest": str, "--pair": str, "--report-fd": int, "--model-fd": int, "--handoff": str}


def score_pair(args: dict) -> int:
    """Inside the plugins' environment, the benchmark's side: import the benchmark plugin, score it against the
    model's process (a boundary.RemoteModel), report through the pipe. Never raises."""
    import importlib

    report_fd = os.fdopen(args["report_fd"], "w", encoding="utf-8", closefd=True)
    current = {"stage": "import"}

    def send(message: dict) -> None:
        try:
            report_fd.write(json.dumps(message, allow_nan=False) + "\n")
            report_fd.flush()
        except (OSError, ValueError):
            pass  # the worker then records "exited without a valid result"

    def stage(name: str) -> None:
        current["stage"] = name
        send({"stage": name})

    stage("import")
    channel = None
    peak = [0]
    try:
        manifest = Manifest.load(args["manifest"])
        pair = next(p for t in manifest.tasks for p in t["pairs"] if p["key"] == args["pair"])
        channel = boundary.Channel(args["model_fd"], cap=manifest.boundary_cap_bytes, handoff=Path(args["handoff"]),
                                   peer="the model's process")
        root = manifest.domain_root
        domain = importlib.import_module(root)
        try:
            importlib.import_module(f"{root}.benchmarks.{pair['benchmark_plugin']}")
            benchmark_factory = getattr(domain, "benchmark_registry")[pair["benchmark"]]
        except KeyError as exc:
            raise StageError("import", f"{exc} is not registered after importing its plugin") from None
        boundary.wait_for_model(channel, "imported")  # the model's process imports its plugin meanwhile
        stage("score")
        boundary.wait_for_model(channel, "ready")
        model = boundary.RemoteModel(channel, pair["model"])
        benchmark = benchmark_factory()
        value = benchmark(model)
        violation = boundary.violation(model)
        if violation:  # a benchmark that caught the error still fails its pair with it
            raise StageError("score", violation)
        ceiling_attr = None
        if not isinstance(getattr(value, "attrs", None), dict) or "ceiling" not in value.attrs:
            try:  # a Score that carries its ceiling is enough; else the benchmark's own, for the record
                ceiling_attr = getattr(benchmark, "ceiling", None)
            except Exception:  # noqa: BLE001 - a ceiling property that fails is not fatal to the score
                ceiling_attr = None
        reported = read_score(value, ceiling_attr)
        stage("persist")
        send({"status": "ok", **reported, "max_rss_bytes": boundary.pair_peak(channel)})
        return 0
    except StageError as exc:
        report = {"status": "error", "stage": exc.stage, "reason": exc.reason}
    except boundary.ModelFailed as exc:
        report = {"status": "error", "stage": exc.stage, "reason": exc.reason}
    except boundary.BoundaryError as exc:
        report = {"status": "error", "stage": current["stage"], "reason": str(exc)}
    except BaseException as exc:  # a plugin may raise anything, SystemExit included
        boundary.print_exc()
        report = {"status": "error", "stage": current["stage"],
                  "reason": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        if channel is not None:
            peak[0] = boundary.pair_peak(channel)  # a MemoryError's peak tells the next run where to start
            channel.close()  # the model's process sees the end and exits
    report["max_rss_bytes"] = peak[0] or boundary.own_peak()
    send(report)
    return 1


def main(argv: list[str] | None = None) -> int:
    """`--manifest M --pair KEY --report-fd N --model-fd N --handoff FOLDER`, as the worker writes it."""
    try:
        args = read_flags(sys.argv[1:] if argv is None else argv, OPTIONS)
    except FlagError as exc:
        print(f"score_pair: {exc}", file=sys.stderr)
        return 2
    return score_pair(args)
