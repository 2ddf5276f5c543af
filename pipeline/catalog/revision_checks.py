"""Warnings about what the user may not have meant: revisions given the wrong way round (the change then reads
as a removal), and uncommitted edits in plugin folders (only committed code is scored)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.catalog import gitrepo


def _is_ancestor(repo: Path, older: str, newer: str) -> bool:
    proc = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", older, newer],
                          capture_output=True)
    return proc.returncode == 0


def reversed_revisions(repo: Path, base: str, head: str, base_arg: str, head_arg: str) -> list[dict]:
    """A warning when --base is a descendant of --head (swapped revisions)."""
    if base == head or not _is_ancestor(repo, head, base):
        return []
    return [{"file": "--base", "line": 0, "severity": "warning",
             "message": f"--base {base_arg} is newer than --head {head_arg} (revisions reversed?): what the newer "
                        f"commit added reads as removed; did you mean --base {head_arg} --head {base_arg}?"}]


def uncommitted_edits(repo: Path, domain_root: str, head_arg: str) -> list[dict]:
    """A warning when the work tree has edits under the plugins' folder that `HEAD` does not hold."""
    if head_arg != "HEAD":
        return []
    try:
        out = gitrepo.git(repo, "status", "--porcelain", "--untracked-files=all", "--", domain_root).decode()
    except Exception:  # noqa: BLE001 - a bare repository has no work tree: nothing uncommitted
        return []
    paths = [line[3:] for line in out.splitlines() if line.strip()]
    if not paths:
        return []
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return [{"file": paths[0], "line": 0, "severity": "warning",
             "message": f"uncommitted edits in plugin folders are not scored (only committed code is): {shown}"}]
