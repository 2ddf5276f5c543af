"""Shared helpers of the benchmark scripts: a synthetic plugin repository, timing, the JSON last line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@contextmanager
def timed(into: dict, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[name] = round(time.perf_counter() - start, 4)


def synthetic_repo(dest: Path, models: int, benchmarks: int, root: str = "bench_domain") -> Path:
    """A git repository with `models` model plugins and `benchmarks` benchmark plugins (one commit)."""
    base = dest / root
    (base / "data/toy").mkdir(parents=True)
    (base / "metrics/acc").mkdir(parents=True)
    (base / "__init__.py").write_text("model_registry = {}\nbenchmark_registry = {}\n")
    (base / "data/toy/__init__.py").write_text("from bench_domain import data_registry\ndata_registry['toy'] = 1\n")
    (base / "metrics/acc/__init__.py").write_text("from bench_domain import metric_registry\n"
                                                  "metric_registry['acc'] = 1\n")
    for i in range(models):
        d = base / f"models/m{i:05d}"
        d.mkdir(parents=True)
        (d / "__init__.py").write_text(f"from bench_domain import model_registry\n"
                                       f"model_registry['model-{i:05d}'] = lambda: None\n")
        (d / "requirements.txt").write_text("scikit-learn>=1.3\n")
    for i in range(benchmarks):
        d = base / f"benchmarks/b{i:04d}"
        d.mkdir(parents=True)
        (d / "__init__.py").write_text(f"from bench_domain import benchmark_registry, load_dataset, load_metric\n"
                                       f"benchmark_registry['bench-{i:04d}'] = lambda: (load_dataset('toy'), "
                                       f"load_metric('acc'))\n")
        (d / "requirements.txt").write_text("scikit-learn>=1.3\n")
    env = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.org", "GIT_COMMITTER_NAME": "Bench",
           "GIT_COMMITTER_EMAIL": "bench@example.org", "PATH": "/usr/bin:/bin"}
    for args in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "synthetic plugins"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env)
    return dest


def last_line(data: dict) -> None:
    """The contract: the benchmark's last line is one JSON object with at least `ratio`."""
    print(json.dumps(data, sort_keys=True))


def trivial_repo(dest: Path, models: int, benchmarks: int) -> Path:
    """`synthetic_repo` whose benchmarks return 0.5 at once and whose plugins all need only six==1.16.0."""
    repo = synthetic_repo(dest, models, benchmarks)
    base = repo / "bench_domain"
    (base / "__init__.py").write_text("model_registry = {}\nbenchmark_registry = {}\ndata_registry = {}\n"
                                      "metric_registry = {}\n")
    for d in (base / "benchmarks").iterdir():
        ident = (d / "__init__.py").read_text().split("benchmark_registry['")[1].split("']")[0]
        (d / "__init__.py").write_text(
            "from bench_domain import benchmark_registry\n\nclass Trivial:\n    ceiling = 1.0\n"
            f"    def __call__(self, model):\n        return 0.5\n\nbenchmark_registry['{ident}'] = Trivial\n")
    for d in [*(base / "models").iterdir(), *(base / "benchmarks").iterdir()]:
        (d / "requirements.txt").write_text("six==1.16.0\n")
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "trivial plugins"], check=True,
                   env={"GIT_AUTHOR_NAME": "B", "GIT_AUTHOR_EMAIL": "b@example.org", "GIT_COMMITTER_NAME": "B",
                        "GIT_COMMITTER_EMAIL": "b@example.org", "PATH": "/usr/bin:/bin"})
    return repo
