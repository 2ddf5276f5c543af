"""No cache another plugin reads is writable by submitter code: a shared package cache is seen by a sandboxed step
through a writable layer of its own, and the shared cache itself only ever changes by what this (trusted) process
moves into it.

The layer is a folder inside the shared cache (`.score-plugins-layers/<random>`, so on the same filesystem)
holding the same tree: folders of the sandboxed user's own, every file a hard link to the shared file (root's,
read-only to everyone else: the sandboxed user can neither write, truncate nor chmod it) or, where a link would let
it write the shared file (no per-pair user: the process is the cache's owner in its user namespace), a copy. The
sandbox binds the layer at the shared cache's path, so tools find their cache where they always did; what they
add, replace or delete lands in the layer only. bubblewrap 0.8 (Debian bookworm) has no overlay mount, and uv
has no read-only cache layer: this is the copy-on-write they would give.

`trusted`: the step ran no submitter code (uv with `--no-build`: it only fetched index pages, metadata and
hash-checked archives), so `merge` moves what it added into the shared cache, owned by root, read-only to others.
A layer of a step that may have run build scripts is removed unmerged: nothing in it can be told from a forgery.
Standard library only (copied into every job bundle with the job package).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time

LAYERS = ".score-plugins-layers"
STALE_SECONDS = 86400.0  # a layer left by a killed step is removed by a later one after a day
SKIPPED = (".lock",)  # the tools' own lock files: made fresh in each layer, never shared or merged
# Files this small are copied, not linked: the tools write some in place (uv's `.git`, `.gitignore` and
# `CACHEDIR.TAG` markers when it opens a cache), which a read-only link would refuse; a copy is the layer's own.
SMALL = 1024


def _root() -> bool:
    return os.getuid() == 0


def _secure(path: str, info: os.stat_result) -> None:
    """A shared file root's and read-only to everyone else (a file planted before this module existed, or by an
    older version that handed the cache to the sandbox user), changed through a descriptor, never a link."""
    if not _root() or (info.st_uid == 0 and not info.st_mode & 0o022):
        return
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o7022)
    finally:
        os.close(fd)


class CacheLayer:
    """`with CacheLayer(shared, uid=..., trusted=...) as layer:` bind `layer.path` at `shared` in the sandbox
    (read-write), run the step, then `layer.merge()` if the step ran no submitter code. The layer is removed on
    exit. `uid`: the sandboxed user (as root), who owns the layer's folders."""

    def __init__(self, shared: str, *, uid: int, trusted: bool) -> None:
        self.shared = os.path.abspath(shared)
        self.uid = uid
        self.trusted = trusted
        self.path = ""
        self.files = 0
        self.linked: set[tuple[int, int]] = set()  # the shared files the layer links to: never merged back

    def __enter__(self) -> "CacheLayer":
        os.makedirs(self.shared, mode=0o755, exist_ok=True)
        info = os.lstat(self.shared)
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(f"the shared cache {self.shared} is not a folder")
        _secure_folder(self.shared, info)
        layers = os.path.join(self.shared, LAYERS)
        try:
            os.mkdir(layers, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(layers)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise OSError(f"{layers} is not a folder only this user can reach: remove it")
        _remove_stale(layers)
        self.path = tempfile.mkdtemp(prefix="layer-", dir=layers)
        os.chmod(self.path, 0o755)
        self._fill()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = ""

    def _own(self, path: str) -> None:
        if _root():
            os.lchown(path, self.uid, 65534)

    def _fill(self) -> None:
        """The shared tree in the layer: folders made new, files linked (or copied), symbolic links recreated."""
        self._own(self.path)
        link = _root() or self.trusted  # as the cache's owner in a user namespace, a link would be writable
        stack = [(self.shared, self.path)]
        while stack:
            src, dst = stack.pop()
            with os.scandir(src) as entries:
                for entry in entries:
                    if (src == self.shared and entry.name == LAYERS) or entry.name in SKIPPED:
                        continue
                    target = os.path.join(dst, entry.name)
                    try:
                        info = entry.stat(follow_symlinks=False)
                        if stat.S_ISDIR(info.st_mode):
                            _secure_folder(entry.path, info)
                            os.mkdir(target, 0o755)
                            self._own(target)
                            stack.append((entry.path, target))
                        elif stat.S_ISREG(info.st_mode):
                            _secure(entry.path, info)
                            self._link_or_copy(entry.path, target, link and info.st_size > SMALL)
                            self.files += 1
                        elif stat.S_ISLNK(info.st_mode):
                            os.symlink(os.readlink(entry.path), target)
                            self._own(target)
                    except FileNotFoundError:  # merged away or replaced meanwhile: the layer goes without it
                        continue

    def _link_or_copy(self, src: str, dst: str, link: bool) -> None:
        if link:
            try:
                os.link(src, dst, follow_symlinks=False)
                info = os.lstat(dst)
                self.linked.add((info.st_dev, info.st_ino))
                return
            except OSError:  # too many links, another filesystem under the cache: a copy instead
                pass
        shutil.copyfile(src, dst, follow_symlinks=False)
        self._own(dst)

    def merge(self) -> int:
        """Move what the (trusted) step added or replaced into the shared cache: root's, read-only to others,
        each file replaced atomically. Returns how many files moved. Deletions are not carried over."""
        if not self.trusted:
            raise PermissionError("a layer in which submitter code may have run is never merged")
        moved = 0
        stack = [(self.path, self.shared)]
        while stack:
            src, dst = stack.pop()
            with os.scandir(src) as entries:
                for entry in entries:
                    if entry.name in SKIPPED or (dst == self.shared and entry.name == LAYERS):
                        continue
                    target = os.path.join(dst, entry.name)
                    try:
                        moved += self._merge_one(entry, target, stack)
                    except OSError:  # a file where a folder is, a vanished entry: left out, never half-moved
                        continue
        return moved

    def _merge_one(self, entry: os.DirEntry, target: str, stack: list) -> int:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            try:
                os.mkdir(target, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(target).st_mode):
                    return 0
            stack.append((entry.path, target))
            return 0
        if stat.S_ISREG(info.st_mode):
            if (info.st_dev, info.st_ino) in self.linked:
                return 0  # a shared file as the layer got it (even if another step has replaced it since)
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if _root():
                    os.fchown(fd, 0, 0)
                os.fchmod(fd, (stat.S_IMODE(os.fstat(fd).st_mode) | 0o444) & 0o755)
            finally:
                os.close(fd)
            os.replace(entry.path, target)
            return 1
        if stat.S_ISLNK(info.st_mode):
            if _root():
                os.lchown(entry.path, 0, 0)
            os.replace(entry.path, target)
            return 1
        return 0


def _secure_folder(path: str, info: os.stat_result) -> None:
    """A shared folder root's, writable by root alone (others could otherwise add to what every step reads)."""
    if _root() and (info.st_uid != 0 or info.st_mode & 0o022):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fchown(fd, 0, 0)
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o7022)
        finally:
            os.close(fd)


def _remove_stale(layers: str) -> None:
    """Layers of steps that were killed before they could remove their own."""
    now = time.time()
    with os.scandir(layers) as entries:
        for entry in entries:
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue
