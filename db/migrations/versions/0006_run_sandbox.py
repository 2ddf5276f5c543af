"""Each run records how untrusted code was confined: runs.sandbox ('bwrap', or 'off' when it ran unconfined).

Revision ID: 0006
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("sandbox", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sandbox")
