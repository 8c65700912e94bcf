"""scrm db upgrade | current"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.services import services
from app.store import migrate

db = AppGroup("db", help="Database schema (Alembic migrations).")


@db.command("upgrade")
def upgrade() -> None:
    """Apply every migration up to the newest (run on each deploy: Procfile 'release')."""
    migrate.upgrade(services().engine)
    click.echo(f"database at revision {migrate.current_revision(services().engine)}")


@db.command("current")
def current() -> None:
    """Show the database's revision and the newest one in the code."""
    click.echo(
        f"database: {migrate.current_revision(services().engine) or 'empty'}; code: {migrate.head_revision()}"
    )
