"""Each attempt records its GPUs: the model, how many it was given, on how many it allocated memory, its peak GPU
memory (NULL: not measured, never 0 by default) and the GPU memory per GPU its tier asked for.

Revision ID: 0010
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0011'
branch_labels = None
depends_on = None

COLUMNS = (("gpu_model", sa.String(200)), ("gpu_count", sa.Integer()), ("gpus_used", sa.Integer()),
           ("max_gpu_mem_bytes", sa.BigInteger()), ("req_gpu_mem_bytes", sa.BigInteger()))


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
