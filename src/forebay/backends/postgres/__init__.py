"""The PostgreSQL backend (``pip install 'forebay[postgres]'``).

``FOREBAY_URL=postgresql://user@host:5432/db`` selects it; ``?schema=name`` puts its tables in
another PostgreSQL schema than ``forebay``. :func:`migration_sql` gives the schema's DDL without
connecting (``forebay migrate --sql``).
"""

from forebay.backends.postgres.backend import PostgresBackend
from forebay.backends.postgres.connection import PostgresSettings
from forebay.backends.postgres.schema import migration_sql

__all__ = ["PostgresBackend", "PostgresSettings", "migration_sql"]
