"""Score history: a score replaced by a forced re-score (or removed by an administrator) moves here, with when
and why; `scores` keeps only the score in force for each pair key.

Revision ID: 0004
Revises: 0002 (the lead re-chains it after 0003 at merge)
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'score_history',
        sa.Column('id', sa.Integer(), nullable=False),  # the score's own id, kept
        sa.Column('model_id', sa.Integer(), nullable=False),
        sa.Column('benchmark_instance_id', sa.Integer(), nullable=False),
        sa.Column('pair_key', sa.String(length=64), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('score_raw', sa.Float(), nullable=True),
        sa.Column('score_ceiled', sa.Float(), nullable=True),
        sa.Column('error', sa.Float(), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('start_timestamp', sa.DateTime(timezone=True), nullable=True),
        sa.Column('end_timestamp', sa.DateTime(timezone=True), nullable=True),
        sa.Column('commit', sa.String(length=64), nullable=False),
        sa.Column('model_code_hash', sa.String(length=64), nullable=False),
        sa.Column('benchmark_code_hash', sa.String(length=64), nullable=False),
        sa.Column('lock_hash', sa.String(length=64), nullable=False),
        sa.Column('env_hash', sa.String(length=64), nullable=False),
        sa.Column('executor', sa.String(length=32), nullable=False),
        sa.Column('job_id', sa.String(length=64), nullable=False),
        sa.Column('array_index', sa.Integer(), nullable=True),
        sa.Column('node', sa.String(length=200), nullable=False),
        sa.Column('elapsed_seconds', sa.Float(), nullable=True),
        sa.Column('max_rss_bytes', sa.BigInteger(), nullable=True),
        sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('superseded_by', sa.Integer(), nullable=True),  # the score in force after it, if any
        sa.Column('reason', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['benchmark_instance_id'], ['benchmark_instances.id'], ),
        sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_score_history_pair_key', 'score_history', ['pair_key'], unique=False)
    if op.get_bind().dialect.name == 'sqlite':
        # A score's id names it for good (history, `reproduce`): SQLite must never hand a removed id out again,
        # which it does for a rowid table without AUTOINCREMENT (Postgres sequences never do).
        with op.batch_alter_table('scores', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
            pass


def downgrade() -> None:
    op.drop_index('ix_score_history_pair_key', table_name='score_history')
    op.drop_table('score_history')
