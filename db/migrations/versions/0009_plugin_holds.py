"""Plugins have owners: a change to a plugin folder by someone who is not among its owners is held until an
administrator approves it (plugin_holds); each run records how the local executor bounded memory
(runs.memory_limit: 'cgroup v1', 'cgroup v2', or 'rlimit' for RLIMIT_DATA only).

Revision ID: 0009
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plugin_holds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('domain', sa.String(length=100), nullable=False),
        sa.Column('plugin_type', sa.String(length=16), nullable=False),
        sa.Column('plugin', sa.String(length=100), nullable=False),
        sa.Column('commit', sa.String(length=64), nullable=False),
        sa.Column('author', sa.String(length=320), nullable=False),
        sa.Column('owners', sa.JSON(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('base_commit', sa.String(length=64), nullable=True),
        sa.Column('head_commit', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('approved_by', sa.String(length=200), nullable=True),
        sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('approval_note', sa.Text(), nullable=True),
        sa.Column('owner_added', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('domain', 'plugin_type', 'plugin', 'commit', name='uq_plugin_hold'),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("memory_limit", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("memory_limit")
    op.drop_table('plugin_holds')
