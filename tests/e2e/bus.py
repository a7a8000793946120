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


class Bus:
    def __init__(self, amqp_uri: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def close(self) -> None:
        self.conn.close()

    def publish(self, exchange: str, routing_key: str, body: bytes | dict,
                content_type: str = "application/json", message_id: str | None = None) -> str:
        message_id = message_id or str(uuid.uuid4())
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.ch.basic_publish(exchange, routing_key, raw, pika.BasicProperties(
            content_type=content_type, delivery_mode=2, message_id=message_id))
        return message_id

    def submit(self, body: dict | bytes, source: str = "hotline_12345", **kw: Any) -> str:
        return self.publish("appeals.inbound", f"appeal.submit.{source}", body, **kw)

    def reply(self, dept: str, action: str, body: dict, **kw: Any) -> str:
        return self.publish("appeals.replies", f"dept.{dept}.{action}", body, **kw)

    def wait_for(self, queue: str, match: Callable[[dict, Any], bool], timeout: float = 20.0
                 ) -> tuple[dict, Any]:
        """Consume from `queue` until a message matches; others are acked and passed over."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, props, raw = self.ch.basic_get(queue, auto_ack=True)
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
