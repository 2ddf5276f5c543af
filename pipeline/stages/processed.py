"""The base of a change-driven build: the commit the pipeline last processed for this repository, on this profile.

Jenkins' `GIT_PREVIOUS_SUCCESSFUL_COMMIT` stops advancing at the first red build, so one broken plugin made every
later build re-plan (and re-mail) its pairs. The pipeline records instead, in the profile's own database, the head
of each run that did its job (scored what it could, recorded the failures, told the submitters), and the next
`run --since-processed` starts there.

A repository is named by its `origin` remote (credentials stripped: the same for every clone and workspace), else
by its top folder.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from db.models import ProcessedCommit
from db.session import session_scope
from db.upsert import insert_for
from pipeline.catalog import gitrepo
from pipeline.database import Database
from pipeline.errors import BadInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Base:
    commit: str
    why: str  # for the console: where the base came from
    repository: str
    recorded: str | None


def repository_key(repo: Path) -> str:
    """`origin`'s URL without user or password, else the repository's top folder."""
    top = gitrepo.ensure_repository(repo)
    proc = subprocess.run(["git", "-C", str(top), "config", "--get", "remote.origin.url"], capture_output=True,
                          text=True, check=False)
    url = proc.stdout.strip()
    if not url:
        return str(top)
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:  # https://user:token@host/x.git -> https://host/x.git
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:500]
    return url[:500]  # scp-like git@host:x.git, or a local path


def last_processed(db: Database, repository: str) -> ProcessedCommit | None:
    with db.sessions() as session:
        return session.get(ProcessedCommit, repository)


def _is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", older, newer],
                          capture_output=True, check=False).returncode == 0


def choose_base(db: Database, repo: Path, head: str, fallback: str | None) -> Base:
    """Where this build's change starts: the last processed commit (or, where history was rewritten, its merge
    base with `head`); with nothing recorded yet, `fallback` (e.g. Jenkins' previous successful commit), else the
    head's first parent."""
    top = gitrepo.ensure_repository(repo)
    key = repository_key(top)
    head_commit = gitrepo.resolve(top, head)
    row = last_processed(db, key)
    recorded = row.commit if row else None
    if recorded:
        try:
            gitrepo.resolve(top, f"{recorded}^{{commit}}")
        except BadInput:
            log.warning("the last processed commit %s is not in %s: starting from the fallback", recorded, top)
            recorded = None
    if recorded:
        if _is_ancestor(top, recorded, head_commit):
            who = f" by run {row.run_id}" if row.run_id else ""
            return Base(recorded, f"the last commit the {db.profile.name} pipeline processed{who}", key, recorded)
        merge = subprocess.run(["git", "-C", str(top), "merge-base", recorded, head_commit], capture_output=True,
                               text=True, check=False).stdout.strip()
        if merge:
            return Base(merge, f"the merge base of {head_commit[:12]} and the last processed commit {recorded[:12]} "
                        "(history was rewritten, or an older commit is built again)", key, recorded)
    if fallback:
        return Base(gitrepo.resolve(top, fallback), "the given --base (nothing processed recorded yet)", key, recorded)
    try:
        parent = gitrepo.resolve(top, f"{head_commit}^1")
    except BadInput:
        raise BadInput(f"{head_commit[:12]} has no parent and nothing was processed before: give --base, or score "
                       "every plugin with --all") from None
    return Base(parent, "the head's first parent (nothing processed recorded yet)", key, recorded)


def record_processed(db: Database, repo: Path, base: Base, head: str, run_id: str | None,
                     jenkins_build: str | None) -> bool:
    """Record `head` as processed, unless it is older than what is recorded (a rebuild of an old commit never
    moves the base back). Returns whether it moved."""
    with session_scope(db.sessions) as session:
        row = session.get(ProcessedCommit, base.repository)
        if row is not None and row.commit != head and _is_ancestor(gitrepo.ensure_repository(repo), head, row.commit):
            return False
        if row is None:
            session.connection().execute(insert_for(session, ProcessedCommit).on_conflict_do_nothing(), [
                {"repository": base.repository, "commit": head, "run_id": run_id, "jenkins_build": jenkins_build,
                 "processed_at": datetime.now(timezone.utc)}])
        else:
            row.commit, row.run_id, row.jenkins_build = head, run_id, jenkins_build
            row.processed_at = datetime.now(timezone.utc)
    return True


def after_run(db: Database, req, base: Base, result) -> str:  # noqa: ANN001 - orchestrator.run.Request, RunResult
    """Record the run's head as processed when the run did its job (every pair ended, failures recorded and told;
    or nothing to score), and say what happened. Not when pairs were lost to the infrastructure (the next build
    tries them again) nor when --models/--benchmarks narrowed the run (the pairs left out are still to do)."""
    from db.states import INFRASTRUCTURE

    kept = (base.recorded or base.commit)[:12]
    lost = sum(n for state, n in result.states.items() if state in INFRASTRUCTURE)
    if lost:
        return (f"{lost} pair(s) lost to the infrastructure: the last processed commit stays {kept}, so the next "
                "build tries them again")
    if req.models or req.benchmarks:
        return f"--models/--benchmarks narrowed this run: the last processed commit stays {kept}"
    if record_processed(db, req.repo, base, result.plan.commit, result.run_id, req.jenkins_build):
        return f"{result.plan.commit[:12]} recorded as processed (the next build's base)"
    return f"{result.plan.commit[:12]} is older than the last processed commit {kept}: that one stays"
