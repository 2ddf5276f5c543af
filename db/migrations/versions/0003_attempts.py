"""A record of every attempt of a pair: tier, request, measured peak, time, failure kind, node, job id.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("pair_key", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("benchmark", sa.String(length=200), nullable=False),
        sa.Column("submitters", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("req_mem_bytes", sa.BigInteger(), nullable=True),
        sa.Column("req_time_minutes", sa.Integer(), nullable=True),
        sa.Column("req_gpus", sa.Integer(), nullable=False),
        sa.Column("req_cpus", sa.Integer(), nullable=False),
        sa.Column("max_rss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("elapsed_seconds", sa.Float(), nullable=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("failure_kind", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("node", sa.String(length=200), nullable=True),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("array_index", sa.Integer(), nullable=True),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("model_code_hash", sa.String(length=64), nullable=True),
        sa.Column("benchmark_code_hash", sa.String(length=64), nullable=True),
        sa.Column("escalated_to", sa.String(length=64), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "pair_key", "attempt", name="uq_attempt"),
    )
    op.create_index("ix_attempts_run_id", "attempts", ["run_id"])
    op.create_index("ix_attempts_model_benchmark", "attempts", ["model", "benchmark"])


def downgrade() -> None:
    op.drop_index("ix_attempts_model_benchmark", table_name="attempts")
    op.drop_index("ix_attempts_run_id", table_name="attempts")
    op.drop_table("attempts")
