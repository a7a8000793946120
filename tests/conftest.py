"""Fixtures giving each test run its own RabbitMQ vhost and PostgreSQL databases, so a
run never sees another's leftovers. Real broker, real database: no mocks."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

RABBIT_HOST = os.environ.get("APPEALS_TEST_RABBIT_HOST", "127.0.0.1")
RABBIT_MGMT = os.environ.get("APPEALS_TEST_RABBIT_MGMT", f"http://{RABBIT_HOST}:15672")
PG_BASE = os.environ.get("APPEALS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
RUN_ID = uuid.uuid4().hex[:8]


def _mgmt(method: str, path: str, body: dict | None = None) -> None:
    req = urllib.request.Request(
        f"{RABBIT_MGMT}/api/{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json",
                 "authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    urllib.request.urlopen(req, timeout=10).read()


def _vhost(action: str, name: str) -> None:
    """Create or delete a vhost: management API if enabled, else rabbitmqctl."""
    quoted = urllib.parse.quote(name, safe="")
    try:
        if action == "add":
            _mgmt("PUT", f"vhosts/{quoted}")
            _mgmt("PUT", f"permissions/{quoted}/guest",
                  {"configure": ".*", "write": ".*", "read": ".*"})
        else:
            _mgmt("DELETE", f"vhosts/{quoted}")
        return
    except (urllib.error.URLError, OSError):
        pass
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if action == "add":
        subprocess.run([ctl, "add_vhost", name], check=True, capture_output=True)
        subprocess.run([ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True)
    else:
        subprocess.run([ctl, "delete_vhost", name], check=False, capture_output=True)


@pytest.fixture(scope="session")
def amqp_uri() -> Iterator[str]:
    vhost = f"appeals-test-{RUN_ID}"
    _vhost("add", vhost)
    yield f"amqp://guest:guest@{RABBIT_HOST}:5672/{urllib.parse.quote(vhost, safe='')}"
    _vhost("delete", vhost)


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
