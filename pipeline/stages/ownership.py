"""Plugins have owners: a change to a plugin folder by someone who is not among its owners is held, not scored.

Who owns a folder (at the change's base): the authors of every commit that touched it so far (by commit author
email; pipeline.catalog.owners), less the authors of commits recorded here as held and not approved as an
owner's, plus the `plugin_maintainers` setting (a site's core team, for every plugin). A folder the change
creates belongs to the author of its first commit. A move (git sees the folder's files renamed from another
folder) and a folder registering an id that another folder registered (at the base, or as recorded in the
database) are changes to that other folder too: its owners decide.

Each commit of base..head that touches a folder by an author outside its owners is recorded (table
plugin_holds, one row per folder and commit), once. Every pair whose model or benchmark reaches (itself or
through a data or metric plugin) a folder with a recorded, unapproved commit in the history of the head being
scored is held: not scored, with a reason that says why and how to approve it; `plan` shows the same without
recording anything. The owners, the author and `admin_email` are told once, through the outbox. A deletion by a
non-owner holds no pair but is recorded and told the same way (else it would make its author an owner).
`score-plugins approve` records who approved and when; the next run scores the pairs.

A run over every plugin (`--all`, `--backfill`, `rerun`) has no change to attribute: it honours the holds already
recorded and finds no new ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select, update

from db.models import BenchmarkType, Model, PluginHold
from db.session import session_scope
from db.upsert import insert_for
from pipeline.catalog import gitrepo, owners
from pipeline.catalog.loaders import PLUGIN_TYPES, REGISTRY_NAMES
from pipeline.catalog.plugins import Catalog
from pipeline.catalog.sourcefacts import read_facts
from pipeline.database import Database
from pipeline.stages.detect import Change, classify_path
from pipeline.stages.plan import Plan

log = logging.getLogger(__name__)

MAX_PENDING_CHECKED = 500  # unapproved holds whose ancestry is checked one by one; past it, all count (closed)

Folder = tuple[str, str]  # (plugin type, folder name)


@dataclass
class Found:
    """A commit that changed a folder by an author outside its owners (recorded as a PluginHold)."""

    plugin_type: str
    plugin: str
    commit: str
    author: str
    owners: list[str]
    reason: str
    id: int | None = None
    new: bool = False  # recorded by this call (its people are told once)


@dataclass
class Ownership:
    """What the holds of one plan are: the folders held, with why; and what this call recorded."""

    held: dict[Folder, list[Found]] = field(default_factory=dict)
    recorded: list[Found] = field(default_factory=list)


def hold_foreign_changes(settings, db: Database, catalog: Catalog, change: Change, plan: Plan,  # noqa: ANN001
                         record: bool = True) -> Ownership:
    """Find the change's commits by non-owners, record them (unless `record` is False: `plan`, `--dry-run`),
    and move every pair that reaches a held folder from `to_run` / `cannot_run` to `plan.held`."""
    maintainers = {m.strip().lower() for m in settings.plugin_maintainers if m.strip()}
    known = _recorded(db, catalog.domain_root)
    found = find(catalog, change, known, maintainers, _database_ids(db, catalog.domain_root)) if change.base else []
    result = Ownership()
    if record and found:
        result.recorded = _record(db, catalog, change, found)
        known = _recorded(db, catalog.domain_root)
    in_force = _in_force(catalog, known)
    if not record:  # what a run would record holds the same pairs
        for f in found:
            in_force.setdefault((f.plugin_type, f.plugin), []).append(f)
    result.held = in_force
    _hold_pairs(plan, catalog, in_force)
    return result


def find(catalog: Catalog, change: Change, known: dict[Folder, dict[str, PluginHold]], maintainers: set[str],
         database_ids: dict[tuple[str, str], str]) -> list[Found]:
    """The commits of base..head that touch a plugin folder by an author who is not among its owners (see the
    module's docstring), not yet approved. Reads git only (bounded: pipeline.catalog.owners)."""
    repo, base, head, root = catalog.repo, change.base, catalog.commit, catalog.domain_root
    assert base is not None
    touched = sorted({(t, n) for source in (change.changed_plugins, change.metadata_only_plugins)
                      for t, names in source.items() for n in names if (t, n) in catalog.plugins})
    removed = sorted({(t, n) for t, names in change.removed_plugins.items() for n in names})
    if not touched and not removed:
        return []
    at_base = {t: owners.folders_at(gitrepo.list_tree_level(repo, base, f"{root}/{t}"))
               for t in {t for t, _ in touched + removed}}
    moved_from = _moves(repo, base, head, root)
    # (registry, id) -> the folders that registered it at the base: every folder, every registry (data and metric
    # ids too: database_ids knows models' and benchmarks' only), as detect read them
    base_ids = catalog.base_holders if catalog.base_holders is not None else \
        {(REGISTRY_NAMES[t], i): [(t, n)] for (t, i), n in _base_ids(repo, base, root, change.removed_plugins).items()}
    found: list[Found] = []
    owner_cache: dict[Folder, set[str]] = {}

    def owners_of(folder: Folder) -> set[str]:
        if folder not in owner_cache:
            history = owners.commits(repo, [base], [_path(root, folder)])
            rows = known.get(folder, {})
            leave_out = {sha for sha, row in rows.items() if not (row.approved_at and row.owner_added)}
            # an approved move or re-registration carries the owners who decided it over to the new folder
            carried = {o for row in rows.values() if row.approved_at for o in (row.owners or [])}
            owner_cache[folder] = owners.authors(history, leave_out) | carried
        return owner_cache[folder]

    # A folder the change deletes holds no pair (nothing of it is scored), but a deletion by a non-owner is recorded
    # all the same, and its owners told: else that commit would make its author an owner of the folder's history,
    # and of the ids it registered (a later change registering one of them is judged by the folder's owners).
    def _deleted(folder: Folder) -> list[Found]:
        allowed = owners_of(folder) | maintainers
        rows = known.get(folder, {})
        return [Found(folder[0], folder[1], commit.sha, commit.author or "(no author email)",
                      sorted(allowed - maintainers),
                      f"commit {commit.sha[:12]} by {commit.author or '(no author email)'} deletes "
                      f"{folder[0]}/{folder[1]}; that author is not among its owners")
                for commit in owners.commits(repo, [head, f"^{base}"], [_path(root, folder)])
                if commit.author not in allowed and not (commit.sha in rows and rows[commit.sha].approved_at)]

    def _judge(folder: Folder) -> list[Found]:
        t, name = folder
        out: list[Found] = []
        before: dict[Folder, str] = {}  # a folder whose owners decide -> what the change does to it
        if name in at_base.get(t, set()):
            before[folder] = f"changes {t}/{name}"
        for old in sorted(moved_from.get(folder, ())):
            before.setdefault((t, old), f"moves {t}/{old} to {t}/{name}")
        for registry, ids in catalog.plugins[folder].registered.items():
            for identifier in ids:
                holders = [h for h in base_ids.get((registry, identifier), ()) if h != folder]
                if folder in base_ids.get((registry, identifier), ()):
                    holders = []  # its own id already at the base
                elif not holders and registry == REGISTRY_NAMES[t] and database_ids.get((t, identifier)):
                    holders = [(t, database_ids[(t, identifier)])]
                for ht, holder in holders:
                    if (ht, holder) != folder:
                        kind = ht[:-1] if registry == REGISTRY_NAMES[ht] and ht != "data" else \
                            registry.removesuffix("_registry")
                        before.setdefault((ht, holder), f"registers {kind} id {identifier!r} of {ht}/{holder} in "
                                                        f"{t}/{name}")
        paths = [_path(root, folder)] + [_path(root, f) for f in before if f != folder]
        history = owners.commits(repo, [head, f"^{base}"], paths)
        if before:
            allowed = set.intersection(*(owners_of(f) for f in before))
        else:  # created by this change: the author of its first commit owns it
            allowed = {history[0].author} if history and history[0].author else set()
        allowed |= maintainers
        what = "; ".join(before.values()) or (f"changes {t}/{name}, which {next(iter(allowed - maintainers), '')} "
                                              "created in this change")
        rows = known.get(folder, {})
        for commit in history:
            if commit.author in allowed:
                continue
            row = rows.get(commit.sha)
            if row is not None and row.approved_at:
                if row.owner_added:
                    allowed.add(commit.author)
                continue
            out.append(Found(t, name, commit.sha, commit.author or "(no author email)", sorted(allowed - maintainers),
                             f"commit {commit.sha[:12]} by {commit.author or '(no author email)'} {what}; that "
                             "author is not among its owners"))
        return out

    for folder, judge in [(f, _deleted) for f in removed if f[1] in at_base.get(f[0], set())] + \
            [(f, _judge) for f in touched]:
        try:
            found.extend(judge(folder))
        except owners.HistoryUnreadable as exc:  # fail closed: the folder is held, the rest of the change goes on
            found.append(Found(folder[0], folder[1], head, "(unknown)", [],
                               f"the history of {folder[0]}/{folder[1]} cannot be read within its bounds ({exc})"))
    return found


def _path(root: str, folder: Folder) -> str:
    return f"{root}/{folder[0]}/{folder[1]}"


def _moves(repo: Path, base: str, head: str, root: str) -> dict[Folder, set[str]]:
    """Folder -> the folders of the same type whose `__init__.py` (what registers a plugin's ids) git sees renamed
    into it in base..head. Other files are not followed: plugins share identical small files (a requirements.txt
    of one line), which git pairs across unrelated folders."""
    moved: dict[Folder, set[str]] = {}
    for entry in gitrepo.changed_files(repo, base, head):
        if entry.status != "R" or not entry.old_path or not entry.path.endswith("/__init__.py") \
                or entry.path.count("/") != 3 or entry.old_path.count("/") != 3:
            continue
        new_kind, new_type, new_name = classify_path(entry.path, root)
        old_kind, old_type, old_name = classify_path(entry.old_path, root)
        if new_kind == old_kind == "plugin" and new_type == old_type and new_name != old_name:
            moved.setdefault((new_type, new_name), set()).add(old_name)
    return moved


def _base_ids(repo: Path, base: str, root: str, removed: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """(type, id) -> folder, for the ids the folders this change removes registered at the base: a new folder
    registering one of them takes that folder's place (its owners decide)."""
    wanted = [(t, n) for t in PLUGIN_TYPES for n in removed.get(t, [])]
    if not wanted:
        return {}
    entries = {e.path: e.sha for t, n in wanted
               for e in gitrepo.list_tree(repo, base, f"{root}/{t}/{n}/__init__.py") if e.kind == "blob"}
    blobs = gitrepo.read_blobs(repo, list(entries.values()))
    ids: dict[tuple[str, str], str] = {}
    for t, n in wanted:
        path = f"{root}/{t}/{n}/__init__.py"
        if path in entries:
            for reg in read_facts(blobs.get(entries[path], b""), path).registrations:
                if reg.registry == REGISTRY_NAMES[t] and reg.key:
                    ids.setdefault((t, reg.key), n)
    return ids


def _database_ids(db: Database, domain: str) -> dict[tuple[str, str], str]:
    """(type, id) -> folder, as the database recorded them when they were scored."""
    with db.sessions() as session:
        ids = {("models", i): p for i, p in session.execute(
            select(Model.identifier, Model.plugin).where(Model.domain == domain))}
        ids.update({("benchmarks", i): p for i, p in session.execute(
            select(BenchmarkType.identifier, BenchmarkType.plugin).where(BenchmarkType.domain == domain))})
    return ids


def _recorded(db: Database, domain: str) -> dict[Folder, dict[str, PluginHold]]:
    """Every hold recorded for the domain: folder -> commit -> its row."""
    with db.sessions() as session:
        rows = list(session.scalars(select(PluginHold).where(PluginHold.domain == domain)))
        session.expunge_all()
    known: dict[Folder, dict[str, PluginHold]] = {}
    for row in rows:
        known.setdefault((row.plugin_type, row.plugin), {})[row.commit] = row
    return known


def _record(db: Database, catalog: Catalog, change: Change, found: list[Found]) -> list[Found]:
    """Insert each found commit once (a second run of the same change adds nothing); returns them with their ids,
    `new` set on those this call inserted."""
    now = datetime.now(timezone.utc)
    with session_scope(db.sessions) as session:
        for f in found:
            inserted = session.connection().execute(insert_for(session, PluginHold).values(
                domain=catalog.domain_root, plugin_type=f.plugin_type, plugin=f.plugin, commit=f.commit,
                author=f.author[:320], owners=f.owners, reason=f.reason, base_commit=change.base,
                head_commit=catalog.commit, created_at=now, owner_added=False,
            ).on_conflict_do_nothing().returning(PluginHold.id)).scalar()
            f.new = inserted is not None
            f.id = inserted if inserted is not None else session.scalar(select(PluginHold.id).where(
                PluginHold.domain == catalog.domain_root, PluginHold.plugin_type == f.plugin_type,
                PluginHold.plugin == f.plugin, PluginHold.commit == f.commit))
    return found


def _in_force(catalog: Catalog, known: dict[Folder, dict[str, PluginHold]]) -> dict[Folder, list[Found]]:
    """Folders of this catalog with an unapproved hold whose commit is in the head's history (a hold on a commit
    the head does not contain, e.g. another branch's, holds nothing here)."""
    pending = [(folder, row) for folder, rows in known.items() if folder in catalog.plugins
               for row in rows.values() if row.approved_at is None]
    held: dict[Folder, list[Found]] = {}
    for index, (folder, row) in enumerate(sorted(pending, key=lambda p: p[1].id)):
        if index < MAX_PENDING_CHECKED and not _is_ancestor(catalog.repo, row.commit, catalog.commit):
            continue
        held.setdefault(folder, []).append(Found(row.plugin_type, row.plugin, row.commit, row.author,
                                                 list(row.owners or []), row.reason, row.id))
    return held


def _is_ancestor(repo: Path, commit: str, head: str) -> bool:
    import subprocess

    try:
        proc = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, head],
                              capture_output=True, timeout=owners.GIT_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return True  # cannot tell: it counts (fail closed)
    return proc.returncode != 1  # 0: an ancestor; 1: not; anything else (an unknown commit...): it counts


def _hold_pairs(plan: Plan, catalog: Catalog, held: dict[Folder, list[Found]]) -> None:
    """Move every pair whose model or benchmark reaches a held folder into `plan.held`, with the reason."""
    if not held:
        return
    reach: dict[Folder, list[Found]] = {}
    for plugin_type in ("models", "benchmarks"):
        for plugin in catalog.of_type(plugin_type):
            holds = [h for member in catalog.members(plugin) for h in held.get(member.key, [])]
            if holds:
                reach[plugin.key] = holds

    def why(pair) -> str | None:  # noqa: ANN001 - a PlannedPair
        holds = reach.get(("models", pair.model_plugin), []) + reach.get(("benchmarks", pair.benchmark_plugin), [])
        if not holds:
            return None
        first = holds[0]
        ids = " ".join(dict.fromkeys(str(h.id) for h in holds if h.id is not None))
        how = (f"an administrator approves it with `score-plugins approve {ids}`" if ids else
               "`run` records it for an administrator's approval")
        more = f" (and {len(holds) - 1} more held change(s))" if len(holds) > 1 else ""
        return (f"held, not scored: {catalog.domain_root}/{first.plugin_type}/{first.plugin}: {first.reason}"
                f"{more}; {how}")

    for source in ("to_run", "cannot_run"):
        keep = []
        for pair in getattr(plan, source):
            reason = why(pair)
            if reason is None:
                keep.append(pair)
            else:
                pair.problem = reason
                plan.held.append(pair)
        setattr(plan, source, keep)


def notify_holds(settings, db: Database, profile: str, recorded: list[Found], domain: str) -> tuple[list[Path], list[str]]:  # noqa: ANN001
    """Tell the owners, each change's author and `admin_email` about the holds recorded now (once: a hold already
    told is never mailed again). Returns the queued messages and the addresses that could not be used."""
    from notify.compose import AddressError
    from notify.hold_notice import HeldChange, compose_hold_notice
    from notify.outbox import Outbox

    fresh = [f for f in recorded if f.new and f.id is not None]
    if not fresh:
        return [], []
    people: dict[str, list[HeldChange]] = {}
    admin = settings.admin_email.strip().lower()
    for f in fresh:
        held = HeldChange(f.id, f"{domain}/{f.plugin_type}/{f.plugin}", f.commit, f.author, f.reason)
        for person in {*f.owners, f.author, *([admin] if admin else [])}:
            if person and "@" in person:
                people.setdefault(person, []).append(held)
    outbox = Outbox(settings.outbox_dir)
    paths, problems = [], []
    for person, holds in sorted(people.items()):
        try:
            paths.append(outbox.put(compose_hold_notice(holds, person, settings.sender_email, admin=person == admin)))
        except AddressError as exc:
            problems.append(f"not emailed about a held change: {exc}")
    with session_scope(db.sessions) as session:
        session.execute(update(PluginHold).where(PluginHold.id.in_([f.id for f in fresh]))
                        .values(notified_at=datetime.now(timezone.utc)))
    return paths, problems


def approve(db: Database, hold_ids: list[int], by: str, note: str, as_owner: bool) -> list[dict]:
    """Record an administrator's approval of these holds (who, when, why, and whether the author becomes an owner
    of the folder). Approving one already approved changes nothing; an unknown id is an error."""
    from pipeline.errors import BadInput

    now = datetime.now(timezone.utc)
    with session_scope(db.sessions) as session:
        rows = {r.id: r for r in session.scalars(select(PluginHold).where(PluginHold.id.in_(hold_ids)))}
        unknown = sorted(set(hold_ids) - set(rows))
        if unknown:
            raise BadInput(f"no held change with id {', '.join(map(str, unknown))} (`score-plugins holds` lists them)")
        out = []
        for hold_id in hold_ids:
            row = rows[hold_id]
            already = row.approved_at is not None
            if not already:
                row.approved_by, row.approved_at, row.approval_note, row.owner_added = by, now, note, as_owner
            out.append(hold_json(row) | {"already_approved": already})
    return out


def list_holds(db: Database, everything: bool = False) -> list[dict]:
    """Held changes (those waiting for approval; with `everything`, approved ones too), oldest first."""
    with db.sessions() as session:
        stmt = select(PluginHold).order_by(PluginHold.id)
        if not everything:
            stmt = stmt.where(PluginHold.approved_at.is_(None))
        return [hold_json(r) for r in session.scalars(stmt)]


def hold_json(row: PluginHold) -> dict:
    return {"id": row.id, "plugin": f"{row.domain}/{row.plugin_type}/{row.plugin}", "commit": row.commit,
            "author": row.author, "owners": list(row.owners or []), "reason": row.reason,
            "found_at": row.created_at.isoformat() if row.created_at else None, "head": row.head_commit,
            "approved_by": row.approved_by, "approved_at": row.approved_at.isoformat() if row.approved_at else None,
            "approval_note": row.approval_note, "owner_added": bool(row.owner_added)}
