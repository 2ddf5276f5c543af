"""The breakage harness: apply each hand-made breakage (tests/mutations/breakages.py) to the tree, run the one test
that guards it, restore the file whatever happens, and say whether the guard caught it.

What is checked, in this order (issue 39):
1. Every breakage's text is found exactly once in its file, its guard test exists, and the broken file still
   compiles (a breakage that makes a module unimportable would be "caught" by an import error, which proves
   nothing about the guard). A breakage that fails this is reported and counted as a failure; the others still run.
2. Every guard passes on the unbroken tree: read from the suite's own JUnit XML when given (`--baseline FILE`,
   what `scripts/test` passes after the whole suite), else the guard is run once unbroken here. A guard that is red
   unbroken is a failure, and its breakages are not applied (a red guard proves nothing).
3. Each breakage is applied and its guard run with `pytest -x --junitxml`. It is caught only when pytest exits 1 and
   the report holds a `<failure>` (the test's own call raised: an assertion, or an exception of the code under
   test), not an `<error>` (a fixture or set-up failed), not a collection error (exit 2-5), and not an
   ImportError/SyntaxError raised in the test.

The file is restored byte for byte with its old modification time on the way out of the block that broke it
(Ctrl-C, SIGTERM and SIGHUP are turned into an exception first), and a journal (`.breakage-applied.json`) lets the next start restore it
after a SIGKILL. Exit status: 0 every breakage caught; 1 one was not caught, could not be applied, or its guard
was red unbroken; 2 usage; 3 a previous run left a file broken that cannot be restored safely.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOURNAL = ".breakage-applied.json"  # in the tree's top folder (ignored by git)
GUARD_TIMEOUT = int(os.environ.get("BREAKAGE_GUARD_TIMEOUT", "900"))  # seconds a guard may run
NOT_PROOF = ("ImportError", "ModuleNotFoundError", "SyntaxError", "IndentationError")


@dataclass(frozen=True)
class Breakage:
    name: str
    path: str  # file under the repository root
    old: str  # exact text, found exactly once
    new: str
    test: str  # pytest node id that must fail


@dataclass
class Outcome:
    """What one pytest run of a guard said."""

    returncode: int
    passed: int = 0
    failures: list[str] = field(default_factory=list)  # the first line of each <failure> message
    errors: list[str] = field(default_factory=list)  # <error>: set-up, teardown or collection
    skipped: int = 0
    seconds: float = 0.0
    tail: str = ""  # the end of pytest's output, for a human when the outcome is odd

    @property
    def green(self) -> bool:
        return self.returncode == 0 and self.passed > 0 and not (self.failures or self.errors or self.skipped)

    def verdict(self) -> tuple[bool, str]:
        """(caught, why) for a run against the broken code."""
        if self.returncode == 1 and self.failures and not self.errors:
            proofless = [f for f in self.failures if f.split(":")[0].split(".")[-1] in NOT_PROOF]
            if proofless:
                return False, f"red on an import/syntax error only: {proofless[0]}"
            return True, f"red: {self.failures[0]}"
        if self.errors:
            return False, f"an error, not a failure of the test (exit {self.returncode}): {self.errors[0]}"
        if self.returncode == 0:
            return False, "still green"
        return False, f"pytest exit {self.returncode} without a failing test (a set-up or usage error)"


class Interrupted(BaseException):
    """SIGTERM or SIGHUP reached the harness: unwind (restoring the file) and stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def problem(breakage: Breakage, root: Path = ROOT) -> str | None:
    """Why `breakage` cannot be applied as written, or None."""
    path = root / breakage.path
    if not path.is_file():
        return f"{breakage.path} does not exist"
    text = path.read_text()
    found = text.count(breakage.old)
    if found != 1:
        return f"its text is found {found} times in {breakage.path} (must be exactly once)"
    if breakage.old == breakage.new:
        return "its replacement is the same text"
    test_file, _, function = breakage.test.partition("::")
    guard = root / test_file
    if not guard.is_file() or not function or \
            re.search(rf"^(?:async )?def {re.escape(function)}\(", guard.read_text(), re.M) is None:
        return f"its guard {breakage.test} does not exist"
    if path.suffix == ".py":
        try:
            compile(text.replace(breakage.old, breakage.new), str(path), "exec")
        except SyntaxError as exc:
            return f"the broken {breakage.path} does not compile ({exc.msg}, line {exc.lineno})"
    return None


