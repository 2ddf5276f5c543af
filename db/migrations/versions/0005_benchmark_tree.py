"""The leaderboard's tree: each benchmark type's declared parent (and why it is unknown), each instance's
declared Brain-Score version (only a benchmark's latest version counts in aggregates).

Revision ID: 0005
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("benchmark_types") as batch:
        batch.add_column(sa.Column("parent", sa.String(200), nullable=True))
        batch.add_column(sa.Column("parent_note", sa.Text(), nullable=True))
    with op.batch_alter_table("benchmark_instances") as batch:
        batch.add_column(sa.Column("declared_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("benchmark_instances") as batch:
        batch.drop_column("declared_version")
    with op.batch_alter_table("benchmark_types") as batch:
        batch.drop_column("parent_note")
        batch.drop_column("parent")
