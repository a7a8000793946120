"""Issue 12 on the real broker and PostgreSQL: any message_id gets its receipt, every dead
letter is selectable, connections survive a broker or database that dropped them, and an
out-of-order event waits quietly until its predecessor arrives."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text

from appeals_common import deadletters
from appeals_common.amqp_tools import blocking_channel, manage_vhost
from appeals_common.clock import FixedClock
from appeals_common.db import Store, make_engine
from appeals_common.nameko_ext import (
    MESSAGES_DEAD_LETTERED,
    MESSAGES_RETRIED,
    MESSAGES_WAITING,
    Delivery,
    NotYet,
    ReliableConsumer,
    ServiceRuntime,
)
from appeals_common.publisher import ConfirmingPublisher
from appeals_common.schemas import ReceiptSchema
from appeals_common.settings import Settings
from appeals_common.topology import apply_topology
from tests.conftest import PG_BASE, RABBIT_MGMT
from tests.integration.conftest import drain

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture
def own_vhost(amqp_uri) -> Iterator[str]:
    """A vhost of its own with the suite's topology: every connection in it is this test's."""
    name = f"appeals-test-rel-{uuid.uuid4().hex[:8]}"
    manage_vhost("add", name, management_url=RABBIT_MGMT)
    base = urllib.parse.urlsplit(amqp_uri)
    uri = f"{base.scheme}://{base.netloc}/{urllib.parse.quote(name, safe='')}"
    from appeals_common.cli import _topology

    with blocking_channel(uri) as channel:
        apply_topology(channel, _topology())
    yield uri
    manage_vhost("delete", name, management_url=RABBIT_MGMT)


def _mgmt(method: str, path: str) -> object:
    parsed = urllib.parse.urlsplit(RABBIT_MGMT)
    req = urllib.request.Request(
        f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}/api/{path}", method=method,
        headers={"authorization": "Basic " + base64.b64encode(
            f"{parsed.username}:{parsed.password}".encode()).decode(),
            "X-Reason": "test: broker closed an idle connection"})
    raw = urllib.request.urlopen(req, timeout=10).read()
    return json.loads(raw) if raw else None


def close_connections(vhost_uri: str) -> int:
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(vhost_uri).path.lstrip("/"))
    deadline = time.monotonic() + 10  # the management API lists connections with a delay
    while time.monotonic() < deadline:
        conns = _mgmt("GET", f"vhosts/{urllib.parse.quote(vhost, safe='')}/connections")
        if conns:
            for conn in conns:
                _mgmt("DELETE", f"connections/{urllib.parse.quote(conn['name'], safe='')}")
            return len(conns)
        time.sleep(0.5)
    raise AssertionError("no connection to close")


def fake_consumer(queue: str, publisher: ConfirmingPublisher, service: str = "svc"):
    return SimpleNamespace(container=SimpleNamespace(service_name=service), queue_name=queue,
                           settings=Settings(), publisher=publisher)


def park(consumer, delivery: Delivery, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        ReliableConsumer._park(consumer, delivery, sys.exc_info())


def as_kombu(method, props, body) -> SimpleNamespace:
    """A message read with pika, shaped as ReliableConsumer._delivery reads kombu's."""
    return SimpleNamespace(
        properties={"user_id": props.user_id, "message_id": props.message_id,
                    "content_type": props.content_type},
        content_type=props.content_type, headers=props.headers or {}, body=body,
        delivery_info={"routing_key": method.routing_key, "exchange": method.exchange})


