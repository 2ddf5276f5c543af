"""What brain-score.org keys and shows a benchmark type by: the identifier it runs as (its `identifier=`, which
differs from the registry name for a few plugins) and whether an admin shows or hides it (NULL: the board's rules
decide, as the website's `visible` default does for a new type). Types recorded before it stay shown.

Revision ID: 0011
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("benchmark_types") as batch:
        batch.add_column(sa.Column("runtime_identifier", sa.String(200), nullable=True))
        batch.add_column(sa.Column("visible", sa.Boolean(), nullable=True))
    # every type already recorded was counted on the board before this revision: it stays shown (as if an admin
    # had shown it); only types recorded from now on start as the board's rules say (hidden, under brain-score's)
    op.execute(sa.text("UPDATE benchmark_types SET visible = :shown").bindparams(shown=True))


def downgrade() -> None:
    with op.batch_alter_table("benchmark_types") as batch:
        batch.drop_column("visible")
        batch.drop_column("runtime_identifier")
