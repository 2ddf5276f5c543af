"""Alembic environment: the engine comes from `db.migrate`, never from a URL in a file."""

from alembic import context

from db.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    context.run_migrations()
