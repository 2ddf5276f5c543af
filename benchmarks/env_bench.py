"""A fresh build of the example plugins' environment against a cache hit, in the same run.

Both go through the rendered environment step (build_env.sh), as a job would. The fresh build
uses uv's package cache (warmed first, as on a cluster with a shared cache), so it measures
creating and populating the environment, not downloading. ratio = hit / fresh (target < 0.01).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from _common import last_line

from envs.lock import EnvSpec, lock_environment
from jobscripts import render_env_builder
from pipeline.config import load_settings, python_version
from pipeline.stages.bundle import copy_job_package


def build(script: Path, target: Path, lock: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["bash", str(script), str(target), str(lock)], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", type=int, default=3, help="fresh builds timed (the best counts)")
    parser.add_argument("--hits", type=int, default=10, help="cache hits timed (the best counts)")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.fresh, args.hits = 1, 1
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        lock = lock_environment(EnvSpec(("scikit-learn>=1.3",), python_version(settings.python)),
                                tmp_path / "locks", settings.uv)
        script = tmp_path / "build_env.sh"
        script.write_text(render_env_builder(backend="uv", uv=settings.uv, python=settings.python))
        copy_job_package(tmp_path)  # as in a bundle: the build runs in the sandbox, job/sandbox.py beside it
        build(script, tmp_path / "warm-cache", lock.path)  # fill uv's package cache
        fresh = [build(script, tmp_path / f"fresh-{i}", lock.path) for i in range(args.fresh)]
        hits = [build(script, tmp_path / "fresh-0", lock.path) for _ in range(args.hits)]
    fresh_s, hit_s = min(fresh), min(hits)
    print(f"environment of {len(lock.packages)} packages ({', '.join(lock.packages)})")
    print(f"fresh build (warm package cache): best of {args.fresh} {fresh_s:.3f} s")
    print(f"cache hit: best of {args.hits} {hit_s:.4f} s")
    last_line({"fresh_seconds": round(fresh_s, 4), "hit_seconds": round(hit_s, 4),
               "ratio": round(hit_s / fresh_s, 5), "packages": len(lock.packages),
               "ratio_definition": "hit_seconds / fresh_seconds (lower is better); target < 0.01"})


if __name__ == "__main__":
    main()
