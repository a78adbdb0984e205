"""Storage: SQLAlchemy models, Alembic migrations, the engine, and the queries per aggregate."""
