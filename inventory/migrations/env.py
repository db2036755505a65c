"""Alembic environment: runs migrations on the URL set by inventory.db.alembic_config."""

from alembic import context
from sqlmodel import SQLModel

import inventory.model  # noqa: F401  (registers the tables on SQLModel.metadata)
from inventory.db import make_engine

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("baie migrations run online only: use `baie db upgrade`")
run_migrations()
