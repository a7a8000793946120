"""Publishing with publisher confirms from inside a service (py-amqp, eventlet-friendly).

A whole batch is published and then its confirms awaited together: one broker round
trip per batch instead of one per message. `mandatory` makes the broker hand back a
message no queue is bound for, so the outbox keeps it instead of losing it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import amqp
from kombu import Connection

from appeals_common.identity import amqp_username

log = logging.getLogger("appeals.publisher")


class PublishError(RuntimeError):
    """The broker nacked a message or did not confirm it in time."""


HEARTBEAT_SECONDS = 30  # both ends notice a dead connection within about two of these


class ConfirmingPublisher:
    def __init__(self, amqp_uri: str, confirm_timeout: float = 30.0) -> None:
        self.amqp_uri = amqp_uri
        # Every message names its sender; the broker refuses any other than ours.
        self.user_id = amqp_username(amqp_uri)
        self.confirm_timeout = confirm_timeout
        self._lock = threading.Lock()  # green under eventlet's monkey patching
        self._conn: Connection | None = None
        self._channel: Any = None
        self._next_tag = 1
        self._acked: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: set[str] = set()

    def _ensure_channel(self) -> Any:
        if self._channel is not None and self._conn is not None and self._conn.connected:
            # Nothing reads this connection between batches: answer the broker's heartbeats
            # now (raises when it has missed too many, and the caller reconnects).
            self._conn.heartbeat_check()
            return self._channel
        self.close()
        conn = Connection(self.amqp_uri, heartbeat=HEARTBEAT_SECONDS)
        conn.connect()
        channel = conn.default_channel.connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._conn, self._channel, self._next_tag = conn, channel, 1
        self._acked.clear()
        self._nacked.clear()
        return channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._mark(self._acked, delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._mark(self._nacked, delivery_tag, multiple)

    def _mark(self, target: set[int], tag: int, multiple: bool) -> None:
        if multiple:
            target.update(t for t in range(1, tag + 1)
                          if t not in self._acked and t not in self._nacked)
        else:
            target.add(tag)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        if message_id:
            self._returned.add(message_id)

    def publish_batch(self, messages: list[dict[str, Any]]) -> set[str]:
        """Publish rows shaped like outbox rows; returns message_ids returned as unroutable.

        Raises PublishError when any message is nacked or unconfirmed; the caller
        republishes the batch (consumers dedupe by message_id).
        """
        if not messages:
            return set()
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._publish_locked(messages)
                except PublishError:
                    self.close()
                    raise
                except Exception as exc:
                    # A connection the broker (or the network) dropped while idle: one
                    # retry on a fresh connection; republishing is safe (dedupe by id).
                    self.close()
                    if attempt == 2:
                        raise PublishError(f"publish failed: {exc!r}") from exc
                    log.info("publisher connection lost (%r); reconnecting once", exc)
            raise AssertionError("unreachable")

    def _publish_locked(self, messages: list[dict[str, Any]]) -> set[str]:
        channel = self._ensure_channel()
        self._returned.clear()
        first = self._next_tag
        for row in messages:
            headers = row.get("headers") or {}
            if isinstance(headers, str):
                headers = json.loads(headers)
            msg = amqp.Message(
                row["body"], content_type=row.get("content_type", "application/json"),
                delivery_mode=2, message_id=row["message_id"], application_headers=headers,
                timestamp=int(time.time()), user_id=self.user_id,
            )
            channel.basic_publish(msg, exchange=row["exchange"], routing_key=row["routing_key"],
                                  mandatory=True)
            self._next_tag += 1
        last = self._next_tag - 1
        deadline = time.monotonic() + self.confirm_timeout
        pending = set(range(first, last + 1))
        while pending - self._acked - self._nacked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"{len(pending - self._acked)} messages not confirmed in time")
            try:
                self._conn.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        nacked = pending & self._nacked
        self._acked -= pending
        self._nacked -= pending
        if nacked:
            raise PublishError(f"broker nacked {len(nacked)} of {len(pending)} messages")
        return set(self._returned)

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # closing a broken connection may fail too
                log.debug("error closing publisher connection", exc_info=True)
