"""A throw-away PostgreSQL database for one benchmark run."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from appeals_common.db import normalize_url


def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` on the server at ``server_url`` (``postgresql://…:5432``), even while
    something still holds a connection to it."""
    admin = create_engine(normalize_url(f"{server_url}/postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
