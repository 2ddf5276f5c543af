"""What the boundaries of issue 35 cost a sandboxed step: the start of one sandboxed process (bubblewrap,
seccomp, the per-pair user, `true` inside) with `sandbox_network` host (the node's own network: the former "on"),
off (a network namespace of its own, loopback only: the floor of having a namespace at all) and on (that
namespace joined to the outside by slirp4netns, the node's addresses closed), in alternating rounds; and the
cache layer (pipeline/job/cachelayer.py) over a cache of many small files, as a lock or build step pays it.

ratio = median(on) / median(host); floor_ratio = median(on) / median(off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import last_line

from pipeline.job import sandbox as sb
from pipeline.job.cachelayer import CacheLayer


def start_once(network: str) -> float:
    argv, fds, _how = sb.command(sb.View(network=network), [os.path.realpath("/bin/true")])
    try:
        start = time.perf_counter()
        subprocess.run(argv, pass_fds=fds, check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        for fd in fds:
            os.close(fd)


def layer_seconds(files: int) -> tuple[float, float]:
    """Seconds to make (and remove) a layer over a cache of `files` files of 4 KB in 100 folders."""
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "cache"
        for i in range(files):
            folder = shared / f"d{i % 100}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i}").write_bytes(b"x" * 4096)
        start = time.perf_counter()
        with CacheLayer(str(shared), uid=sb.NOBODY, trusted=False) as layer:
            made = time.perf_counter() - start
            assert layer.files == files
        return made, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layer-files", type=int, default=20_000)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.layer_files = 1, 100
    times: dict[str, list[float]] = {"host": [], "off": [], "on": []}
    for mode in times:  # warm each once
        start_once(mode)
    for _ in range(args.rounds):
        for mode in times:
            times[mode].append(start_once(mode))
    med = {mode: statistics.median(values) for mode, values in times.items()}
    for mode, value in med.items():
        print(f"sandboxed start, network {mode}: median {value * 1000:.1f} ms of {args.rounds}")
    made, total = layer_seconds(args.layer_files)
    print(f"cache layer over {args.layer_files} files: made in {made:.3f} s, made and removed in {total:.3f} s")
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}")
    last_line({"ratio": round(med["on"] / med["host"], 3), "floor_ratio": round(med["on"] / med["off"], 3),
               "host_ms": round(med["host"] * 1000, 1), "off_ms": round(med["off"] * 1000, 1),
               "on_ms": round(med["on"] * 1000, 1), "layer_files": args.layer_files,
               "layer_make_seconds": round(made, 3), "layer_total_seconds": round(total, 3),
               "load": round(load, 2),
               "ratio_definition": "median start of a sandboxed true, network on / host; floor: on / off"})


if __name__ == "__main__":
    main()
