"""Dead-letter queues: list, inspect and replay (DESIGN §6).

Listing takes every message unacknowledged and then gives them all back, so the queue's
order and content are unchanged. Replay republishes with confirms to the queue the
message failed in, then acks the dead letter: a crash in between duplicates, never loses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pika

from appeals_common.amqp_tools import blocking_channel
from appeals_common.identity import amqp_username


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    content_type: str | None


def peek(amqp_uri: str, queue: str, limit: int = 10_000) -> list[DeadLetter]:
    items: list[DeadLetter] = []
    with blocking_channel(amqp_uri) as channel:
        last_tag = None
        while len(items) < limit:
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            last_tag = method.delivery_tag
            items.append(DeadLetter(queue, props.message_id, dict(props.headers or {}), body,
                                    props.content_type))
        if last_tag is not None:
            channel.basic_nack(last_tag, multiple=True, requeue=True)
    return items


def summary(item: DeadLetter) -> dict[str, Any]:
    h = item.headers
    return {"queue": item.queue, "message_id": item.message_id,
            "failed_queue": h.get("x-failed-queue"), "attempts": h.get("x-attempts"),
            "dead_lettered_at": h.get("x-dead-lettered-at"), "error": h.get("x-last-error")}


def detail(item: DeadLetter) -> dict[str, Any]:
    try:
        body: Any = item.body.decode("utf-8")
    except UnicodeDecodeError:
        body = item.body.hex()
    return {**summary(item), "routing_key": item.headers.get("x-original-routing-key"),
            "exchange": item.headers.get("x-original-exchange"),
            "traceback": item.headers.get("x-error-traceback"),
            "content_type": item.content_type, "body": body}


def replay(amqp_uri: str, queue: str, message_id: str | None = None) -> int:
    """Send dead letters back to their failed queue with a fresh retry budget."""
    replayed = 0
    with blocking_channel(amqp_uri) as channel:
        channel.confirm_delivery()
        skipped = None
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            if message_id and props.message_id != message_id:
                skipped = method.delivery_tag
                continue
            headers = dict(props.headers or {})
            target = headers.get("x-failed-queue") or queue.removesuffix(".dlq")
            for key in ("x-attempt", "x-attempts", "x-death", "x-error-traceback"):
                headers.pop(key, None)
            headers["x-replayed"] = True
            # Sent as the operator's suite user: the consumer trusts the original routing
            # key and sender in the headers only from a suite user (appeals_common.identity).
            channel.basic_publish("", target, body, pika.BasicProperties(
                content_type=props.content_type, delivery_mode=2, message_id=props.message_id,
                headers=headers, user_id=amqp_username(amqp_uri)), mandatory=True)
            channel.basic_ack(method.delivery_tag)
            replayed += 1
        if skipped is not None:
            channel.basic_nack(skipped, multiple=True, requeue=True)
    return replayed
