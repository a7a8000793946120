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

DEAD_LETTER_ID = "x-dead-letter-id"  # a UUID the consumer sets when it dead-letters a message


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    content_type: str | None

    @property
    def dead_letter_id(self) -> str | None:
        value = self.headers.get(DEAD_LETTER_ID)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return str(value) if value else None

    def selected_by(self, ident: str) -> bool:
        """Whether ``ident`` names this dead letter: its message_id or its dead-letter id
        (the one a message without message_id is known by)."""
        return bool(ident) and ident in (self.message_id, self.dead_letter_id)


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
            "dead_letter_id": item.dead_letter_id,
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
    """Send dead letters back to their failed queue with a fresh retry budget; with
    ``message_id``, only those it names (message_id or x-dead-letter-id)."""
    replayed = 0
    with blocking_channel(amqp_uri) as channel:
        channel.confirm_delivery()
        skipped = None
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            headers = dict(props.headers or {})
            if message_id and not DeadLetter(queue, props.message_id, headers, body,
                                             props.content_type).selected_by(message_id):
                skipped = method.delivery_tag
                continue
            target = headers.get("x-failed-queue") or queue.removesuffix(".dlq")
            for key in ("x-attempt", "x-attempts", "x-death", "x-error-traceback",
                        "x-wait-attempt", "x-wait-attempts", DEAD_LETTER_ID):
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
