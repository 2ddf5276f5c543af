"""The breakage harness itself (tests/mutations/harness.py, issue 39), on a toy tree of its own with real pytest runs:
what counts as caught (a failure of the test's call, never a set-up, collection or import error), a text that is
missing, repeated or does not compile reported without ending the run, a guard red on the unbroken tree, files
restored byte for byte with their modification time (also after SIGTERM, and after a SIGKILL by the next start).
And every breakage the project lists can be applied to today's tree: a stale one fails here, in the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.mutations.breakages import BREAKAGES
from tests.mutations.harness import JOURNAL, Breakage, Outcome, main, problem, read_junit, recover

CALC = "VALUE = 1\n\n\ndef double(x):\n    return 2 * x\n"
TESTS = textwrap.dedent("""\
    import os, time
    import pytest
    import calc

    def test_doubles():
        assert calc.double(2) == 4

    def test_weak():
        assert calc.double(0) == 0

    @pytest.fixture
    def four():
        assert calc.double(2) == 4  # in set-up: an error, not a failure

    def test_in_setup(four):
        pass

    def test_imports():
        from calc import VALUE
        assert VALUE

    def test_red():
        assert calc.double(1) == 3

    def test_slow():
        open(os.environ["GUARD_STARTED"], "w").write(str(os.getpid()))
        time.sleep(120)
    """)


def toy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "calc.py").write_text(CALC)
    (root / "test_calc.py").write_text(TESTS)
    (root / "test_collect.py").write_text("from calc import VALUE\n\ndef test_value():\n    assert VALUE\n")
    old = time.time() - 3600
    os.utime(root / "calc.py", (old, old))  # an old mtime, to see it kept
    return root


def breakage(name: str, test: str, old: str = "    return 2 * x\n", new: str = "    return 3 * x\n") -> Breakage:
    return Breakage(name, "calc.py", old, new, test)


def test_only_a_failing_call_is_caught_and_every_other_outcome_fails_the_harness(tmp_path, capsys):
    root = toy(tmp_path)
    before = (root / "calc.py").stat().st_mtime_ns
    cases = [
        breakage("caught", "test_calc.py::test_doubles"),
        breakage("green", "test_calc.py::test_weak"),
        breakage("setup-error", "test_calc.py::test_in_setup"),
        breakage("import-error", "test_calc.py::test_imports", "VALUE = 1\n", "VALU = 1\n"),
        breakage("collection-error", "test_collect.py::test_value", "VALUE = 1\n", "VALU = 1\n"),
        breakage("missing-text", "test_calc.py::test_doubles", "    return 4 * x\n"),
        breakage("twice", "test_calc.py::test_doubles", "x", "y"),
        breakage("does-not-compile", "test_calc.py::test_doubles", new="    return 2 *\n"),
        breakage("no-such-guard", "test_calc.py::test_renamed"),
        breakage("red-unbroken", "test_calc.py::test_red"),
    ]
    assert main(["all"], cases, root) == 1
    out = capsys.readouterr().out
    lines = {(line.split()[1] if line.startswith(("caught", "SKIPPED")) else line.split()[2]).rstrip(":"): line
             for line in out.splitlines() if line.startswith(("caught", "NOT CAUGHT", "CANNOT APPLY", "SKIPPED"))}
    assert lines["caught"].startswith("caught caught by test_calc.py::test_doubles") and "red: assert 6 == 4" in \
        lines["caught"], out
    assert "still green" in lines["green"]
    assert "an error, not a failure of the test" in lines["setup-error"] and "failed on setup" in \
        lines["setup-error"], out
    assert "red on an import/syntax error only: ImportError" in lines["import-error"], out
    assert "NOT CAUGHT collection-error" in lines["collection-error"] and "pytest exit 4 without a failing test" in \
        lines["collection-error"], out
    assert "found 0 times in calc.py" in lines["missing-text"] and "found 2 times in calc.py" in lines["twice"]
    assert "the broken calc.py does not compile" in lines["does-not-compile"]
    assert "its guard test_calc.py::test_renamed does not exist" in lines["no-such-guard"]
    assert "GUARD RED UNBROKEN test_calc.py::test_red" in out and "SKIPPED red-unbroken" in lines["red-unbroken"]
    assert out.strip().splitlines()[-1].startswith("breakages: 1 of 10 caught in ")
    assert (root / "calc.py").read_text() == CALC and (root / "calc.py").stat().st_mtime_ns == before
    assert not (root / JOURNAL).exists()


def test_the_suites_report_stands_for_the_unbroken_run(tmp_path, capsys):
    """With `--baseline`, a guard the suite's JUnit report shows green is not run unbroken again; one it shows red
    fails the harness, and one it does not list is run unbroken here."""
    root = toy(tmp_path)
    report = tmp_path / "suite.xml"
    report.write_text('<testsuites><testsuite><testcase classname="test_calc" name="test_doubles"/>'
                      '<testcase classname="test_calc" name="test_weak"><failure message="AssertionError: x"/>'
                      "</testcase></testsuite></testsuites>")
    cases = [breakage("caught", "test_calc.py::test_doubles"), breakage("weak", "test_calc.py::test_weak"),
             breakage("unlisted", "test_calc.py::test_doubles", "VALUE = 1\n", "VALUE = 1.0\n")]
    cases[2] = Breakage("unlisted", "calc.py", "    return 2 * x\n", "    return x\n", "test_collect.py::test_value")
    assert main(["--baseline", str(report), "all"], cases, root) == 1
    out = capsys.readouterr().out
    assert "green unbroken: test_calc.py::test_doubles" not in out  # read from the report
    assert "GUARD RED UNBROKEN test_calc.py::test_weak (the suite's report): AssertionError: x" in out
    assert "green unbroken: test_collect.py::test_value" in out  # not in the report: run here
    assert "caught caught by" in out and "NOT CAUGHT unlisted" in out and "SKIPPED weak" in out


JUNIT = """<testsuites><testsuite>
<testcase classname="tests.test_x" name="test_p[a]"/>
<testcase classname="tests.test_x" name="test_p[b]"><failure message="AssertionError: assert 1 == 2">...</failure>
</testcase>
<testcase classname="tests.test_x" name="test_pe"/>
<testcase classname="tests.test_x" name="test_e"><error message="failed on setup with &quot;OSError: gone&quot;"/>
</testcase>
<testcase classname="tests.test_x" name="test_s"><skipped message="no"/></testcase>
</testsuite></testsuites>"""


def test_junit_outcomes_are_read_per_guard(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    outcome = read_junit(report, "tests/test_x.py::test_p")  # both parameters, not test_pe
    assert (outcome.passed, outcome.failures) == (1, ["AssertionError: assert 1 == 2"])
    assert read_junit(report, "tests/test_x.py::test_e").errors == ['failed on setup with "OSError: gone"']
    assert read_junit(report, "tests/test_x.py::test_s").skipped == 1
    assert read_junit(tmp_path / "none.xml", "tests/test_x.py::test_p").errors[0].startswith("no JUnit report")
    assert Outcome(1, failures=["AssertionError: x"]).verdict() == (True, "red: AssertionError: x")
    assert not Outcome(1, failures=["x"], errors=["failed on teardown"]).verdict()[0]
    assert not Outcome(1, failures=["ModuleNotFoundError: No module named 'y'"]).verdict()[0]
    assert not Outcome(4).verdict()[0] and not Outcome(0, passed=1).verdict()[0]


def test_ctrl_c_and_sigterm_restore_the_file_and_a_sigkill_is_repaired_by_the_next_start(tmp_path):
    """The guard is running against the broken file when the harness is stopped: Ctrl-C (SIGINT) or SIGTERM ends the
    guard's whole process group, restores the file (bytes and mtime) and exits 130 / 143; after a SIGKILL the file
    is still broken, and the journal lets the next start restore it."""
    root = toy(tmp_path)
    before = (root / "calc.py").stat().st_mtime_ns
    report = tmp_path / "suite.xml"  # the guard green in the suite: no unbroken run here, straight to the breakage
    report.write_text('<testsuites><testcase classname="test_calc" name="test_slow"/></testsuites>')
    started = tmp_path / "guard-started"
    script = ("import sys; from pathlib import Path; from tests.mutations.harness import Breakage, cli; "
              "sys.exit(cli(['--baseline', sys.argv[1], 'all'], [Breakage('slow', 'calc.py', '    return 2 * x\\n', "
              "'    return 3 * x\\n', 'test_calc.py::test_slow')], Path(sys.argv[2])))")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        started.unlink(missing_ok=True)
        harness = subprocess.Popen([sys.executable, "-c", script, str(report), str(root)], cwd=ROOT,
                                   env={**os.environ, "GUARD_STARTED": str(started)}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,  # Ctrl-C as in a terminal (not ignored)
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        guard = int(wait_for(lambda: started.exists() and started.read_text(), 60, "the guard to start"))
        assert (root / "calc.py").read_text() != CALC and (root / JOURNAL).exists()  # broken while it runs
        harness.send_signal(sig)
        out, err = harness.communicate(timeout=60)
        if sig != signal.SIGKILL:
            name = signal.Signals(sig).name
            assert harness.returncode == 128 + sig and f"interrupted ({name}); every file restored" in err, (out, err)
            wait_for(lambda: not os.path.exists(f"/proc/{guard}"), 30, "the guard's process group to end")
            assert not (root / JOURNAL).exists()
        else:
            os.kill(guard, signal.SIGKILL)  # its own session: nothing ended it
            assert harness.returncode == -signal.SIGKILL and (root / "calc.py").read_text() != CALC
            assert recover(root) == "restored calc.py, left broken by a harness that was killed"
            assert recover(root) is None and not (root / JOURNAL).exists()
        assert (root / "calc.py").read_text() == CALC and (root / "calc.py").stat().st_mtime_ns == before


def test_every_listed_breakage_applies_to_this_tree():
    """Fast, in the suite: each breakage of tests/mutations/breakages.py finds its text exactly once, the broken
    file compiles, and its guard exists (the harness itself runs after the suite, in scripts/test)."""
    names = [b.name for b in BREAKAGES]
    assert len(set(names)) == len(names), "breakage names repeat"
    assert {b.name: problem(b) for b in BREAKAGES if problem(b)} == {}
