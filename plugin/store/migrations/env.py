"""Alembic environment: migrations run against the URL the caller puts in the config."""

from alembic import context
from sqlalchemy import create_engine, pool

from plugin.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate on the connection `storage.migrate` hands over (inside its lock and transaction), else on
    a connection of our own (the `alembic` command line)."""
    shared = config.attributes.get("connection")
    if shared is not None:
        _run(shared)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
