"""Detection on a real Brain-Score repository (a local clone of brain-score/vision or brain-score/language).

Not run in CI (it needs the clone): `.venv/bin/python benchmarks/real_repo_bench.py --repo PATH`.
Prints, at the repository's HEAD:
- model and benchmark ids we find, against an independent count (a line regex over every plugin
  `__init__.py`, comments skipped: no ast, none of our code);
- dependency edges we find, against every loader call in plugin code (an independent regex count of
  `load_dataset(`, `load_stimulus_set(`, `load_metric(`, `load_ceiling(`, `load_benchmark(`, `load_model(`
  outside tests), and how many calls could not be bounded;
- timings: reading the tree (ls-tree + cat-file of every .py), a cold and a warm catalog, a warm `detect` of
  a one-model change and of a one-data-plugin change (commits made with git plumbing, the clone untouched),
  and the number of distinct environments `plan --all` would lock.
Last line: JSON; `ratio` = warm one-model `detect` / reading the tree (a small multiple is the target).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import last_line, timed  # noqa: E402  (puts the project on sys.path)

from pipeline.catalog import gitrepo  # noqa: E402
from pipeline.stages.detect import detect  # noqa: E402
from pipeline.catalog.plugins import PLUGIN_TYPES, TEST_FILE, find_domain_root, load_catalog  # noqa: E402

REGISTRATION = re.compile(r"""^\s*(model|benchmark)_registry\[\s*(['"])(.+?)\2\s*\]\s*=""", re.M)
LOADER_CALL = re.compile(r"\bload_(dataset|stimulus_set|metric|ceiling|benchmark|model)\(")


def independent_counts(repo: Path, root: str) -> tuple[dict[str, int], int]:
    entries = [e for e in gitrepo.list_tree(repo, "HEAD", root) if e.kind == "blob" and e.path.endswith(".py")]
    blobs = gitrepo.read_blobs(repo, [e.sha for e in entries])
    ids: dict[str, set[str]] = {"model": set(), "benchmark": set()}
    calls = 0
    for e in entries:
        parts = e.path.split("/")
        if len(parts) < 4 or parts[1] not in PLUGIN_TYPES:
            continue
        text = blobs[e.sha].decode("utf-8", "replace")
        if len(parts) == 4 and parts[3] == "__init__.py":
            for kind, _, identifier in REGISTRATION.findall(text):
                ids[kind].add(identifier)
        if not TEST_FILE.search("/".join(parts[3:])):
            code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
            calls += len(LOADER_CALL.findall(code)) - len(re.findall(r"def load_(?:dataset|stimulus_set|metric|"
                                                                       r"ceiling|benchmark|model)\(", code))
    return {k: len(v) for k, v in ids.items()}, calls


def touch_commit(repo: Path, path: str) -> str:
    """A commit on top of HEAD that appends a comment to `path` (plumbing only: no checkout, no ref moved)."""
    blob = subprocess.run(["git", "-C", str(repo), "cat-file", "blob", f"HEAD:{path}"], capture_output=True,
                          check=True).stdout + b"\n# touched by real_repo_bench\n"
    sha = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=blob, capture_output=True,
                         check=True).stdout.decode().strip()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": f"{tmp}/index", "GIT_AUTHOR_NAME": "bench",
               "GIT_AUTHOR_EMAIL": "bench@example.org", "GIT_COMMITTER_NAME": "bench",
               "GIT_COMMITTER_EMAIL": "bench@example.org"}
        run = lambda *a, **k: subprocess.run(["git", "-C", str(repo), *a], env=env, capture_output=True,  # noqa: E731
                                             check=True, **k).stdout.decode().strip()
        run("read-tree", "HEAD")
        run("update-index", "--cacheinfo", f"100644,{sha},{path}")
        tree = run("write-tree")
        return run("commit-tree", tree, "-p", "HEAD", "-m", f"touch {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a clone of brain-score/vision or brain-score/language")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing (the example plugin repository)")
    args = parser.parse_args()
    if args.smoke and args.repo is None:
        from pipeline import examples

        args.repo = Path(tempfile.mkdtemp(prefix="real-repo-bench-")) / "examples"
        examples.create(args.repo)
    if args.repo is None:
        parser.error("--repo is required (or --smoke)")
    repo = args.repo.resolve()
    root = find_domain_root(repo, "HEAD")
    t: dict[str, float] = {}
    with timed(t, "read_tree_s"):
        entries = [e for e in gitrepo.list_tree(repo, "HEAD", root) if e.kind == "blob" and e.path.endswith(".py")]
        gitrepo.read_blobs(repo, [e.sha for e in entries])
    expected_ids, loader_calls = independent_counts(repo, root)
    with tempfile.TemporaryDirectory() as cache:
        cache_dir = Path(cache)
        with timed(t, "catalog_cold_s"):
            catalog = load_catalog(repo, "HEAD", cache_dir=cache_dir)
        with timed(t, "catalog_warm_s"):
            load_catalog(repo, "HEAD", cache_dir=cache_dir)
        model = next(p for p in catalog.of_type("models") if p.identifiers)
        data = max(catalog.of_type("data"), key=lambda d: sum(
            1 for b in catalog.of_type("benchmarks") if d in catalog.dependencies(b)))
        model_commit = touch_commit(repo, f"{model.path}/__init__.py")
        data_commit = touch_commit(repo, f"{data.path}/__init__.py")
        with timed(t, "detect_one_model_warm_s"):
            change, _ = detect(repo, "HEAD", model_commit, cache_dir=cache_dir)
        with timed(t, "detect_one_data_plugin_warm_s"):
            data_change, _ = detect(repo, "HEAD", data_commit, cache_dir=cache_dir)
    edges = sum(len(names) for p in catalog.plugins.values() for names in p.uses.values())
    found_ids = {"model": len(catalog.by_identifier("models")), "benchmark": len(catalog.by_identifier("benchmarks"))}
    benchmarks_using_data = sum(1 for b in catalog.of_type("benchmarks") if b.uses["data"])
    loaders_benchmarks = sum(1 for b in catalog.of_type("benchmarks") if b.uses["data"] or b.uses["metrics"])
    env_sets = {tuple(catalog.requirements(m, b)) for m in {id(p): p for p in catalog.by_identifier("models")
                                                            .values()}.values()
                for b in {id(p): p for p in catalog.by_identifier("benchmarks").values()}.values()}
    pairs = found_ids["model"] * found_ids["benchmark"]
    print(f"repository: {repo} ({root}) at {gitrepo.resolve(repo, 'HEAD')[:12]}")
    print(f"ids: models {found_ids['model']} (independent count {expected_ids['model']}), "
          f"benchmarks {found_ids['benchmark']} (independent count {expected_ids['benchmark']})")
    print(f"loader calls in plugin code (independent count): {loader_calls}; resolved by us: {catalog.load_calls}; "
          f"unbounded: {len(catalog.unbounded)}; dependency edges: {edges}")
    print(f"benchmark plugins with a data dependency: {benchmarks_using_data} of {len(catalog.of_type('benchmarks'))}"
          f" ({loaders_benchmarks} with data or metric dependencies)")
    print(f"one-model change: exit {'2' if change.errors else '0'}, new models {len(change.new_models)}, "
          f"issues {len(change.issues)}")
    print(f"touching data plugin {data.name}: {len(data_change.rescore_benchmarks)} benchmark ids re-scored")
    print(f"plan --all: {pairs} pairs, {len(env_sets)} distinct requirement sets to lock")
    for name, value in t.items():
        print(f"{name}: {value}")
    last_line({"ratio": round(t["detect_one_model_warm_s"] / max(t["read_tree_s"], 1e-9), 2),
               "ratio_definition": "warm detect of a one-model change / reading every .py blob of the tree",
               **t, "models": found_ids["model"], "benchmarks": found_ids["benchmark"],
               "models_independent": expected_ids["model"], "benchmarks_independent": expected_ids["benchmark"],
               "loader_calls_independent": loader_calls, "loads_resolved": catalog.load_calls,
               "unbounded_loads": len(catalog.unbounded), "edges": edges,
               "rescored_by_data_change": len(data_change.rescore_benchmarks), "pairs_all": pairs,
               "requirement_sets_all": len(env_sets)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
