"""A database knows which profile it is (`database_identity`, one row written by `db upgrade`), and the pipeline
records per repository the last commit it processed (`processed_commits`, the base of the next Jenkins build) and
which pair keys' failures it has told whom (`mailed_failures`: each is mailed once).

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "database_identity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("database_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("adopted", sa.Boolean(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_database_identity_one_row"),
    )
    op.create_table(
        "processed_commits",
        sa.Column("repository", sa.String(500), primary_key=True),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("jenkins_build", sa.String(200), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mailed_failures",
        sa.Column("pair_key", sa.String(64), primary_key=True),
        sa.Column("recipient", sa.String(320), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mailed_failures")
    op.drop_table("processed_commits")
    op.drop_table("database_identity")
