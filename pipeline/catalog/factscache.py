"""Facts cached across runs in the state folder: each file's facts by (kind, git blob id), and each plugin folder's
reading by (path, git tree id). A blob or a tree never changes, so a warm `detect` reads only what the change added,
and builds the catalog from the folders' cached readings without walking the folders that did not change.

Versioning lives here, in one place: every entry is stored under a folder named for `VERSION`, the Python version
(ast and the standard-library list depend on it) and a fingerprint of the code that computes facts (the catalog
package, the YAML reader, environment and resource parsing). A change to that code, or a bump of `VERSION` (a new
fact field, say), starts a fresh cache; an old folder is removed when a new one is written.

Blob facts are sharded by the first two hex digits of the id (256 small JSON files), so a warm run loads only the
shards of the blobs it needs; plugin readings are one JSON file, read whole (every folder's reading is used).
Writes are atomic (a temporary file renamed over the old one) and merge what another process wrote meanwhile; a
damaged or unreadable cache is only a slower run, and a read-only state folder is never an error."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from pipeline.atomic import write_atomically

VERSION = 9  # bump when what is stored changes shape (a new fact field, a new kind; 9: `construction` facts, parents)
MAX_PLUGIN_ENTRIES = 50_000  # readings kept across runs; past it, those this run did not use are dropped
_ROOT = Path(__file__).resolve().parents[2]
_CODE = [*sorted((_ROOT / "pipeline/catalog").glob("*.py")), _ROOT / "pipeline/safe_yaml.py",  # with resources.py
         _ROOT / "pipeline/tiers.py", _ROOT / "pipeline/units.py", _ROOT / "envs/conda.py",
         _ROOT / "pipeline/bigints.py"]


def fingerprint() -> str:
    """The version folder's name: VERSION, the interpreter's version, and the code that computes facts."""
    digest = hashlib.sha256()
    for path in _CODE:
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError:
            digest.update(path.name.encode() + b"\0missing")
    return f"facts-v{VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-{digest.hexdigest()[:12]}"


# Taken when this module is imported, with the rest of the catalog's code: a process keeps the name of the code it
# runs even if newer code is installed while it works.
FINGERPRINT = fingerprint()


class FactsCache:
    """Blob facts and plugin readings under `folder` (None: nothing is kept, every run reads everything)."""

    def __init__(self, folder: Path | None):
        self.root = folder
        self.folder = folder / FINGERPRINT if folder is not None else None
        self._shards: dict[str, dict[str, dict]] = {}
        self._dirty: set[str] = set()
        self._plugins: dict[str, dict] | None = None
        self._plugins_added = False
        self._used: set[str] = set()

    # -- blob facts ---------------------------------------------------------------------------------------------
    def get(self, kind: str, sha: str) -> dict | None:
        return self._shard(sha[:2]).get(f"{kind}:{sha}")

    def put(self, kind: str, sha: str, facts: dict) -> None:
        self._shard(sha[:2])[f"{kind}:{sha}"] = facts
        self._dirty.add(sha[:2])

    def _shard(self, name: str) -> dict[str, dict]:
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = self._read(f"{name}.json")
        return shard

    # -- plugin readings ----------------------------------------------------------------------------------------
    def plugin(self, key: str) -> dict | None:
        if self._plugins is None:
            self._plugins = self._read("plugins.json")
        found = self._plugins.get(key)
        if found is not None:
            self._used.add(key)
        return found

    def put_plugin(self, key: str, reading: dict) -> None:
        if self._plugins is None:
            self._plugins = self._read("plugins.json")
        self._plugins[key] = reading
        self._used.add(key)
        self._plugins_added = True

    # -- files --------------------------------------------------------------------------------------------------
    def _read(self, name: str) -> dict:
        if self.folder is None:
            return {}
        try:
            data = json.loads((self.folder / name).read_bytes())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # none yet, or damaged: only a slower run

    def save(self) -> None:
        """Write what this run added (merged with what another run wrote meanwhile)."""
        if self.folder is None or not (self._dirty or self._plugins_added):
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name in sorted(self._dirty):
                merged = {**self._read(f"{name}.json"), **self._shards[name]}
                self._write(f"{name}.json", merged)
            if self._plugins_added and self._plugins is not None:
                merged = {**self._read("plugins.json"), **self._plugins}
                if len(merged) > MAX_PLUGIN_ENTRIES:
                    merged = {k: v for k, v in merged.items() if k in self._used}
                self._write("plugins.json", merged)
            self._dirty.clear()
            self._plugins_added = False
            self._remove_old_versions()
        except OSError:
            pass  # a read-only state folder: the next run reads again, nothing is lost

    def _write(self, name: str, data: dict) -> None:
        assert self.folder is not None
        write_atomically(self.folder / name, _json(data), 0o600)

    def _remove_old_versions(self) -> None:
        """Cache folders of other versions or code, and the single-file cache of earlier releases."""
        assert self.root is not None and self.folder is not None
        for old in self.root.glob("facts-v*"):
            if old.is_dir() and old != self.folder:
                shutil.rmtree(old, ignore_errors=True)
        (self.root / "sourcefacts.json").unlink(missing_ok=True)


def _json(data: dict) -> str:
    """`data` as JSON; an entry that cannot be written (a value the reading bounds should have refused, such as an
    integer Python will not print) is left out, so that it is read again next time and the rest is kept."""
    try:
        return json.dumps(data, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        kept = {}
        for key, value in data.items():
            try:
                json.dumps(value)
            except (ValueError, TypeError, RecursionError):
                continue
            kept[key] = value
        return json.dumps(kept, separators=(",", ":"))