def cli(uri: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appeals_common.cli", "dead-letters", *args],
                          env={"APPEALS_AMQP_URI": uri, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)


# --- A: any message_id ---------------------------------------------------------------------

@pytest.fixture
def intake(databases):
    from tests.intake_support import intake_runtime

    rt = intake_runtime(databases.url(f"rel_intake_{uuid.uuid4().hex[:6]}"), NOW)
    yield rt
    rt.store.dispose()


@pytest.mark.parametrize("message_id", [None, "m" * 200, "x" * 64], ids=["missing", "200", "64"])
def test_an_inbound_appeal_gets_its_receipt_whatever_its_message_id(intake, message_id):
    from services.intake import usecases
    from tests.e2e.bus import appeal_body
    from tests.intake_support import intake_context

    body = json.dumps(appeal_body(external_id=f"rel-{uuid.uuid4().hex[:6]}",
                                  submitted_at=NOW.isoformat())).encode()

    def deliver() -> str:
        return usecases.handle_inbound(intake, intake_context(), Delivery(
            body=body, routing_key="appeal.submit.hotline_12345", exchange="appeals.inbound",
            message_id=message_id, content_type="application/json", headers={}, attempt=1,
            user_id="src-hotline_12345"))

    assert deliver() == "accepted"
    assert deliver() == "redelivered"
    with intake.store.engine.connect() as conn:
        rows = conn.execute(intake.store.outbox.select()).all()
    (receipt,) = [json.loads(r.body) for r in rows if r.routing_key == "receipt.hotline_12345"]
    assert receipt["message_id"] == message_id, "echoed as sent, not truncated"
    assert ReceiptSchema().validate(receipt) == {}


def test_the_inbox_takes_any_key_on_postgresql(store):
    long_a, long_b = "event:" + "a" * 300, "event:" + "a" * 299 + "b"
    with store.unit_of_work(NOW) as uow:
        assert uow.first_time("c", long_a) and uow.first_time("c", long_b)
        assert uow.first_time("c", "short")
    with store.unit_of_work(NOW) as uow:
        assert not uow.first_time("c", long_a) and not uow.first_time("c", long_b)
        assert not uow.first_time("c", "short")


# --- A: dead letters always selectable -----------------------------------------------------

def test_a_dead_letter_without_message_id_is_shown_and_replayed_by_its_dead_letter_id(own_vhost):
    publisher = ConfirmingPublisher(own_vhost)
    queue = "supervision.events"
    try:
        for message_id in (None, "L" * 200):
            park(fake_consumer(queue, publisher), Delivery(
                body=b'{"n": 1}', routing_key="appeal.registered", exchange="appeals.events",
                message_id=message_id, content_type="application/json", headers={},
                attempt=99, user_id="svc-intake"), RuntimeError("boom"))
    finally:
        publisher.close()
    missing, long = deadletters.peek(own_vhost, f"{queue}.dlq")
    assert missing.message_id in (None, "") and long.message_id == "L" * 200
    ident = missing.dead_letter_id
    assert ident and uuid.UUID(ident)
    assert deadletters.summary(missing)["dead_letter_id"] == ident

    shown = cli(own_vhost, "show", ident, "--queue", f"{queue}.dlq")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["body"] == '{"n": 1}'
    shown = cli(own_vhost, "show", "L" * 200, "--queue", f"{queue}.dlq")
    assert json.loads(shown.stdout)["dead_letter_id"] == long.dead_letter_id

    replayed = cli(own_vhost, "replay", "--queue", f"{queue}.dlq", "--message-id", ident)
    assert "replayed 1" in replayed.stdout
    with blocking_channel(own_vhost) as channel:
        ((props, body),) = drain(channel, queue)
    assert body == b'{"n": 1}' and not props.message_id
    assert "x-dead-letter-id" not in props.headers, "a new id if it is dead-lettered again"
    assert [d.message_id for d in deadletters.peek(own_vhost, f"{queue}.dlq")] == ["L" * 200]
    assert deadletters.replay(own_vhost, f"{queue}.dlq", message_id=long.dead_letter_id) == 1


def test_show_lists_the_id_in_every_dead_letter_queue(own_vhost):
    publisher = ConfirmingPublisher(own_vhost)
    try:
        for queue in ("supervision.events", "reporting.events"):
            park(fake_consumer(queue, publisher, queue.split(".")[0]), Delivery(
                body=b"{}", routing_key="appeal.registered", exchange="appeals.events",
                message_id="ev-both", content_type="application/json", headers={},
                attempt=99, user_id="svc-intake"), RuntimeError("boom"))
    finally:
        publisher.close()
    shown = cli(own_vhost, "show", "ev-both")  # every DLQ of the topology
    assert shown.returncode == 0, shown.stderr
    found = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sorted(f["queue"] for f in found) == ["reporting.events.dlq", "supervision.events.dlq"]
    assert cli(own_vhost, "show", "nothing-here").returncode == 1


# --- B: connections that notice ------------------------------------------------------------

def test_the_first_publish_after_the_broker_closed_the_connection_succeeds(own_vhost):
    publisher = ConfirmingPublisher(own_vhost)
    row = {"exchange": "", "routing_key": "supervision.events", "body": b"{}",
           "message_id": "p-1", "headers": {}, "content_type": "application/json"}
    try:
        assert publisher.publish_batch([row]) == set()
        assert publisher._conn.connection.heartbeat == 30, "heartbeats negotiated"
        assert close_connections(own_vhost) == 1
        time.sleep(0.5)
        assert publisher.publish_batch([{**row, "message_id": "p-2"}]) == set()
    finally:
        publisher.close()
    with blocking_channel(own_vhost) as channel:
        assert [p.message_id for p, _ in drain(channel, "supervision.events")] == ["p-1", "p-2"]


def test_tool_connections_have_heartbeats(own_vhost):
    with blocking_channel(own_vhost) as channel:
        assert channel.connection._impl.params.heartbeat == 30


def _terminate_backends(database: str) -> int:
    admin = create_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).scalar()
    finally:
        admin.dispose()


