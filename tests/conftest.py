"""Fixtures giving each test run its own RabbitMQ vhost and PostgreSQL databases, so a
run never sees another's leftovers. Real broker, real database: no mocks."""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from appeals_common.amqp_tools import manage_vhost

RABBIT_HOST = os.environ.get("APPEALS_TEST_RABBIT_HOST", "127.0.0.1")
RABBIT_MGMT = os.environ.get("APPEALS_TEST_RABBIT_MGMT", f"http://guest:guest@{RABBIT_HOST}:15672")
PG_BASE = os.environ.get("APPEALS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
RUN_ID = uuid.uuid4().hex[:8]


def pytest_report_header(config: pytest.Config) -> str:
    from appeals_common.settings import load_settings

    settings = load_settings()
    return (f"suite clock: {settings.clock().now().isoformat(timespec='seconds')} "
            f"(APPEALS_CLOCK_OFFSET_SECONDS={settings.clock_offset_seconds:.0f})")


@pytest.fixture(scope="session")
def amqp_uri() -> Iterator[str]:
    vhost = f"appeals-test-{RUN_ID}"
    manage_vhost("add", vhost, management_url=RABBIT_MGMT)
    yield f"amqp://guest:guest@{RABBIT_HOST}:5672/{urllib.parse.quote(vhost, safe='')}"
    manage_vhost("delete", vhost, management_url=RABBIT_MGMT)


class Databases:
    """Databases named t<run>_<name>; all dropped at the end of the run."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.admin = create_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")

    def url(self, name: str) -> str:
        db = f"t{RUN_ID}_{name}"
        self.created.append(db)
        return f"{PG_BASE}/{db}"

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for db in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    dbs = Databases()
    yield dbs
    dbs.drop_all()


# The running suite (started only when a test asks for it), shared by tests/e2e and
# tests/security.
from tests.suite_fixtures import *  # noqa: E402, F403
