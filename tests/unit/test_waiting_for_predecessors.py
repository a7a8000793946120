"""The consumer's decision for an event whose predecessor has not arrived (NotYet): a quiet
wait with its own counter and budget, never a retry; dead-lettered once the budget is spent."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from appeals_common import nameko_ext
from appeals_common.nameko_ext import (
    MESSAGES_DEAD_LETTERED,
    MESSAGES_RETRIED,
    MESSAGES_WAITING,
    WAIT_BUDGET_MS,
    Delivery,
    NotYet,
    ReliableConsumer,
    wait_schedule,
)
from appeals_common.settings import Settings
from appeals_common.topology import retry_exchange

DELAYS = (1000, 5000, 30000)


def consumer(queue: str) -> tuple[SimpleNamespace, list[dict]]:
    published: list[dict] = []
    return SimpleNamespace(
        container=SimpleNamespace(service_name="svc"), queue_name=queue,
        settings=SimpleNamespace(retry_delays_ms=DELAYS),
        publisher=SimpleNamespace(publish_batch=published.extend)), published


def delivery(waits: int = 0, attempt: int = 1, message_id: str | None = "e-1") -> Delivery:
    return Delivery(body=b"{}", routing_key="appeal.dispatched", exchange="appeals.events",
                    message_id=message_id, content_type="application/json", headers={},
                    attempt=attempt, user_id="svc-dispatch", waits=waits)


def park(c: SimpleNamespace, d: Delivery, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        ReliableConsumer._park(c, d, sys.exc_info())


def count(metric, queue: str) -> float:
    return metric.labels("svc", queue)._value.get()


def test_the_wait_schedule_spends_about_ten_minutes():
    schedule = wait_schedule(DELAYS)
    assert schedule[:3] == [1000, 5000, 30000] and set(schedule[3:]) == {30000}
    assert WAIT_BUDGET_MS <= sum(schedule) < WAIT_BUDGET_MS + 30000
    assert wait_schedule((10, 20), budget_ms=100) == [10, 20, 20, 20, 20, 20]
    assert wait_schedule(()) == []


def test_not_yet_waits_quietly_with_its_own_counter(caplog):
    c, published = consumer("wait.q1")
    before = (count(MESSAGES_RETRIED, "wait.q1"), count(MESSAGES_DEAD_LETTERED, "wait.q1"))
    with caplog.at_level(logging.DEBUG, logger="appeals.nameko"):
        park(c, delivery(), NotYet("appeal.dispatched for unknown appeal a-1"))
    (msg,) = published
    assert (msg["exchange"], msg["routing_key"]) == (retry_exchange(1000), "wait.q1")
    assert msg["headers"]["x-wait-attempt"] == 2
    assert "x-attempt" not in msg["headers"], "a wait spends nothing of the retry budget"
    assert count(MESSAGES_WAITING, "wait.q1") == 1
    assert (count(MESSAGES_RETRIED, "wait.q1"), count(MESSAGES_DEAD_LETTERED, "wait.q1")) == before
    (record,) = [r for r in caplog.records if r.name == "appeals.nameko"]
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "waits 1000ms for its predecessor" in record.getMessage()
    assert "unknown appeal a-1" in record.getMessage()


def test_waits_follow_the_schedule_then_the_message_is_dead_lettered():
    c, published = consumer("wait.q2")
    schedule = wait_schedule(DELAYS)
    park(c, delivery(waits=4), NotYet("x"))
    assert published[-1]["exchange"] == retry_exchange(schedule[4])
    assert published[-1]["headers"]["x-wait-attempt"] == 6
    park(c, delivery(waits=len(schedule)), NotYet("appeal.dispatched for unknown appeal a-2"))
    dead = published[-1]
    assert dead["routing_key"] == "wait.q2.dlq"
    assert dead["headers"]["x-wait-attempts"] == len(schedule) + 1
    assert dead["headers"]["x-dead-letter-id"]
    assert "NotYet: appeal.dispatched for unknown appeal a-2" in dead["headers"]["x-last-error"]
    assert count(MESSAGES_DEAD_LETTERED, "wait.q2") == 1
    assert count(MESSAGES_RETRIED, "wait.q2") == 0


def test_other_errors_still_retry_and_a_plain_lookup_error_is_a_failure():
    c, published = consumer("wait.q3")
    park(c, delivery(), LookupError("something else"))
    assert published[-1]["exchange"] == retry_exchange(1000)
    assert published[-1]["headers"]["x-attempt"] == 2
    assert count(MESSAGES_RETRIED, "wait.q3") == 1 and count(MESSAGES_WAITING, "wait.q3") == 0


def test_not_yet_is_still_a_lookup_error():
    assert issubclass(NotYet, LookupError), "a rebuild that skips a LookupError still does"


def test_a_dead_letter_without_message_id_gets_a_dead_letter_id():
    c, published = consumer("wait.q4")
    park(c, delivery(message_id=None, attempt=len(DELAYS) + 1), RuntimeError("boom"))
    (dead,) = published
    assert dead["message_id"] == "" and len(dead["headers"]["x-dead-letter-id"]) == 36


@pytest.mark.parametrize("user_id, header, expected", [
    ("guest", 3, 2),         # the suite's own retry path: honoured
    ("src-hotline", 3, 0),   # a publisher's header: ignored
    ("guest", "x", 0),
])
def test_the_wait_counter_is_read_only_from_the_suite(user_id, header, expected):
    message = SimpleNamespace(
        properties={"user_id": user_id, "message_id": "m"}, content_type="application/json",
        headers={"x-original-routing-key": "appeal.dispatched", "x-wait-attempt": header},
        delivery_info={"routing_key": "wait.q5", "exchange": ""}, body=b"{}")
    me = SimpleNamespace(settings=Settings())
    assert nameko_ext.ReliableConsumer._delivery(me, message).waits == expected


def test_waiting_and_dead_letter_headers_are_documented():
    from tests.unit.test_asyncapi import MESSAGES, merged, problems

    c, published = consumer("wait.q6")
    park(c, delivery(), NotYet("x"))
    park(c, delivery(waits=len(wait_schedule(DELAYS))), NotYet("x"))
    waiting, dead = published
    assert not problems(MESSAGES["ParkedForRetry"]["headers"], waiting["headers"], closed=False)
    assert set(waiting["headers"]) <= set(merged(MESSAGES["ParkedForRetry"]["headers"])[0])
    assert not problems(MESSAGES["DeadLetter"]["headers"], dead["headers"])
