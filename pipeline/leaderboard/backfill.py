"""`plan --backfill` / `run --backfill`: the model x benchmark pairs the leaderboard is missing, from the
database, for the plugins of one revision: never scored, last ended by an infrastructure failure (a node
died, the job was lost or cancelled), or scored only on an older version of the benchmark. A pair whose last
job failed through its plugins (X on the leaderboard) is not taken: `rerun --failed` or `--force` does that."""

from __future__ import annotations

from db.queries import newest_job_states, scored_versions
from db.states import State
from pipeline.database import Database
from pipeline.errors import BadInput
from pipeline.catalog.plugins import Catalog
from pipeline.leaderboard.standings import INFRASTRUCTURE_ENDS


def missing_pairs(db: Database, catalog: Catalog, models: list[str] | None = None,
                  benchmarks: list[str] | None = None) -> dict[tuple[str, str], str]:
    """(model, benchmark) -> why it is taken, for every model x benchmark registered at the catalog's commit
    (narrowed to `models` and `benchmarks` when given; an id the commit does not register is bad input)."""
    for wanted, known, kind in ((models, catalog.by_identifier("models"), "model"),
                                (benchmarks, catalog.by_identifier("benchmarks"), "benchmark")):
        unknown = sorted(set(wanted or []) - set(known))
        if unknown:
            raise BadInput(f"unknown {kind} identifier(s) at {catalog.commit[:12]}: {', '.join(unknown)}")
    with db.sessions() as session:
        versions = scored_versions(session)
        jobs = newest_job_states(session)
    registered = catalog.by_identifier("benchmarks")
    out: dict[tuple[str, str], str] = {}
    for model in sorted(models or catalog.by_identifier("models")):
        for benchmark, plugin in sorted(registered.items()):
            if benchmarks and benchmark not in benchmarks:
                continue
            current = plugin.versions.get(benchmark)
            have = versions.get((model, benchmark), set())
            if have and (current is None or current in have):
                continue  # a score of the latest version (or the version cannot be read: any score)
            state = jobs.get((model, benchmark), (None, None, None))[0]
            if have:
                older = max((v for v in have if v is not None), default=None)
                out[(model, benchmark)] = (f"scored on version {older} only, the latest is {current}"
                                           if older is not None else f"scored before version {current}")
            elif state in INFRASTRUCTURE_ENDS:
                out[(model, benchmark)] = f"its last job ended {state} (infrastructure, not the plugins)"
            elif state is None or state == State.COMPLETED:
                out[(model, benchmark)] = "never scored"
    return out
