"""Alembic environment. Run through ``scrm db upgrade`` (app/store/migrate.py), which hands us a
live connection; ``alembic`` on its own is not configured for this project."""

from alembic import context

from app.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded for people who call alembic directly
    raise RuntimeError("run migrations with `scrm db upgrade`")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
