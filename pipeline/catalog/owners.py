"""Who wrote a plugin folder: commit authors read from git history, never from a checkout or a shell.

A plugin's owners are the authors (by commit author email, compared without case) of the commits that touched
its folder, as far back as the history goes; the commits an administrator has not accepted are left out by the
caller (pipeline.stages.ownership). Every read is one `git log` with its arguments as a list, paths as literal
pathspecs, at most MAX_COMMITS commits and GIT_SECONDS seconds, each author email cut to EMAIL_CAP characters
by git itself: a repository cannot make this read unbounded. Past a bound, HistoryUnreadable says so and the
caller fails closed (the change is held).

Which identity counts: the commit author, as in a pull request from a fork that is merged (or squashed) by an
automerge bot. A plain merge commit that changes nothing beyond its parents is not listed for a folder (git's
history simplification follows the parent the folder came from), so the bot that merged is never an author;
an "evil merge" that edits the folder itself is listed, by whoever made it. git does not authenticate authors:
an author line can name anyone (README, Security).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.catalog.gitrepo import TreeEntry
from pipeline.errors import BadInput

MAX_COMMITS = 5000  # commits touching one plugin folder: far more than any real plugin has
GIT_SECONDS = 60
EMAIL_CAP = 320  # the longest address (and the database column)


class HistoryUnreadable(BadInput):
    """A folder's history could not be read within its bounds (too long, too slow, or git failed)."""


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str  # the author email as the commit states it, lower-case; "" when it names none


def commits(repo: Path | str, revisions: list[str], paths: list[str], limit: int | None = None) -> list[Commit]:
    """The commits `revisions` select (e.g. [head, "^" + base], or [base]) that change any of `paths`, oldest
    first. `revisions` are resolved commit ids (never a submitter's text); `paths` are read literally."""
    if not paths:
        return []
    limit = MAX_COMMITS if limit is None else limit
    args = ["git", "-C", str(repo), "-c", "log.showSignature=false", "log", "--no-color", "--no-renames",
            f"--max-count={limit + 1}", f"--format=%H%x00%<({EMAIL_CAP},trunc)%ae%x01", *revisions, "--",
            *[f":(literal){p}" for p in paths]]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=GIT_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HistoryUnreadable(f"the history of {', '.join(paths)[:200]} took more than {GIT_SECONDS} s to read"
                                ) from None
    except FileNotFoundError:
        raise BadInput("git is not installed") from None
    if proc.returncode != 0:
        raise HistoryUnreadable(f"git log failed for {', '.join(paths)[:200]}: "
                                f"{proc.stderr.decode('utf-8', 'replace').strip()[:300]}")
    found = []
    for record in proc.stdout.decode("utf-8", "replace").split("\x01"):
        sha, sep, email = record.strip("\n").partition("\x00")
        if sep:
            found.append(Commit(sha.strip(), email.strip().lower()))
    if len(found) > limit:
        raise HistoryUnreadable(f"{', '.join(paths)[:200]} has more than {limit} commits in the range read")
    found.reverse()
    return found


def authors(history: list[Commit], leave_out: set[str] = frozenset()) -> set[str]:
    """The distinct author emails of `history`, without the commits in `leave_out` (and without empty ones)."""
    return {c.author for c in history if c.author and c.sha not in leave_out}


def folders_at(entries: list[TreeEntry]) -> set[str]:
    """The folder names of one `<root>/<type>` listing (gitrepo.list_tree_level)."""
    return {e.path.rsplit("/", 1)[-1] for e in entries if e.kind == "tree"}