def test_the_pool_survives_killed_database_sessions(databases):
    url = databases.url(f"rel_pool_{uuid.uuid4().hex[:6]}")
    database = urllib.parse.urlsplit(url).path.lstrip("/")
    from appeals_common.db import ensure_database

    ensure_database(url)
    engine = make_engine(url, pool_size=3)
    try:
        conns = [engine.connect() for _ in range(3)]  # fill the pool
        for conn in conns:
            conn.execute(text("SELECT 1"))
            conn.close()
        assert _terminate_backends(database) >= 3
        time.sleep(0.2)
        with engine.connect() as conn:  # the first use after: no error
            assert conn.execute(text("SELECT 1")).scalar() == 1
        from appeals_common.db import unreachable_reason

        assert unreachable_reason(engine) is None, "/health's check"
        # The cost: one round trip per checkout.
        timings = {}
        for ping in (True, False):
            probe = create_engine(engine.url, pool_pre_ping=ping, pool_size=1)
            with probe.connect() as conn:
                conn.execute(text("SELECT 1"))
            started = time.perf_counter()
            for _ in range(300):
                with probe.connect() as conn:
                    conn.execute(text("SELECT 1"))
            timings[ping] = (time.perf_counter() - started) / 300
            probe.dispose()
        print(f"checkout+query: {timings[False]*1e6:.0f} us without pre-ping, "
              f"{timings[True]*1e6:.0f} us with")
        assert timings[True] - timings[False] < 0.005
    finally:
        engine.dispose()


# --- C: out of order is normal -------------------------------------------------------------

def test_an_out_of_order_event_waits_and_is_then_applied(own_vhost, databases):
    from appeals_common.envelope import Event
    from services.supervision import usecases
    from services.supervision.models import Base, SupervisedAppeal
    from tests.integration.test_supervision_clocks import CAL, CHAINS, at

    store = Store(databases.url(f"rel_sup_{uuid.uuid4().hex[:6]}"), Base.metadata,
                  producer="supervision")
    store.create_schema()
    runtime = ServiceRuntime("supervision", Settings(), store, FixedClock(at("2026-11-27")))
    queue = "supervision.events"
    appeal_id, reg_no = str(uuid.uuid4()), "WH-2026-424242"
    registered = Event("appeal.registered", "intake", runtime.now(), {"reg_no": reg_no},
                       appeal_id=appeal_id)
    dispatched = Event("appeal.dispatched", "dispatch", runtime.now(), {
        "reg_no": reg_no, "units": {"lead": "zjj", "co": []}, "rule": "r",
        "assignments": [{"assignment_id": str(uuid.uuid4()), "dept_code": "zjj", "role": "lead",
                         "sign_by": at("2026-11-30").isoformat(),
                         "respond_by": at("2026-12-10").isoformat()}]}, appeal_id=appeal_id)

    def handle(delivery: Delivery) -> None:
        usecases.on_event(runtime, CAL, CHAINS, delivery)

    def first(event: Event) -> Delivery:
        return Delivery(event.to_json(), event.event_type, "appeals.events", event.event_id,
                        "application/json", {}, 1, user_id="svc-" + event.producer)

    counts = lambda m: m.labels("supervision", queue)._value.get()  # noqa: E731
    before = {m: counts(m) for m in (MESSAGES_RETRIED, MESSAGES_DEAD_LETTERED, MESSAGES_WAITING)}
    publisher = ConfirmingPublisher(own_vhost)
    consumer = fake_consumer(queue, publisher, "supervision")
    try:
        with pytest.raises(NotYet, match="appeal.dispatched for unknown appeal"):
            handle(first(dispatched))
        park(consumer, first(dispatched), NotYet(f"appeal.dispatched for unknown appeal {appeal_id}"))
        handle(first(registered))  # the predecessor arrives meanwhile
        with blocking_channel(own_vhost) as channel:  # the wait is over after 1 s
            deadline = time.monotonic() + 15
            while True:
                method, props, body = channel.basic_get(queue, auto_ack=True)
                if method is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert method is not None, "the waiting event came back"
        again = ReliableConsumer._delivery(consumer, as_kombu(method, props, body))
        assert (again.waits, again.attempt, again.routing_key) == (1, 1, "appeal.dispatched")
        assert again.user_id == "svc-dispatch"
        handle(again)
    finally:
        publisher.close()
    with store.read() as session:
        appeal = session.get(SupervisedAppeal, appeal_id)
        assert appeal is not None and appeal.state == "dispatched"
    assert counts(MESSAGES_WAITING) == before[MESSAGES_WAITING] + 1
    assert counts(MESSAGES_RETRIED) == before[MESSAGES_RETRIED]
    assert counts(MESSAGES_DEAD_LETTERED) == before[MESSAGES_DEAD_LETTERED]
    store.dispose()
