"""An external system and a department, written with plain pika against the documented
bus contract (DESIGN §5) — deliberately not with the suite's own code."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika

from tests.e2e import suite_time


def poll(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Call `fn` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)


def appeal_body(source: str = "hotline_12345", **overrides: Any) -> dict[str, Any]:
    body = {
        "schema_version": 1, "source_system": source, "external_id": str(uuid.uuid4()),
        "channel": "hotline_12345", "submitted_at": suite_time.iso(),
        "enterprise": {"name": "昆明五华某某科技有限公司", "uscc": "91110000600037341L",
                       "contact_name": "张三", "contact_phone": "13800138000"},
        "title": "施工许可办理进度慢", "content": "我公司施工许可申请已提交两周，尚无答复。",
    }
    body.update(overrides)
    return body


_RIGHTFUL = object()  # publish as the user the routing key belongs to


class Bus:
    """Source systems and departments as they integrate: each connects as its own broker
    user and sets the AMQP `user_id` property to it (the broker checks it). Queues are
    read as their owner: `receipts.<source>` by `src-<source>`, `dispatch.<code>` by
    `dept-<code>`; anything else (and a user this run has no password for) as the test
    vhost's administrator."""

    def __init__(self, amqp_uri: str, passwords: dict[str, str] | None = None,
                 prefix: str = "") -> None:
        self.params = pika.URLParameters(amqp_uri)
        self.passwords = passwords or {}
        self.prefix = prefix
        self._channels: dict[str | None, tuple[pika.BlockingConnection, Any]] = {}

    def close(self) -> None:
        for conn, _ in self._channels.values():
            if conn.is_open:
                conn.close()
        self._channels.clear()

    def owner(self, routing_key_or_queue: str) -> str | None:
        """The broker user a routing key or queue belongs to, if this run has it."""
        parts = routing_key_or_queue.split(".")
        if parts[:2] == ["appeal", "submit"] and len(parts) == 3:
            user = f"{self.prefix}src-{parts[2]}"
        elif parts[0] == "receipts" and len(parts) == 2:
            user = f"{self.prefix}src-{parts[1]}"
        elif parts[0] in ("dept", "dispatch") and len(parts) in (2, 3):
            user = f"{self.prefix}dept-{parts[1]}"
        else:
            return None
        return user if user in self.passwords else None

    def channel(self, user: str | None) -> Any:
        """A confirming channel connected as ``user`` (None: the administrator)."""
        held = self._channels.get(user)
        if held is not None and held[0].is_open and held[1].is_open:
            return held[1]
        params = self.params
        if user is not None:
            params = pika.ConnectionParameters(
                host=self.params.host, port=self.params.port,
                virtual_host=self.params.virtual_host,
                credentials=pika.PlainCredentials(user, self.passwords[user]))
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        self._channels[user] = (conn, ch)
        return ch

    def publish(self, exchange: str, routing_key: str, body: bytes | dict,
                content_type: str = "application/json", message_id: str | None = None,
                as_user: Any = _RIGHTFUL, user_id: Any = _RIGHTFUL,
                headers: dict[str, Any] | None = None) -> str:
        """Publish as the routing key's rightful user (or ``as_user``), with ``user_id``
        set to the connection's user unless given (None: no user_id at all)."""
        user = self.owner(routing_key) if as_user is _RIGHTFUL else as_user
        login = user if user is not None else self.params.credentials.username
        message_id = message_id or str(uuid.uuid4())
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.channel(user).basic_publish(exchange, routing_key, raw, pika.BasicProperties(
            content_type=content_type, delivery_mode=2, message_id=message_id,
            user_id=login if user_id is _RIGHTFUL else user_id, headers=headers))
        return message_id

    def get(self, queue: str) -> tuple[Any, Any, bytes]:
        """One message from ``queue`` (read as its owner), acked; (None, None, None) if none."""
        return self.channel(self.owner(queue)).basic_get(queue, auto_ack=True)

    def submit(self, body: dict | bytes, source: str = "hotline_12345", **kw: Any) -> str:
        return self.publish("appeals.inbound", f"appeal.submit.{source}", body, **kw)

    def reply(self, dept: str, action: str, body: dict, **kw: Any) -> str:
        return self.publish("appeals.replies", f"dept.{dept}.{action}", body, **kw)

    def wait_for(self, queue: str, match: Callable[[dict, Any], bool], timeout: float = 20.0
                 ) -> tuple[dict, Any]:
        """Consume from `queue` until a message matches; others are acked and passed over."""
        deadline = time.monotonic() + timeout
        ch = self.channel(self.owner(queue))
        while time.monotonic() < deadline:
            method, props, raw = ch.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw}
            if match(body, props):
                return body, props
        raise TimeoutError(f"nothing matching on {queue} within {timeout}s")

    def receipt(self, message_id: str, source: str = "hotline_12345", timeout: float = 20.0
                ) -> dict:
        body, _ = self.wait_for(f"receipts.{source}",
                                lambda b, p: b.get("message_id") == message_id, timeout)
        return body

    def dept_message(self, dept: str, kind: str, reg_no: str, timeout: float = 20.0) -> dict:
        body, _ = self.wait_for(f"dispatch.{dept}",
                                lambda b, p: b.get("kind") == kind and b.get("reg_no") == reg_no,
                                timeout)
        return body


def reply_body(assignment: dict, **extra: Any) -> dict:
    return {"schema_version": 1, "assignment_id": assignment["assignment_id"],
            "reg_no": assignment["reg_no"], "replied_at": suite_time.iso(), **extra}
