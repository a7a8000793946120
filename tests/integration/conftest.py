from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import MetaData

from appeals_common.db import Store, reliability_tables

pytestmark = pytest.mark.integration


@pytest.fixture
def channel(amqp_uri: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    ch = conn.channel()
    yield ch
    conn.close()


@pytest.fixture
def scratch_queue(channel) -> str:
    """An exchange and a queue bound to it, new for each test."""
    name = f"scratch.{uuid.uuid4().hex[:8]}"
    channel.exchange_declare(name, exchange_type="topic", durable=True)
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, name, routing_key="#")
    return name


@pytest.fixture
def store(databases) -> Iterator[Store]:
    metadata = MetaData()
    reliability_tables(metadata)
    s = Store(databases.url(f"rel_{uuid.uuid4().hex[:6]}"), metadata, producer="test")
    s.create_schema()
    yield s
    s.dispose()


def drain(channel, queue: str) -> list[tuple]:
    out = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((props, body))


# Dispatch's and supervision's service layers on a database of their own, fed like the bus
# would feed them (the harnesses are in test_dispatch_rules and test_supervision_clocks).

@pytest.fixture
def d(databases):
    from tests.integration.test_dispatch_rules import Dispatch

    dispatch = Dispatch(databases.url(f"dispatch_{uuid.uuid4().hex[:6]}"))
    yield dispatch
    dispatch.store.dispose()


@pytest.fixture
def sup(databases):
    from tests.integration.test_supervision_clocks import Supervision

    s = Supervision(databases.url(f"sup_{uuid.uuid4().hex[:6]}"))
    yield s
    s.store.dispose()
