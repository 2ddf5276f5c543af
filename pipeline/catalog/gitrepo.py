"""Read a git repository without a checkout: revisions, diffs, trees and blobs.

Every call passes arguments as a list (never through a shell), so revision names
and paths from submitters cannot inject anything.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.errors import BadInput


def git(repo: Path | str, *args: str, input: bytes | None = None) -> bytes:
    """Run one git command in `repo`; a failure becomes `BadInput` with git's own message."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=input,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:  # git itself missing
        raise BadInput("git is not installed") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()
        raise BadInput(f"git {args[0]} failed in {repo}: {message}")
    return proc.stdout


def ensure_repository(repo: Path | str) -> Path:
    """The repository's top folder as an absolute path (so `--repo .` works from a subfolder and a run records
    where it can be found from anywhere), or a clear error when it is not a git repository."""
    path = Path(repo)
    if not path.exists():
        raise BadInput(f"{path} does not exist")
    try:
        git(path, "rev-parse", "--git-dir")
    except BadInput as exc:
        raise BadInput(f"{path} is not a git repository") from exc
    try:
        top = git(path, "rev-parse", "--show-toplevel").decode().strip()
    except BadInput:  # a bare repository has no work tree: the folder itself
        top = ""
    return Path(top) if top else path.resolve()


def resolve(repo: Path | str, rev: str) -> str:
    """Full commit id of `rev`; an unknown revision is bad input."""
    if not rev or rev.startswith("-"):
        raise BadInput(f"invalid revision {rev!r}")
    try:
        out = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except BadInput as exc:
        raise BadInput(f"unknown revision {rev!r} in {repo}") from exc
    return out.decode().strip()


@dataclass(frozen=True)
class FileChange:
    """One entry of `git diff --name-status`: A, M, D, R (rename: `old_path` set), C, T."""

    status: str
    path: str
    old_path: str | None = None


def changed_files(repo: Path | str, base: str, head: str) -> list[FileChange]:
    """Files that differ between two commits, with renames detected."""
    raw = git(repo, "diff", "--name-status", "-z", "-M", base, head, "--")
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    changes: list[FileChange] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in ("R", "C"):
            changes.append(FileChange(status, fields[i + 2], fields[i + 1]))
            i += 3
        else:
            changes.append(FileChange(status, fields[i + 1]))
            i += 2
    return changes


@dataclass(frozen=True)
class TreeEntry:
    """One object below a tree: `kind` is 'blob' or 'tree'; `size` in bytes for a blob listed with sizes
    (-1: not asked, or a tree; -2: the object is missing from the repository)."""

    kind: str
    sha: str
    path: str
    size: int = -1


def list_tree(repo: Path | str, rev: str, under: str = "", sizes: bool = False) -> list[TreeEntry]:
    """Every blob and sub-tree below `under` at `rev`, in one git call (with each blob's size: `sizes`)."""
    args = ["ls-tree", "-r", "-t", "-z", *(["-l"] if sizes else []), rev]
    if under:
        args += ["--", under]
    raw = git(repo, *args).decode("utf-8", "surrogateescape")
    entries = []
    for record in raw.split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        if sizes:
            _mode, kind, sha, size = meta.split()
            entries.append(TreeEntry(kind, sha, path, int(size) if size.isdigit() else -1 if size == "-" else -2))
        else:
            _mode, kind, sha = meta.split()
            entries.append(TreeEntry(kind, sha, path))
    return entries


def list_top(repo: Path | str, rev: str) -> list[TreeEntry]:
    """The entries at the top of the tree at `rev`, blobs with their sizes (one level, one git call)."""
    entries = []
    for record in git(repo, "ls-tree", "-z", "-l", rev).decode("utf-8", "surrogateescape").split("\0"):
        if record:
            meta, path = record.split("\t", 1)
            _mode, kind, sha, size = meta.split()
            entries.append(TreeEntry(kind, sha, path, int(size) if size.isdigit() else -1 if size == "-" else -2))
    return entries


def list_tree_level(repo: Path | str, rev: str, folder: str) -> list[TreeEntry]:
    """The entries directly inside `folder` at `rev` (one level, not recursive)."""
    raw = git(repo, "ls-tree", "-z", rev, "--", folder.rstrip("/") + "/").decode("utf-8", "surrogateescape")
    entries = []
    for record in raw.split("\0"):
        if record:
            meta, path = record.split("\t", 1)
            _mode, kind, sha = meta.split()
            entries.append(TreeEntry(kind, sha, path))
    return entries


def read_blobs(repo: Path | str, shas: list[str]) -> dict[str, bytes]:
    """Contents of many blobs through one `git cat-file --batch` process."""
    unique = list(dict.fromkeys(shas))
    if not unique:
        return {}
    out = git(repo, "cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in unique:
        header_end = out.index(b"\n", pos)
        _sha, _kind, size = out[pos:header_end].decode().split()
        start = header_end + 1
        blobs[sha] = out[start : start + int(size)]
        pos = start + int(size) + 1
    return blobs


def iter_blobs(repo: Path | str, shas: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(sha, contents) of each blob, in order, through one `git cat-file --batch` process, one blob in memory at a
    time (None: the object is missing). The ids are written by a thread while contents are read, so neither pipe
    can fill and block the other."""
    unique = list(dict.fromkeys(shas))
    if not unique:
        return
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=errors)
        except FileNotFoundError as exc:
            raise BadInput("git is not installed") from exc
        assert proc.stdin is not None and proc.stdout is not None

        def feed() -> None:
            try:
                proc.stdin.write(("\n".join(unique) + "\n").encode())  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                pass  # git ended early: its message and exit status say why

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            for sha in unique:
                header = proc.stdout.readline()
                if not header:
                    break
                fields = header.split()
                if len(fields) == 2 and fields[1] == b"missing":
                    yield sha, None
                    continue
                size = int(fields[2])
                data = proc.stdout.read(size)
                proc.stdout.read(1)  # the newline after the contents
                yield sha, data
            else:
                proc.stdout.close()
                proc.wait()
                return
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            writer.join()
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip()
        raise BadInput(f"git cat-file failed in {repo}: {message or f'exit status {proc.returncode}'}")


def first_authors(repo: Path | str, rev: str, under: str) -> dict[str, str]:
    """Map each file path below `under` to the email of the author who added it (oldest add wins)."""
    raw = git(
        repo, "log", "--reverse", "--diff-filter=A", "--name-only", "-z",
        "--format=%x01%ae", rev, "--", under,
    ).decode("utf-8", "surrogateescape")
    authors: dict[str, str] = {}
    email = ""
    for token in raw.split("\0"):
        token = token.strip("\n")
        if not token:
            continue
        if token.startswith("\x01"):
            head, _, rest = token[1:].partition("\n")
            email = head.strip()
            token = rest.strip("\n")
            if not token:
                continue
        authors.setdefault(token, email)
    return authors


def export_tree(repo: Path | str, rev: str, under: str | list[str], dest: Path) -> None:
    """Write the files below `under` (one path or several) at `rev` into `dest` (git archive | tar, no checkout)."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = [under] if isinstance(under, str) else list(under)
    archive = git(repo, "archive", "--format=tar", rev, "--", *[f":(literal){p}" for p in paths])
    proc = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, capture_output=True)
    if proc.returncode != 0:
        raise BadInput(f"could not export {', '.join(paths)[:200]} at {rev}: {proc.stderr.decode(errors='replace')}")
