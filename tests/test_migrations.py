"""The Alembic migrations build exactly the schema the models declare: a column, index or
constraint added to a model without a migration (or the other way round) fails here, on the
backend the suite runs on."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.store import migrate
from app.store.db import make_engine
from app.store.models import Base


def test_migrations_match_the_models(migrated_database: str) -> None:
    engine = make_engine(migrated_database)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            diff = [
                change
                for change in compare_metadata(context, Base.metadata)
                if not (
                    isinstance(change, tuple)
                    and change[0] == "remove_table"
                    and change[1].name == "alembic_version"
                )
            ]
    finally:
        engine.dispose()
    assert diff == []