def _node_matches(node_id: str, classname: str, name: str) -> bool:
    file_part, _, function = node_id.partition("::")
    module = file_part[:-3].replace("/", ".") if file_part.endswith(".py") else file_part
    return classname == module and (name == function or name.startswith(function + "["))


def read_junit(path: Path, node_id: str | None = None) -> Outcome:
    """The outcome of the test cases of `path` (only those of `node_id` when given); returncode left at -1."""
    outcome = Outcome(returncode=-1)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        outcome.errors.append(f"no JUnit report ({exc})")
        return outcome
    for case in root.iter("testcase"):
        if node_id and not _node_matches(node_id, case.get("classname", ""), case.get("name", "")):
            continue
        kinds = {child.tag: child for child in case}
        if "failure" in kinds:
            outcome.failures.append(_first_line(kinds["failure"]))
        if "error" in kinds:
            outcome.errors.append(_first_line(kinds["error"]))
        if "skipped" in kinds:
            outcome.skipped += 1
        if not kinds.keys() & {"failure", "error", "skipped"}:
            outcome.passed += 1
    return outcome


def _first_line(element: ET.Element) -> str:
    text = element.get("message") or (element.text or "")
    return (text.strip().splitlines() or [""])[0][:240]


def run_guard(node_id: str, root: Path = ROOT) -> Outcome:
    """Run one guard in its own process group (killed whole on an interrupt or a timeout); its JUnit outcome."""
    with tempfile.TemporaryDirectory(prefix="breakage-") as folder:
        report = Path(folder) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                node_id]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no bytecode of the broken file is ever kept
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=GUARD_TIMEOUT)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            _stop(proc)
            output, returncode = f"timed out after {GUARD_TIMEOUT} s", 124
        except BaseException:
            _stop(proc)
            raise
        outcome = read_junit(report, node_id) if returncode != 124 else Outcome(returncode)
        outcome.returncode = returncode
        outcome.seconds = time.monotonic() - started
        outcome.tail = (output or "")[-2000:]
        if returncode == 124:
            outcome.errors.append(f"timed out after {GUARD_TIMEOUT} s")
        return outcome


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


class Applied:
    """The breakage applied for the length of a `with` block; the file restored (bytes and mtime) on the way out,
    whatever ends the block. A journal on disk covers a SIGKILL in between."""

    def __init__(self, breakage: Breakage, root: Path = ROOT) -> None:
        self.breakage = breakage
        self.path = root / breakage.path
        self.journal = root / JOURNAL

    def __enter__(self) -> Applied:
        self.original = self.path.read_bytes()
        self.stat = self.path.stat()
        broken = self.original.decode().replace(self.breakage.old, self.breakage.new)
        self.journal.write_text(json.dumps({"path": self.breakage.path, "original": self.original.decode(),
                                            "broken": broken, "mtime_ns": self.stat.st_mtime_ns}))
        try:
            self.path.write_text(broken)
        except BaseException:  # a signal between the write and the `with` block: restored here, not left broken
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.write_bytes(self.original)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))
        self.journal.unlink(missing_ok=True)


