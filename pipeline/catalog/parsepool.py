"""Python files parsed by worker processes, for a cold read of a large repository (`reading`).

Each worker is a fresh, isolated interpreter (`-I -S`) running `pipeline.catalog.parseworker`, which imports only
`pyfacts` (`sourcefacts`, `construction`) and the standard library: no fork of the coordinator (which may hold
threads and sockets), no re-import of its `__main__`. Blobs go to whichever worker is free (one feeder thread per worker takes the next blob
from a shared queue), results come back as JSON lines (one reader thread per worker, so no pipe can fill and
block). A worker that dies on a file leaves its unanswered files to be parsed one by one in fresh workers; a file
whose worker dies alone is refused for this run (not cached: the cause may be the node, not the file). When no
worker can start at all, the files are parsed in the coordinator, as for a small read."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# -I -S: no site-packages, no environment variables, no user site (sourcefacts needs the standard library only)
_COMMAND = [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
            "from pipeline.catalog.parseworker import main; main()"]
_DONE = object()


class _Worker:
    def __init__(self, work: queue.Queue):
        self.proc = subprocess.Popen(_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.sent: list[str] = []
        self.results: dict[str, dict] = {}
        self.feeder = threading.Thread(target=self._feed, args=(work,), daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.feeder.start()
        self.reader.start()

    def _feed(self, work: queue.Queue) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        alive = True
        while True:
            item = work.get()
            if item is _DONE:
                work.put(_DONE)  # for the other feeders
                break
            sha, data, kinds = item
            self.sent.append(sha)  # a dead worker's share is still taken, so that `submit` never blocks
            if alive:
                try:
                    stdin.write(b"%s %d %s\n" % (sha.encode(), len(data), ",".join(kinds).encode()))
                    stdin.write(data)
                except OSError:  # BrokenPipeError: the worker died; what it did not answer is parsed again
                    alive = False
        try:
            stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                sha, facts = json.loads(line)
            except ValueError:
                break
            self.results[sha] = facts

    def finish(self) -> None:
        self.feeder.join()
        self.reader.join()
        self.proc.wait()


class PythonPool:
    """`submit` (sha, contents, Python kinds) of Python files while reading; `results` once every file is
    submitted."""

    def __init__(self, workers: int):
        self.work: queue.Queue = queue.Queue(maxsize=4 * workers)
        self.workers: list[_Worker] = []
        try:
            for _ in range(workers):
                self.workers.append(_Worker(self.work))
        except OSError:
            self.close()
            raise

    def submit(self, sha: str, data: bytes, kinds: list[str]) -> None:
        self.work.put((sha, data, kinds))

    def results(self) -> tuple[dict[str, dict[str, dict]], list[str]]:
        """sha -> {kind: facts} of the submitted files, and those a dead worker left unanswered (to
        `parse_alone`)."""
        self.work.put(_DONE)
        found: dict[str, dict[str, dict]] = {}
        unanswered: list[str] = []
        for worker in self.workers:
            worker.finish()
            found.update(worker.results)
            unanswered += [sha for sha in worker.sent if sha not in worker.results]
        return found, unanswered

    def close(self) -> None:
        """End every worker and its threads (after an error in the caller, or once `results` has them all)."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
        try:
            self.work.put(_DONE, timeout=5)  # the feeders still waiting for work end
        except queue.Full:
            pass
        for worker in self.workers:
            worker.proc.wait()
            worker.feeder.join(timeout=5)
            worker.reader.join(timeout=5)


def parse_alone(sha: str, data: bytes, kinds: list[str] | tuple[str, ...] = ("py",)) -> dict[str, dict] | None:
    """One file in a worker of its own: {kind: facts}, or None when that worker dies too."""
    header = b"%s %d %s\n" % (sha.encode(), len(data), ",".join(kinds).encode())
    proc = subprocess.run(_COMMAND, input=header + data, capture_output=True)
    for line in proc.stdout.splitlines():
        try:
            answered, facts = json.loads(line)
        except ValueError:
            continue
        if answered == sha:
            return facts
    return None
