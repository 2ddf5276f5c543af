"""Each run records its plugins' network: runs.network ('on': the outside through slirp4netns, never the node;
'off': loopback only; 'host': the node's own network, local services included; NULL: a run made before this
was recorded, when 'on' meant the node's own network).

Revision ID: 0013
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("network", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("network")
