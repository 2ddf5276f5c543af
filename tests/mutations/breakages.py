"""Hand-made breakages: one per claim whose test used to pass against broken code (issues 26, 35 and 39), each the
smallest edit that makes the claim false where the code enforces it, with the one test that must then fail.

`tests/mutations/apply.sh [NAME ...|all]` applies them one at a time and restores each file (tests/mutations/
harness.py says what counts as caught); `scripts/test` runs them all after the whole suite, in CI too.
To add one: a `Breakage(name, file, exact old text (found exactly once), new text, guard test node id)` below,
with the fastest test that fails on it; see docs/mutation.md.
"""

from __future__ import annotations

import sys

from tests.mutations.harness import Breakage, cli

BREAKAGES = [
    Breakage("future-timestamp", "pipeline/stages/ingest.py",
             "    if when > datetime.now(timezone.utc) + timedelta(hours=1):\n",
             "    if False:\n",
             "tests/test_units_decisions.py::test_refusals_name_what_is_wrong_and_the_future_has_an_hours_grace"),
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
             "tests/test_units_decisions.py::test_the_ledger_claims_each_pair_once_and_records_every_transition"),
    Breakage("outage-stops-the-run", "pipeline/stages/watch.py",
             "        except SQLAlchemyError as exc:  # the database is down: results wait in the spool, scoring goes on",
             "        except KeyError as exc:  # the database is down: results wait in the spool, scoring goes on",
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
    # db/upsert.py since 8e3e8e8: rows are tuples written with a NULL marker no value can know, and the function
    # returns the positions of the rows not written (their key was there) instead of a count
    Breakage("copy-loses-null", "db/upsert.py",
             "writerows([null if v is None else v for v in row] for row in rows)",
             "writerows(['' if v is None else v for v in row] for row in rows)",
             "tests/test_ingest_copy.py::test_copy_on_postgres_stores_exactly_what_sqlite_stores"),
    Breakage("copy-counts-every-row-new", "db/upsert.py",
             "            skipped.append(position)\n",
             "            pass\n",
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
             "tests/test_inert_text.py::test_every_control_format_and_separator_character_is_escaped_and_ordinary_text_is_not"),
    Breakage("nobuild-failure-judged", "envs/lock.py",
             "outfile, judged=not trusted)\n",
             "outfile, judged=True)\n",
             "tests/test_outage_units.py::test_a_failed_solve_without_builds_is_never_judged_the_solve_with_builds_is"),
    # issue 39: the defences of issues 35-38, each made to let through what it refuses
    Breakage("sandbox-without-bubblewrap", "pipeline/job/sandbox.py",
             '    found = shutil.which("bwrap")\n',
             '    found = shutil.which("bwrap") or "/usr/bin/bwrap"\n',
             "tests/test_sandbox_closed.py::test_run_refuses_when_bubblewrap_is_missing"),
    Breakage("no-memory-cgroup-accepted", "pipeline/confine.py",
             '        if settings.sandbox == "off":\n            _say_once(f"no memory cgroup',
             '        if True:\n            _say_once(f"no memory cgroup',
             "tests/test_sandbox_closed.py::test_no_memory_cgroup_runs_nothing_unless_rlimit_is_chosen_and_then_says_so"),
    Breakage("gpu-tier-without-gres", "pipeline/tiers.py",
             '        return f"gpu:{self.gpu_type}:{self.gpus}" if self.gpu_type else f"gpu:{self.gpus}"\n',
             '        return ""\n',
             "tests/test_tiers.py::test_first_tier_next_tier_and_failure_kinds"),
    Breakage("oom-escalates-to-no-more-memory", "pipeline/tiers.py",
             '        if kind == "OOM" and tier.mem_bytes > now.mem_bytes:\n',
             '        if kind == "OOM":\n',
             "tests/test_tiers.py::test_first_tier_next_tier_and_failure_kinds"),
    Breakage("brain-score-rules-take-the-newest", "pipeline/leaderboard/rules.py",
             '    "brain-score": Rules("brain-score", leaf="highest_raw",',
             '    "brain-score": Rules("brain-score", leaf="newest",',
             "tests/test_website_board.py::test_highest_raw_score_whatever_its_date"),
    Breakage("new-benchmark-types-shown", "pipeline/leaderboard/standings.py",
             '                show = named if named is not None else board_rules.new_types == "shown"\n',
             '                show = named if named is not None else True\n',
             "tests/test_website_board.py::test_board_follows_brain_score_org"),
    Breakage("non-owner-commit-scored", "pipeline/stages/ownership.py",
             "            if commit.author in allowed:\n                continue\n",
             "            if True:\n                continue\n",
             "tests/test_ownership.py::test_a_commit_by_a_non_owner_is_found_and_the_owners_own_are_not"),
    Breakage("dev-url-at-prods-database-accepted", "db/profiles.py",
             '    return (a.drivername.split("+")[0], a.host, a.port, a.database) == (b.drivername.split("+")[0], '
             'b.host, b.port,\n                                                                          b.database)\n',
             "    return a == b\n",
             "tests/test_db.py::test_profile_selection_order_and_guards"),
    Breakage("unknown-error-blamed-on-the-plugin", "pipeline/job/outage.py",
             "    return outage_kind(text, returncode)\n\n\ndef key_line",
             "    kind = outage_kind(text, returncode)\n    return None if kind == \"unrecognised failure\" else kind\n\n\n"
             "def key_line",
             "tests/test_outage_units.py::test_failures_are_the_plugins_only_for_no_solution_or_their_own_build"),
    Breakage("terminal-gets-escape-sequences", "pipeline/console.py",
             "            segment if segment.control else Segment(inert(segment.text), segment.style) for segment in buffer)",
             "            segment for segment in buffer)",
             "tests/test_inert_text.py::test_tables_lines_and_log_records_on_a_terminal_are_inert"),
    # issue 39's weak tests, each now red on the regression it names
    Breakage("second-signal-ignored", "pipeline/admin/signals.py",
             "        if len(seen) > 1 and _MARKED:",
             "        if False:",
             "tests/test_signals.py::test_a_second_sigterm_leaves_a_run_that_reconcile_closes_as_cancelled"),
    Breakage("sandbox-shows-a-host-folder", "pipeline/job/sandbox.py",
             '    "/etc/fonts", "/etc/os-release", "/etc/machine-id",\n',
             '    "/etc/fonts", "/etc/os-release", "/etc/machine-id", "/var",\n',
             "tests/test_sandbox_builds.py::test_hostile_plugin_test_is_contained"),
    Breakage("verify-trusts-the-installer", "envs/rattler_tool.py",
             "    if missing:\n        raise SystemExit(f\"environment {target} lacks locked packages",
             "    if False:\n        raise SystemExit(f\"environment {target} lacks locked packages",
             "tests/test_conda_envs.py::test_rattler_install_then_verify_and_a_corrupt_lock"),
    # the harness's own rule (issue 39): pytest's exit 1 alone is no proof (a fixture's error exits 1 too)
    Breakage("harness-counts-any-exit-1", "tests/mutations/harness.py",
             "        if self.returncode == 1 and self.failures and not self.errors:\n",
             "        if self.returncode == 1:\n",
             "tests/test_breakage_harness.py::test_only_a_failing_call_is_caught_and_every_other_outcome_fails_the_harness"),
]


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:], BREAKAGES))
