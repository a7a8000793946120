"""The four services as real processes against the test vhost and databases, with the
source systems' and departments' broker users provisioned: the fixtures the end-to-end
tests (tests/e2e) and the attacker (tests/security) share, one running suite for both
(registered by tests/conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from appeals_common.launcher import SuiteProcesses
from appeals_common.provisioning import delete_users, vhost_from_uri
from appeals_common.settings import SERVICES
from tests.conftest import RABBIT_MGMT, RUN_ID
from tests.e2e import suite_time
from tests.e2e.bus import poll

JWT_SECRET = "e2e-secret-0123456789-0123456789-abcdef"
# Broker users are global: this run's carry its id (the suite is told the prefix).
USER_PREFIX = f"e{RUN_ID}-"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bus_users(amqp_uri, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Every source system's and department's broker user (`src-<name>`, `dept-<code>`,
    prefixed with this run's id) with its password, provisioned into the test vhost by
    `appeals provision apply` as an operator would; deleted at the end of the run."""
    creds = tmp_path_factory.mktemp("provision") / "credentials.json"
    subprocess.run([sys.executable, "-m", "appeals_common.cli", "provision", "apply",
                    "--vhost", vhost_from_uri(amqp_uri), "--user-prefix", USER_PREFIX,
                    "--credentials-file", str(creds), "--management-url", RABBIT_MGMT],
                   env={**os.environ, "APPEALS_AMQP_URI": amqp_uri}, check=True,
                   capture_output=True)
    passwords = json.loads(creds.read_text())
    yield passwords
    delete_users(list(passwords), management_url=RABBIT_MGMT)


@pytest.fixture(scope="session")
def user_uri(amqp_uri, bus_users) -> Callable[[str], str]:
    """The AMQP URI a source system or department connects with: `user_uri("dept-zjj")`."""
    def make(name: str) -> str:
        user = USER_PREFIX + name
        parts = urllib.parse.urlsplit(amqp_uri)
        netloc = f"{urllib.parse.quote(user, safe='')}:" \
                 f"{urllib.parse.quote(bus_users[user], safe='')}@{parts.hostname}:{parts.port or 5672}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return make


@pytest.fixture(scope="session")
def otlp_collector() -> Iterator[Any]:
    """Where the suite's services export their spans (Jaeger's place in production)."""
    from tests.e2e.otlp_collector import OtlpCollector

    collector = OtlpCollector()
    yield collector
    collector.close()


@pytest.fixture(scope="session")
def suite_env(amqp_uri, databases, tmp_path_factory, bus_users, otlp_collector) -> dict[str, str]:
    base = databases.url("e2e")  # t<run>_e2e → t<run>_e2e_<service>
    for service in SERVICES:
        databases.created.append(base.rsplit("/", 1)[1] + f"_{service}")
    env = {
        "APPEALS_AMQP_URI": amqp_uri,
        "APPEALS_DATABASE_URL": base + "_{service}",
        "APPEALS_JWT_SECRET": JWT_SECRET,
        "APPEALS_RETRY_DELAYS_MS": "300,1000,3000",
        "APPEALS_RELAY_POLL_SECONDS": "0.5",
        "APPEALS_LOG_LEVEL": "INFO",
        # Empty means real time; a test may write a moment into it to move every
        # service's clock (deadline scans run every second).
        "APPEALS_CLOCK_FILE": str(tmp_path_factory.mktemp("clock") / "now"),
        "APPEALS_SCAN_SECONDS": "1",
        # Sources and departments publish as `<prefix>src-<name>` / `<prefix>dept-<code>`.
        "APPEALS_BUS_USER_PREFIX": USER_PREFIX,
        # Spans go to the test's collector, exported a fifth of a second after they end.
        "APPEALS_TRACING": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    for service in SERVICES:
        env[f"APPEALS_{service.upper()}_HTTP_PORT"] = str(_free_port())
    suite_time.use_clock_file(env["APPEALS_CLOCK_FILE"])
    subprocess.run([sys.executable, "-m", "appeals_common.cli", "topology", "apply"],
                   env={**os.environ, **env}, check=True, capture_output=True)
    return env


@pytest.fixture(scope="session")
def suite(suite_env, tmp_path_factory) -> Iterator[SuiteProcesses]:
    log_dir = Path(tmp_path_factory.mktemp("suite-logs"))
    procs = SuiteProcesses(env=suite_env, log_dir=log_dir)
    procs.start_all(timeout=90)
    yield procs
    procs.stop_all()
    for service in SERVICES:
        text = (log_dir / f"{service}.log").read_text(errors="replace")
        print(f"--- {service} log tail ---\n{text[-3000:]}")


def _deadline_scans(supervision_url: str) -> float:
    """How many deadline scans supervision has finished (its entrypoint metric)."""
    text = requests.get(f"{supervision_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "appeals_entrypoint_seconds_count" and \
                    sample.labels.get("entrypoint") == "scan_deadlines":
                return sample.value
    return 0.0


@pytest.fixture
def move_clock(suite_env, urls):
    """Set every service's "now"; real time again after the test.

    Going back to real time moves the clock backwards. A deadline scan that started before
    keeps the moved moment for all its batches, and would time clocks the next test opens
    meanwhile with it; so the next test starts only once a scan begun after the reset has
    finished."""
    path = Path(suite_env["APPEALS_CLOCK_FILE"])

    def move(moment) -> None:
        path.write_text(moment.isoformat())

    yield move
    moved = path.read_text().strip() != ""
    scans = _deadline_scans(urls["supervision"]) if moved else 0.0
    path.write_text("")
    if moved:
        poll(lambda: _deadline_scans(urls["supervision"]) >= scans + 2, timeout=180,
             interval=0.2)


@pytest.fixture(scope="session")
def urls(suite) -> dict[str, str]:
    return {s: f"http://127.0.0.1:{suite.settings.http_port(s)}" for s in SERVICES}


@pytest.fixture(scope="session")
def token(suite_env):
    from appeals_common.auth import issue_token

    def make(role: str, dept: str | None = None) -> str:
        return issue_token(JWT_SECRET, f"e2e-{role}", role, dept)

    return make


@pytest.fixture(scope="session")
def make_bus(amqp_uri, bus_users) -> Callable[[], Any]:
    """A new Bus (for a thread of its own, or a test managing its lifetime)."""
    from tests.e2e.bus import Bus

    return lambda: Bus(amqp_uri, bus_users, USER_PREFIX)


@pytest.fixture
def bus(amqp_uri, suite, bus_users):
    """The source systems and the departments, in plain pika (tests/e2e/bus.py), each
    connected as its own broker user."""
    from tests.e2e.bus import Bus

    b = Bus(amqp_uri, bus_users, USER_PREFIX)
    yield b
    b.close()