def recover(root: Path = ROOT) -> str | None:
    """Restore what a killed harness left broken; a line saying what was done, or raise SystemExit(3)."""
    journal = root / JOURNAL
    if not journal.exists():
        return None
    entry = json.loads(journal.read_text())
    path = root / entry["path"]
    if path.read_text() == entry["broken"]:
        path.write_text(entry["original"])
        os.utime(path, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        journal.unlink()
        return f"restored {entry['path']}, left broken by a harness that was killed"
    if path.read_text() == entry["original"]:
        journal.unlink()
        return None
    print(f"breakages: {JOURNAL} says {entry['path']} was left broken, and it has changed since: restore it "
          "by hand (git diff), then remove the journal", file=sys.stderr)
    raise SystemExit(3)


def main(argv: list[str], breakages: list[Breakage], root: Path = ROOT) -> int:
    baseline: Path | None = None
    names: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--baseline" and args:
            baseline = Path(args.pop(0))
        elif arg in ("-h", "--help"):
            print(__doc__.strip() + "\n\nUsage: tests/mutations/apply.sh [--baseline JUNIT.xml] [NAME ...|all]")
            return 0
        elif arg.startswith("-"):
            print(f"breakages: unknown option {arg}", file=sys.stderr)
            return 2
        else:
            names.append(arg)
    known = {b.name for b in breakages}
    unknown = sorted(set(names) - known - {"all"})
    if unknown:
        print(f"breakages: unknown breakage(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}",
              file=sys.stderr)
        return 2
    chosen = breakages if names in ([], ["all"]) else [b for b in breakages if b.name in names]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    said = recover(root)
    if said:
        print(f"breakages: {said}", flush=True)
    started = time.monotonic()
    failed: list[str] = []

    # 1. every text, before anything runs
    runnable = []
    for breakage in chosen:
        why = problem(breakage, root)
        if why:
            print(f"CANNOT APPLY {breakage.name}: {why}", flush=True)
            failed.append(breakage.name)
        else:
            runnable.append(breakage)

    # 2. every guard green on the unbroken tree
    green: dict[str, bool] = {}
    for test in dict.fromkeys(b.test for b in runnable):
        outcome = read_junit(baseline, test) if baseline else None
        if outcome is not None and (outcome.passed or outcome.failures or outcome.errors or outcome.skipped):
            source = "the suite's report"
            outcome.returncode = 1 if outcome.failures or outcome.errors else 0
        else:
            source = "run unbroken: " + ("not in the suite's report" if baseline else "no suite report given")
            outcome = run_guard(test, root)
            if outcome.green:
                print(f"green unbroken: {test} ({outcome.seconds:.0f} s)", flush=True)
        green[test] = outcome.green
        if not outcome.green:
            why = (outcome.failures or outcome.errors or [f"{outcome.skipped} skipped" if outcome.skipped
                                                          else f"exit {outcome.returncode}"])[0]
            print(f"GUARD RED UNBROKEN {test} ({source}): {why}", flush=True)
            if outcome.tail:
                print(_indent(outcome.tail), flush=True)

    # 3. each breakage against its guard
    for breakage in runnable:
        if not green[breakage.test]:
            print(f"SKIPPED {breakage.name}: its guard is red on the unbroken tree", flush=True)
            failed.append(breakage.name)
            continue
        with Applied(breakage, root):
            outcome = run_guard(breakage.test, root)
        caught, why = outcome.verdict()
        word = "caught" if caught else "NOT CAUGHT"
        print(f"{word} {breakage.name} by {breakage.test} in {outcome.seconds:.0f} s: {why}", flush=True)
        if not caught:
            failed.append(breakage.name)
            print(_indent(outcome.tail), flush=True)
    minutes = (time.monotonic() - started) / 60
    print(f"breakages: {len(chosen) - len(failed)} of {len(chosen)} caught in {minutes:.1f} min"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.strip().splitlines()[-25:])


def cli(argv: list[str], breakages: list[Breakage], root: Path = ROOT) -> int:
    """`main`, with an interrupt (Ctrl-C, SIGTERM, SIGHUP) ending it as 128 + the signal, every file restored."""
    try:
        return main(argv, breakages, root)
    except KeyboardInterrupt:
        print("breakages: interrupted (SIGINT); every file restored", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    except Interrupted as exc:
        print(f"breakages: interrupted ({exc}); every file restored", file=sys.stderr, flush=True)
        return 128 + exc.signum
