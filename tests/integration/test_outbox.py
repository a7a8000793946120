"""Outbox relay and inbox against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from appeals_common.db import OutboxRelay
from appeals_common.publisher import ConfirmingPublisher
from tests.integration.conftest import drain

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _write(store, exchange: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        with store.unit_of_work(NOW) as uow:
            ids.append(uow.send(exchange, f"k.{i}", {"n": i}))
    return ids


def test_relay_publishes_committed_messages_once_in_order(store, amqp_uri, channel, scratch_queue):
    sent = _write(store, scratch_queue, 30)
    publisher = ConfirmingPublisher(amqp_uri)
    relay = OutboxRelay(store, publisher.publish_batch, batch_size=7)
    while relay.relay_once():
        pass
    publisher.close()
    got = drain(channel, scratch_queue)
    assert [p.message_id for p, _ in got] == sent
    assert all(p.delivery_mode == 2 and p.content_type == "application/json" for p, _ in got)
    assert store.outbox_backlog() == 0


def test_rolled_back_work_publishes_nothing(store, amqp_uri, channel, scratch_queue):
    try:
        with store.unit_of_work(NOW) as uow:
            uow.send(scratch_queue, "k", {"x": 1})
            raise RuntimeError("domain change failed")
    except RuntimeError:
        pass
    assert store.outbox_backlog() == 0


def test_two_relays_share_the_outbox_without_double_publishing(store, amqp_uri, channel,
                                                               scratch_queue):
    sent = set(_write(store, scratch_queue, 400))
    relays = [OutboxRelay(store, ConfirmingPublisher(amqp_uri).publish_batch, batch_size=20)
              for _ in range(2)]
    counts = [0, 0]

    def run(i: int) -> None:
        while True:
            n = relays[i].relay_once()
            if not n:
                return
            counts[i] += n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [p.message_id for p, _ in drain(channel, scratch_queue)]
    assert sorted(ids) == sorted(sent), "every message exactly once"
    assert counts[0] + counts[1] == 400
    assert min(counts) > 0, "both replicas took part"


def test_a_relay_that_died_mid_batch_is_taken_over_after_its_lease(store, amqp_uri, channel,
                                                                   scratch_queue):
    sent = _write(store, scratch_queue, 5)
    dead = OutboxRelay(store, lambda rows: (_ for _ in ()).throw(SystemExit), batch_size=10,
                       lease=timedelta(milliseconds=300))
    dead._claim()  # claimed, then the process "dies" before publishing
    live = OutboxRelay(store, ConfirmingPublisher(amqp_uri).publish_batch)
    assert live.relay_once() == 0, "the lease still holds"
    import time

    time.sleep(0.4)
    assert live.relay_once() == 5
    assert [p.message_id for p, _ in drain(channel, scratch_queue)] == sent


def test_unroutable_message_is_kept_not_lost(store, amqp_uri, channel, scratch_queue):
    with store.unit_of_work(NOW) as uow:
        lost_id = uow.send("appeals.dispatch", "dept.no-such-dept", {"x": 1})
        uow.send(scratch_queue, "k", {"x": 2})
    relay = OutboxRelay(store, ConfirmingPublisher(amqp_uri).publish_batch)
    from appeals_common.cli import cmd_topology  # noqa: F401 - topology declared below

    channel.exchange_declare("appeals.dispatch", exchange_type="topic", durable=True)
    assert relay.relay_once() == 2
    assert len(drain(channel, scratch_queue)) == 1
    with store.engine.connect() as conn:
        row = conn.execute(select(store.outbox).where(
            store.outbox.c.message_id == lost_id)).mappings().one()
    assert row["published_at"] is None
    assert "unroutable" in row["last_error"]
    assert row["available_at"] > datetime.now(UTC)


def test_inbox_marks_a_message_once(store):
    with store.unit_of_work(NOW) as uow:
        assert uow.first_time("c", "m-1") is True
    with store.unit_of_work(NOW) as uow:
        assert uow.first_time("c", "m-1") is False
        assert uow.first_time("other-consumer", "m-1") is True


def test_purge_deletes_only_rows_published_before_the_retention(store, amqp_uri, channel,
                                                                scratch_queue):
    _write(store, scratch_queue, 5)
    publisher = ConfirmingPublisher(amqp_uri)
    relay = OutboxRelay(store, publisher.publish_batch, batch_size=3)
    assert relay.relay_once() == 3  # rows 1-3 published, 4-5 still pending
    publisher.close()
    outbox = store.outbox
    with store.engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.id <= 2).values(
            published_at=datetime.now(UTC) - timedelta(days=8)))
        # Pending rows are never purged, however old.
        conn.execute(outbox.update().where(outbox.c.id == 5).values(
            created_at=datetime.now(UTC) - timedelta(days=30)))
    assert relay.purge_published(timedelta(days=7), batch=1) == 2
    with store.engine.connect() as conn:
        left = conn.execute(select(outbox.c.id, outbox.c.published_at.is_not(None))
                            .order_by(outbox.c.id)).all()
    assert [(row[0], bool(row[1])) for row in left] == [(3, True), (4, False), (5, False)]
    assert relay.purge_published(timedelta(days=7)) == 0
