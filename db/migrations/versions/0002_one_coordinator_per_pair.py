"""One coordinator per pair: a partial unique index on jobs.pair_key while PENDING or RUNNING.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

IN_FLIGHT = "state IN ('PENDING', 'RUNNING')"


def upgrade() -> None:
    # Older rows may hold a pair in flight twice (the race this index closes): keep the newest claim open,
    # close the others as LOST so the index can be built.
    op.execute(sa.text(
        "UPDATE jobs SET state = 'LOST', reason = 'closed by migration 0002: the pair was in flight twice' "
        f"WHERE {IN_FLIGHT} AND id NOT IN (SELECT MAX(id) FROM jobs WHERE {IN_FLIGHT} GROUP BY pair_key)"))
    op.create_index("uq_jobs_pair_in_flight", "jobs", ["pair_key"], unique=True,
                    postgresql_where=sa.text(IN_FLIGHT), sqlite_where=sa.text(IN_FLIGHT))


def downgrade() -> None:
    op.drop_index("uq_jobs_pair_in_flight", table_name="jobs")
