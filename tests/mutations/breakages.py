"""Hand-made breakages, one per claim whose test used to pass against broken code (issue 26).

Each breakage replaces one exact piece of the code a test guards, runs that test, and restores the file
whatever happens. The check passes when the test goes red: `tests/mutations/apply.sh NAME` (or `all`).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Breakage:
    name: str
    path: str  # file under the repository root
    old: str  # exact text, found exactly once
    new: str
    test: str  # pytest node id that must fail


BREAKAGES = [
    Breakage("future-timestamp", "pipeline/stages/ingest.py",
             "    if when > datetime.now(timezone.utc) + timedelta(hours=1):\n",
             "    if False:\n",
             "tests/test_faults.py::test_ingest_checks_each_spool_file_on_its_own"),
    Breakage("facts-cache-misses", "pipeline/catalog/factscache.py",
             "        return self._shard(sha[:2]).get(f\"{kind}:{sha}\")\n",
             "        return None\n",
             "tests/test_plugins.py::test_every_file_is_parsed_once_per_blob_across_runs"),
    Breakage("yaml-parsed-again", "pipeline/catalog/reading.py",
             "        known = cache.get(kind, entry.sha)\n",
             "        known = cache.get(kind, entry.sha) if kind == \"py\" else None\n",
             "tests/test_plugins.py::test_every_file_is_parsed_once_per_blob_across_runs"),
    Breakage("folder-readings-miss", "pipeline/catalog/factscache.py",
             "        found = self._plugins.get(key)\n",
             "        found = None\n",
             "tests/test_plugins.py::test_every_file_is_parsed_once_per_blob_across_runs"),
    Breakage("parents-deps-ignored", "pipeline/catalog/parentcache.py",
             "    return all((files[path].sha if path in files else \"\") == sha for path, sha in "
             "found[\"deps\"].items())\n",
             "    return True\n",
             "tests/test_parents.py::test_parents_are_walked_again_only_where_a_file_their_walk_read_changed"),
    Breakage("reason-text-lost", "pipeline/catalog/ids.py",
             "        return f\"{what} starts with '-' (it would read as an option)\"\n",
             "        return f\"{what} is not usable\"\n",
             "tests/test_plugins.py::test_invalid_identifiers_are_refused"),
    Breakage("cancel-closes-finished-pairs", "pipeline/stages/ledger.py",
             "        for job in session.scalars(select(Job).where(Job.run_id == run_id, Job.state.in_(OPEN))):\n"
             "            job.state, job.reason, job.ended_at = State.CANCELLED, reason, _now()\n",
             "        for job in session.scalars(select(Job).where(Job.run_id == run_id)):\n"
             "            job.state, job.reason, job.ended_at = State.CANCELLED, reason, _now()\n",
             "tests/test_repair.py::test_cancel_a_local_run_keeps_finished_results"),
    Breakage("outage-stops-the-run", "pipeline/stages/watch.py",
             "        except SQLAlchemyError as exc:  # the database is down",
             "        except KeyError as exc:  # the database is down",
             "tests/test_faults.py::test_postgres_down_mid_run_results_wait_in_the_spool"),
    Breakage("site-file-ignored", "pipeline/config.py",
             "        values.update({k: _coerce(k, v, str(known[k].type)) for k, v in data.items()})\n",
             "        pass\n",
             "tests/test_claims.py::test_settings_layers_flags_over_environment_over_site_file"),
    Breakage("move-not-recorded", "db/ingest.py",
             "        if recorded.get(identifier, plugin) != plugin:\n",
             "        if False:\n",
             "tests/test_faults.py::test_a_plugin_moved_to_a_new_folder_keeps_its_id_and_the_move_is_recorded"),
    Breakage("git-pin-unpinned", "envs/lock.py",
             "    text = path.read_text()\n",
             "    text = re.sub(r'(git\\+file://[^@\\s]+)@[0-9a-f]{40}', r'\\1', path.read_text())\n"
             "    path.write_text(text)\n",
             "tests/test_brainscore_shapes.py::test_scores_equal_brainscore_core_locally_in_the_sandbox"),
    Breakage("benchmark-in-the-models-environment", "jobscripts/templates/score_job.sh.j2",
             '  --env-python "$bench_env/bin/python" --model-python "$model_env/bin/python" \\\n',
             '  --env-python "$model_env/bin/python" --model-python "$model_env/bin/python" \\\n',
             "tests/test_model_boundary.py::test_a_models_requirement_never_runs_in_the_benchmarks_process"),
    Breakage("copy-loses-null", "db/upsert.py",
             "[null if row[c] is None else row[c] for c in columns]",
             "['' if row[c] is None else row[c] for c in columns]",
             "tests/test_ingest_copy.py::test_copy_on_postgres_stores_exactly_what_sqlite_stores"),
    Breakage("copy-counts-every-row-new", "db/upsert.py",
             "        return cur.rowcount\n",
             "        return len(rows)\n",
             "tests/test_ingest_copy.py::test_copy_on_postgres_stores_exactly_what_sqlite_stores"),
    # issue 35: the boundaries of findings 5, 7 and 9, each broken where it is enforced
    Breakage("shared-cache-writable-through-layer", "pipeline/job/cachelayer.py",
             "                            _secure(entry.path, info)\n",
             "                            os.lchown(entry.path, self.uid, 65534)\n",
             "tests/test_sandbox_builds.py::test_build_scripts_never_write_a_cache_another_lock_or_build_reads"),
    Breakage("node-addresses-left-open", "pipeline/job/netns.py",
             '            batch = ("".join(f"route add unreachable {a}/32\\n" for a in node_addresses())\n',
             '            batch = (""\n',
             "tests/test_sandbox_closed.py::test_worker_pools_and_the_network_setting"),
    Breakage("plugin-text-shown-raw", "pipeline/inert.py",
             "    return pattern.sub(_escape, text) if pattern.search(text) else text\n",
             "    return text\n",
             "tests/test_hostile_text.py::test_plugin_text_is_shown_inert_on_every_screen"),
    Breakage("nobuild-failure-judged", "envs/lock.py",
             "outfile, judged=not trusted)\n",
             "outfile, judged=True)\n",
             "tests/test_outage_units.py::test_a_failed_solve_without_builds_is_never_judged_the_solve_with_builds_is"),
]


def check(breakage: Breakage) -> bool:
    """Apply, run the test, restore; True when the test failed against the broken code."""
    path = ROOT / breakage.path
    original = path.read_text()
    if original.count(breakage.old) != 1:
        raise SystemExit(f"{breakage.name}: the text to break is not found exactly once in {breakage.path}")
    try:
        path.write_text(original.replace(breakage.old, breakage.new))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               breakage.test], cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(original)
    return proc.returncode == 1  # 1: tests failed (not 2-5: an error of pytest itself)


def main(names: list[str]) -> int:
    chosen = BREAKAGES if names in ([], ["all"]) else [b for b in BREAKAGES if b.name in names]
    unknown = set(names) - {b.name for b in BREAKAGES} - {"all"}
    if unknown:
        print(f"unknown breakage(s): {', '.join(sorted(unknown))}; known: "
              f"{', '.join(b.name for b in BREAKAGES)}", file=sys.stderr)
        return 2
    survived = []
    for breakage in chosen:
        caught = check(breakage)
        print(f"{breakage.name}: {'caught (test red)' if caught else 'NOT CAUGHT (test still green)'}"
              f" by {breakage.test}", flush=True)
        if not caught:
            survived.append(breakage.name)
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
