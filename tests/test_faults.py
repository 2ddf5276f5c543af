"""Faults and bad plugins: nothing lost, nothing duplicated, no secret in reach of plugin code."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import CLI, commit_all, write

BAD_PLUGINS = {
    # benchmark folder: (body of __call__ or a whole __init__.py, expected stage, text in the reason)
    "syntax_error": ("FILE:from sklearn_scores import benchmark_registry\nbenchmark_registry['syntax-error'] = (\n",
                     None, None),
    "import_error": ("FILE:import no_such_module_anywhere\nfrom sklearn_scores import benchmark_registry\n"
                     "benchmark_registry['import-error'] = lambda: None\n", "import", "ModuleNotFoundError"),
    "missing_dependency": ("FILE:import yaml_not_declared_anywhere as y\nfrom sklearn_scores import benchmark_registry\n"
                           "benchmark_registry['missing-dependency'] = lambda: None\n", "import",
                           "yaml_not_declared_anywhere"),
    "raises": ("raise RuntimeError('benchmark exploded')", "score", "benchmark exploded"),
    "html_in_error": ("raise RuntimeError('<a href=\"http://evil.example/login\">log in</a><script>steal()</script>"
                      " [red]x[/red]')", "score", '<a href="http://evil.example/login">'),
    "returns_nan": ("return float('nan')", "score", "not a finite number"),
    "returns_inf": ("return float('inf')", "score", "not a finite number"),
    "returns_none": ("return None", "score", "NoneType"),
    "returns_string": ("return '0.9'", "score", "str"),
    "returns_bool": ("return True", "score", "bool"),
    "returns_list": ("return [0.5]", "score", "list"),
    "out_of_range": ("return 1.7", "score", "outside [0, 1]"),
    "negative": ("return -0.2", "score", "outside [0, 1]"),
    "non_utf8_output": ("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe bad bytes \\x80\\n')\nsys.stdout.flush()\n"
                        "raise ValueError('after non-UTF-8 output')", "score", "after non-UTF-8 output"),
    "huge_output": ("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.write(line)\n"
                    "raise ValueError('after 100 MB of output')", "score", "after 100 MB of output"),
    "endless_loop": ("while True:\n    pass", "score", "time limit"),
    "sys_exit": ("import sys\nsys.exit(3)", "score", "SystemExit"),
    "os_exit": ("import os\nos._exit(7)", "score", "exited with code 7"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "score", "SIGSEGV"),
    "kill_self": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "score", "SIGKILL"),
    "bad_ceiling": ("CEIL:0", "score", "ceiling"),
    "keyboard_interrupt": ("raise KeyboardInterrupt", "score", "KeyboardInterrupt"),
    "reads_other_plugin": ("import os\nfrom pathlib import Path\n"
                           "return len((Path(os.environ['PYTHONPATH']) / 'sklearn_scores/models/knn/__init__.py')"
                           ".read_text()) * 0.0", "score", "FileNotFoundError"),
    "writes_outside": ("import os\nfrom pathlib import Path\n"
                       "(Path(os.environ['PYTHONPATH']) / 'sklearn_scores/pwned.py').write_text('x = 1')\nreturn 0.5",
                       "score", "Read-only file system"),
    "writes_tmp": ("from pathlib import Path\nPath('/tmp/score-plugins-pwned').write_text('x')\nreturn 0.5", "score",
                   "Read-only file system"),
}


def add_bad_benchmarks(repo) -> None:
    for folder, (body, _, _) in BAD_PLUGINS.items():
        identifier = folder.replace("_", "-")
        if body.startswith("FILE:"):
            text = body[5:]
        elif body.startswith("CEIL:"):
            text = ("from sklearn_scores import benchmark_registry\n\nclass Bench:\n    ceiling = " + body[5:] +
                    "\n    def __call__(self, model):\n        return 0.5\n\n"
                    f"benchmark_registry['{identifier}'] = Bench\n")
        else:
            text = ("from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
                    + "".join(f"        {line}\n" for line in body.splitlines())
                    + f"\nbenchmark_registry['{identifier}'] = Bench\n")
        write(repo, f"sklearn_scores/benchmarks/{folder}/__init__.py", text)
        write(repo, f"sklearn_scores/benchmarks/{folder}/requirements.txt", "scikit-learn>=1.3\n")
    write(repo, "sklearn_scores/benchmarks/good_one/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    ceiling = 0.8\n"
          "    def __call__(self, model):\n        return 0.6\n\nbenchmark_registry['good-one'] = Bench\n")
    write(repo, "sklearn_scores/benchmarks/good_one/requirements.txt", "scikit-learn>=1.3\n")


def test_twenty_bad_plugins_each_end_as_a_clear_error(workspace, example_repo):
    add_bad_benchmarks(example_repo)
    commit_all(example_repo, "twenty bad benchmarks and a good one", author="Mallory <mallory@example.org>")
    workspace.env.update({"SCORE_PLUGINS_PAIR_TIMEOUT": "25", "SCORE_PLUGINS_PAIRS_PER_TASK": "6"})
    proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                         "--format", "json")
    assert proc.returncode == 1, proc.stderr  # the run finished with failed pairs (1 outranks 2)
    assert "syntax_error/__init__.py:2: error: syntax error" in proc.stderr
    result = json.loads(proc.stdout)
    pairs = {p["benchmark"]: p for p in result["pairs"]}
    # Brain-Score semantics: the returned value is the (already ceiled) score; the ceiling is recorded, not applied
    assert pairs["good-one"]["state"] == "COMPLETED" and pairs["good-one"]["score"] == 0.6
    for folder, (_, stage, text) in BAD_PLUGINS.items():
        identifier = folder.replace("_", "-")
        if stage is None:
            assert identifier not in pairs
            continue
        pair = pairs[identifier]
        assert pair["state"] in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY"), (identifier, pair)
        assert pair["stage"] == stage, (identifier, pair)
        assert text in pair["reason"], (identifier, pair["reason"])
    board = workspace.json("leaderboard")
    assert [(r["model"], r["benchmark"]) for r in board] == [("logreg", "good-one")]
    # every failure reaches the submitter, with a readable tail of its log
    mail = next(p for p in (workspace.state / "outbox").rglob("*.eml") if b"mallory@example.org" in p.read_bytes())
    import email
    from email import policy

    body = email.message_from_bytes(mail.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()
    assert "Problems found in your plugins before scoring (1)" in body
    assert "sklearn_scores/benchmarks/syntax_error/__init__.py:2: syntax error" in body
    assert body.count("FAILED during") + body.count("TIMEOUT during") == len(BAD_PLUGINS) - 1
    assert len(mail.read_bytes()) < 250_000
    # plugin text is text: escaped in the HTML part (no live link, no script), literal in the plain part
    from html.parser import HTMLParser

    class Elements(HTMLParser):
        found: list = []

        def handle_starttag(self, tag, attrs):
            self.found.append((tag, dict(attrs)))

    html_part = email.message_from_bytes(mail.read_bytes(), policy=policy.default).get_body(("html",)).get_content()
    parser = Elements()
    parser.feed(html_part)
    assert not [a for tag, a in parser.found if tag == "script" or "evil.example" in (a.get("href") or "")]
    assert "&lt;a href=&#34;http://evil.example/login&#34;&gt;" in html_part or \
        "&lt;a href=&quot;http://evil.example/login&quot;&gt;" in html_part
    assert '<a href="http://evil.example/login">' in body and "[red]x[/red]" in body
    assert not list(example_repo.parent.rglob("pwned.py")) and not Path("/tmp/score-plugins-pwned").exists()
    huge_log = next(workspace.state.glob("runs/*/logs/*.log"), None)
    assert huge_log is not None and max(p.stat().st_size for p in workspace.state.glob("runs/*/logs/*.log")) < 3e6


def test_plugin_sees_no_credentials(workspace, example_repo, pg_url, tmp_path):
    """A plugin dumps its environment, every process environment it can see in /proc, and every file it
    can read under the run folder, the state folder and the site config: neither password appears there,
    nor in any log, script, spool file or email. (With the sandbox off, the coordinator's own environment
    in /proc leaks the database URL under the local executor: this test then fails, as it should.)"""
    smtp_password = "smtp-S3cret-99"
    db_password = pg_url.split("://", 1)[1].split("@")[0].split(":")[1]
    site = tmp_path / "site.toml"
    site.write_text('partition = ""\n')
    dumper = ("import os, pathlib\nprint('ENV', dict(os.environ))\n"
              "for proc in pathlib.Path('/proc').glob('[0-9]*/environ'):\n"
              "    try:\n        print('PROC', proc, proc.read_bytes())\n"
              "    except Exception as e:\n        print('NOPROC', proc, e)\n"
              "roots = [pathlib.Path(os.environ['PYTHONPATH']).parent, pathlib.Path(os.environ['PYTHONPATH']).parents[2],"
              f" pathlib.Path({str(site)!r})]\n"
              "for root in roots:\n"
              "    for p in ([root] if root.is_file() else root.rglob('*')):\n"
              "        try:\n            print('FILE', p, p.read_bytes()[:200000])\n"
              "        except Exception as e:\n            print('NOREAD', p, e)\n"
              "return 0.5")
    write(example_repo, "sklearn_scores/benchmarks/dumper/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
          + "".join(f"        {line}\n" for line in dumper.splitlines()) + "\nbenchmark_registry['dumper'] = Bench\n")
    write(example_repo, "sklearn_scores/benchmarks/dumper/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "a benchmark that looks for secrets")
    workspace.env.update({"SCORE_PLUGINS_DB_TEST": pg_url, "SCORE_PLUGINS_CONFIG": str(site),
                          "SCORE_PLUGINS_SMTP_URL": f"smtp://mailer:{smtp_password}@127.0.0.1:9?timeout=2"})
    proc = workspace.cli("run", "--profile", "test", "--repo", str(example_repo), "--base", "HEAD~1", "--models",
                         "logreg", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["states"] == {"COMPLETED": 1}
    logs = list(workspace.state.glob("runs/*/logs/*.log"))
    assert any(b"ENV {" in p.read_bytes() and b"FILE " in p.read_bytes() for p in logs)  # the dump ran
    for path in workspace.state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert db_password.encode() not in data, path
            assert smtp_password.encode() not in data, path
    assert db_password not in proc.stdout + proc.stderr and smtp_password not in proc.stdout + proc.stderr


def test_postgres_down_mid_run_results_wait_in_the_spool(workspace, example_repo, postgres):
    url = postgres.create_database("fault")
    write(example_repo, "sklearn_scores/benchmarks/slowish/__init__.py",
          "import time\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
          "    def __call__(self, model):\n        time.sleep(3)\n        return 0.4\n\n"
          "benchmark_registry['slowish'] = Bench\n")
    commit_all(example_repo, "slow benchmark")
    workspace.env.update({"SCORE_PLUGINS_DB_TEST": url, "SCORE_PLUGINS_PAIRS_PER_TASK": "1",
                          "SCORE_PLUGINS_LOCAL_WORKERS": "1"})
    proc = subprocess.Popen([str(CLI), "run", "--profile", "test", "--repo", str(example_repo), "--base", "HEAD~1",
                             "--format", "json"], cwd=workspace.path, env=workspace.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    def spooled() -> int:
        return len(list(workspace.state.glob("runs/*/spool/*.json")))

    def wait_for(count: int, deadline: float) -> None:
        while spooled() < count:
            assert proc.poll() is None, f"the run ended before {count} results were spooled: {proc.stderr.read()}"
            assert time.time() < deadline, f"only {spooled()} of {count} results spooled by the deadline"
            time.sleep(0.2)

    try:
        wait_for(1, time.time() + 120)
        postgres.pause()
        try:
            before = spooled()
            wait_for(before + 2, time.time() + 120)  # two results written while the database is down
            assert proc.poll() is None, "the run went on while the database was down"
        finally:
            postgres.resume()
    except BaseException:
        proc.kill()
        raise
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["states"] == {"COMPLETED": 4}
    assert len(workspace.json("leaderboard", "--profile", "test")) == 4
    again = workspace.json("ingest", "--profile", "test")
    assert again["scores"] == 0 and again["duplicates"] == 4  # nothing lost, nothing twice


def test_a_change_with_only_a_broken_plugin_still_tells_its_submitter(workspace, example_repo):
    write(example_repo, "sklearn_scores/models/broken/__init__.py",
          "from sklearn_scores import model_registry\nmodel_registry['has\\nnewline'] = lambda: None\n")
    commit_all(example_repo, "a model with a bad identifier", author="Zoe <zoe@example.org>")
    proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2 and "broken/__init__.py:2: error" in proc.stderr
    [mail] = list((workspace.state / "outbox").rglob("*.eml"))
    import email
    from email import policy

    msg = email.message_from_bytes(mail.read_bytes(), policy=policy.default)
    assert str(msg["To"]) == "zoe@example.org" and "plugin problem" in msg["Subject"]
    assert "identifier contains control characters or line breaks" in msg.get_body(("plain",)).get_content()


def test_memory_hog_on_the_local_executor_is_stopped_at_its_limit(workspace, example_repo):
    write(example_repo, "sklearn_scores/benchmarks/hog/__init__.py",
          "from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
          "        blocks = [bytearray(200 * 2**20) for _ in range(20)]\n        return 0.5\n\n"
          "benchmark_registry['hog'] = Bench\n")
    commit_all(example_repo, "a benchmark that wants 4 GB")
    workspace.env["SCORE_PLUGINS_MEM"] = "1G"
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg", expect=1)
    [pair] = result["pairs"]
    assert pair["state"] == "OUT_OF_MEMORY" and pair["stage"] == "score", pair
    # which bound stops it first: the pair's memory cgroup (local_memory = "cgroup", the default: the kernel's OOM
    # killer at 1 GB of touched pages) or, where a cgroup cannot be made, RLIMIT_DATA (Python's MemoryError)
    by_cgroup = "memory limit of 1073741824 bytes (a memory cgroup" in pair["reason"]
    assert by_cgroup != ("MemoryError" in pair["reason"]), pair["reason"]


def test_an_id_recorded_for_another_folder_is_not_taken_over(workspace, example_repo):
    """knn-5 is scored from folder knn; a later change makes knn register another id and a new folder
    register knn-5: refused with exit 2, knn-5's scores unchanged. A folder that is gone may hand its id on."""
    first = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "knn-5")
    assert set(first["states"]) == {"COMPLETED"}
    before = {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")}
    path = example_repo / "sklearn_scores/models/knn/__init__.py"
    path.write_text(path.read_text().replace("model_registry['knn-5']", "model_registry['knn-5-renamed']"))
    write(example_repo, "sklearn_scores/models/taker/__init__.py",
          "from sklearn_scores import model_registry\nfrom sklearn.dummy import DummyClassifier\n\n"
          "model_registry['knn-5'] = lambda: DummyClassifier()\n")
    commit_all(example_repo, "take over knn-5", author="Mallory <mallory@example.org>")
    proc = workspace.cli("run", "--repo", str(example_repo), "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 2, proc.stderr
    assert "'knn-5' belongs to sklearn_scores/models/knn" in proc.stderr
    result = json.loads(proc.stdout)
    assert all(p["model"] != "knn-5" for p in result["pairs"])
    after = {(r["model"], r["benchmark"]): (r["score"], r["id"]) for r in workspace.json("leaderboard")}
    assert {k: v for k, v in after.items() if k[0] == "knn-5"} == before


def test_ingest_checks_each_spool_file_on_its_own(workspace, example_repo, tmp_path):
    """Spool files that the worker could not have written are quarantined with their reason, their pairs
    recorded FAILED at stage persist; the valid one is ingested; a second ingest adds nothing."""
    bundle = tmp_path / "bundle"
    rendered = workspace.json("render", "--repo", str(example_repo), "--all", "--models", "logreg", "--out",
                              str(bundle))
    manifest = json.loads((bundle / "manifest.json").read_text())
    pairs = [p for t in manifest["tasks"] for p in t["pairs"]]
    assert len(pairs) == 4 and rendered["pairs"] == 4

    def result(pair, **changes):
        base = {"pair_key": pair["key"], "model": "forged-model", "benchmark": pair["benchmark"], "status": "ok",
                "state": "COMPLETED", "stage": None, "reason": None, "score_ceiled": 0.5, "score_raw": 0.5,
                "ceiling": None, "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:01:00+00:00",
                "attempt": 1, "job_id": "1", "node": "n"}
        base.update(changes)
        return base

    spool = bundle / "spool"
    (spool / f"{pairs[0]['key']}.json").write_text(json.dumps(result(pairs[0])))
    (spool / f"{pairs[1]['key']}.json").write_text(json.dumps(result(pairs[1], score_ceiled="0.9")))
    (spool / f"{pairs[2]['key']}.json").write_text(  # valid in every field but one: a time in the future
        json.dumps(result(pairs[2], ended_at="2099-01-01T00:00:00+00:00")))
    (spool / f"{pairs[3]['key']}.json").write_text('{"pair_key": "' + pairs[3]["key"] + '", "score_ceiled": NaN}')
    (spool / ("f" * 32 + ".json")).write_text(json.dumps(result({"key": "f" * 32, "benchmark": "x"})))
    first = workspace.json("ingest", str(bundle))
    assert (first["scores"], first["failures"]) == (1, 3)
    quarantined = sorted(p.name for p in (bundle / "quarantine").glob("*.json"))
    assert len(quarantined) == 4
    reasons_of = {p.name[:-len(".json.reason")]: p.read_text().strip()
                  for p in (bundle / "quarantine").glob("*.reason")}
    assert reasons_of == {pairs[1]["key"]: "score is not a finite number",
                          pairs[2]["key"]: "ended_at 2099-01-01T00:00:00+00:00 is in the future",
                          pairs[3]["key"]: "NaN is not a number",
                          "f" * 32: "no pair of this run has that key"}
    board = workspace.json("leaderboard")
    assert [(r["model"], r["score"]) for r in board] == [("logreg", 0.5)]  # identity from the manifest, not the file
    again = workspace.json("ingest", str(bundle))
    assert (again["scores"], again["failures"]) == (0, 0) and again["duplicates"] == 1
    status = workspace.json("status", rendered["run_id"])
    reasons = [p["reason"] for p in status["jobs"] if p["state"] == "FAILED"]
    assert len(reasons) == 3 and all(r.startswith("its result file was rejected") for r in reasons), status
    # a folder that is not a bundle is refused, not silently "ingested"
    proc = workspace.cli("ingest", str(tmp_path))
    assert proc.returncode == 2 and "not a run bundle" in proc.stderr and "Traceback" not in proc.stderr


def test_a_plugin_moved_to_a_new_folder_keeps_its_id_and_the_move_is_recorded(workspace, example_repo):
    """knn-5 is scored from folder knn; the folder is renamed (and edited): the id moves with it (a warning
    says so), it is not refused as a take-over, and once scored from there its row follows the new folder."""
    import sqlite3

    first = workspace.json("run", "--repo", str(example_repo), "--all", "--models", "knn-5",
                           "--benchmarks", "iris-accuracy")
    assert first["states"] == {"COMPLETED": 1}
    subprocess.run(["git", "-C", str(example_repo), "mv", "sklearn_scores/models/knn",
                    "sklearn_scores/models/knn_moved"], check=True)
    moved = example_repo / "sklearn_scores/models/knn_moved/__init__.py"
    moved.write_text(moved.read_text() + "\n# moved\n")  # changed too, so that it is scored again
    commit_all(example_repo, "move knn")
    proc = workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "knn-5", "--benchmarks",
                         "iris-accuracy", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["states"] == {"COMPLETED": 1}
    assert "model id 'knn-5' moved from models/knn (gone) to models/knn_moved" in proc.stderr
    with sqlite3.connect(workspace.state / "local.db") as db:
        assert db.execute("select plugin from models where identifier = 'knn-5'").fetchall() == [("knn_moved",)]


def test_a_benchmark_that_leaves_work_behind_after_scoring_still_completes(workspace, example_repo):
    """Once the benchmark's side has reported its score, the pair ends there: a thread the plugin left running and
    an atexit handler that never returns cannot hold it to its time limit (the side ends with os._exit), and a
    closed standard output does not turn its exit into a failure."""
    write(example_repo, "sklearn_scores/benchmarks/lingers/__init__.py",
          "import atexit, threading, time\nfrom sklearn_scores import benchmark_registry\n\n"
          "class Bench:\n    def __call__(self, model):\n"
          "        threading.Thread(target=time.sleep, args=(600,)).start()\n"
          "        atexit.register(time.sleep, 600)\n        return 0.5\n\n"
          "benchmark_registry['lingers'] = Bench\n")
    write(example_repo, "sklearn_scores/benchmarks/lingers/requirements.txt", "scikit-learn>=1.3\n")
    # and one that closes its standard output: Python's own exit skips a closed stream, so does ours
    write(example_repo, "sklearn_scores/benchmarks/closes_stdout/__init__.py",
          "import sys\nfrom sklearn_scores import benchmark_registry\n\n"
          "class Bench:\n    def __call__(self, model):\n        print('bye')\n        sys.stdout.close()\n"
          "        return 0.5\n\nbenchmark_registry['closes-stdout'] = Bench\n")
    write(example_repo, "sklearn_scores/benchmarks/closes_stdout/requirements.txt", "scikit-learn>=1.3\n")
    commit_all(example_repo, "a benchmark that leaves a thread and an atexit handler behind, one that closes stdout")
    workspace.env["SCORE_PLUGINS_PAIR_TIMEOUT"] = "60"
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg")
    assert {p["benchmark"]: (p["state"], p["score"]) for p in result["pairs"]} == {
        "lingers": ("COMPLETED", 0.5), "closes-stdout": ("COMPLETED", 0.5)}, result["pairs"]
