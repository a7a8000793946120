"""A department's connection to the appeals bus, with pika and nothing of the suite's code.

    client = DepartmentClient("amqp://user:pass@broker:5672/", "zjj")
    def handle(message):                          # an Incoming
        if message.kind == "assignment":
            client.sign(message.body, operator="李四")
    client.listen(handle)

Delivery is **at least once**. The suite may send the same message twice (same
`message_id`), and a message whose handler ran may come back when the ack did not reach
the broker (crash, lost connection). This client skips a `message_id` it already handled
*in this process*; a department that must never act twice also records the ids it
processed in its own database (the contract obliges it to deduplicate).

What happens to a message:

* the handler returned -> acked (and its id remembered);
* the handler raised `TemporaryError` (its system is down, the broker refused a
  publish) -> held for a growing delay (1 s ... 60 s), then returned to the queue with
  `nack(requeue=True)`; tried again without limit, because nothing is wrong with the
  message;
* the handler raised anything else -> returned to the queue after a short delay, up to
  `max_attempts` times for one `message_id`; then given up: logged at ERROR level with its
  message_id, kind, reg_no and the error - never its body, and phone numbers and the
  contact's name masked in the error text - (and passed, whole, to `on_give_up`, which may
  keep it where the department keeps personal data) and rejected (`nack(requeue=False)`;
  the `dispatch.<code>` queues have no dead-letter queue);
* a body that is not a JSON object is given up at once the same way (no retry fixes it).

Replies are published to `appeals.replies` with routing key `dept.<code>.<action>`,
persistent, `application/json`, `mandatory`, with publisher confirms and a fresh
`message_id` (or the one you pass: republish with the *same* id when unsure whether the
broker took a reply - the suite processes a `message_id` once).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pika
from pika import exceptions as amqp_errors

from department_client import contract

log = logging.getLogger("department_client")
HEARTBEAT_SECONDS = 30  # unless the URI sets its own

DEFER = object()
"""Returned by a handler: keep the message unacked; settle it later with `client.settle()`."""


class TemporaryError(Exception):
    """The handler could not do its work now (its own system is down); retry without limit."""


# The channel or connection is gone: nothing can be acked or nacked any more.
_BROKEN = (amqp_errors.AMQPConnectionError, amqp_errors.ChannelClosed,
           amqp_errors.ChannelWrongStateError)


@dataclass
class Incoming:
    """One message from `dispatch.<code>`. `body` is the JSON object as sent."""

    body: dict[str, Any]
    message_id: str
    routing_key: str = ""
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    raw: bytes = field(default=b"", repr=False)
    delivery_tag: int = field(default=0, repr=False)
    generation: int = field(default=0, repr=False)

    @property
    def kind(self) -> str | None:
        return self.body.get("kind")

    @property
    def reg_no(self) -> str | None:
        return self.body.get("reg_no")

    @property
    def assignment_id(self) -> str | None:
        return self.body.get("assignment_id")

    @property
    def known_kind(self) -> bool:
        return self.kind in contract.KNOWN_KINDS

    @property
    def changed_deadlines(self) -> dict[str, datetime]:
        """For a `deadlines_changed` message: the new dates by name (sign_by, respond_by, …)."""
        return contract.changed_deadlines(self.body)


class SeenIds:
    """The last `maxlen` message ids handled, oldest forgotten first."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self.maxlen = maxlen
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: str) -> None:
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)


def message_id_of(props: Any, raw: bytes, body: Any = None) -> str:
    """The AMQP message_id; else the body's; else a SHA-256 of the body (as the suite does)."""
    if props is not None and getattr(props, "message_id", None):
        return props.message_id
    if isinstance(body, dict) and isinstance(body.get("message_id"), str) and body["message_id"]:
        return body["message_id"]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def decode(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw.decode("utf-8"))
    if not isinstance(body, dict):
        raise ValueError("body is not a JSON object")
    return body


# A phone number in a text bound for a log line: a mainland mobile (digits grouped any way,
# full-width too, maybe after +86) or an area-coded landline.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_PHONE = re.compile(r"(?<![0-9])(?:\(?(?:\+|00)?86\)?[ -]?)?"
                    r"(1[3-9](?:[ -]{0,2}[0-9]){9}|\(?0[0-9]{2,3}\)?[ -]?[0-9]{3,4}[ -]?[0-9]{4})"
                    r"(?![0-9])")


def _mask_phone(match: re.Match) -> str:
    digits = re.sub(r"[^0-9]", "", match.group(1))
    return digits[:3] + "****" + digits[-4:]


def loggable(text: Any, message: Incoming | None = None) -> str:
    """`text` (an error, a reply_result's errors) fit for a log line: phone numbers masked,
    and the enterprise contact's name, when `message` carries one (张三 -> 张*). Personal
    data stays in the department's own systems, not in its logs."""
    out = _PHONE.sub(_mask_phone, str(text).translate(_FOLD))
    enterprise = message.body.get("enterprise") if message is not None else None
    name = enterprise.get("contact_name") if isinstance(enterprise, dict) else None
    if isinstance(name, str) and len(name.strip()) >= 2:
        out = out.replace(name.strip(), name.strip()[0] + "*" * (len(name.strip()) - 1))
    return out


def _log_give_up(message: Incoming, error: BaseException | str) -> None:
    # Never the body: it holds the enterprise's contact (name, phone) and its request.
    log.error("giving up on message %s (%s) for %s: %s", message.message_id, message.kind,
              message.reg_no, loggable(error, message))


class DepartmentClient:
    """Consume `dispatch.<dept_code>` and publish replies as department `dept_code`.

    One connection, made lazily (`connect()` or first use), closed by `close()` or `with`.
    Not thread-safe (pika's BlockingConnection): use it from one thread; `stop()` is the
    only method another thread may call.
    """

    def __init__(self, amqp_uri: str, dept_code: str, *, prefetch: int = 20, max_attempts: int = 5,
                 retry_delay: float = 1.0, max_retry_delay: float = 60.0, publish_attempts: int = 3,
                 on_give_up: Callable[[Incoming, BaseException | str], None] | None = None,
                 seen: SeenIds | None = None, client_name: str = "department_client") -> None:
        if not amqp_uri:
            raise ValueError("no AMQP URI (e.g. amqp://user:password@broker:5672/)")
        self.amqp_uri = amqp_uri
        # Replies carry the user we log in as; the broker refuses any other, and the suite
        # refuses a reply for this department from anyone but `dept-<code>`.
        self.user_id = pika.URLParameters(amqp_uri).credentials.username
        self.dept_code = contract.check_dept_code(dept_code)
        self.queue = contract.dispatch_queue(dept_code)
        self.prefetch = prefetch
        self.max_attempts = max(1, max_attempts)
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.publish_attempts = max(1, publish_attempts)
        self.on_give_up = on_give_up or _log_give_up
        self.seen = seen if seen is not None else SeenIds()
        self.client_name = client_name
        self._conn: pika.BlockingConnection | None = None
        self._pub: Any = None
        self._consume: Any = None
        self._generation = 0
        self._failures: dict[str, int] = {}
        self._temporary_streak = 0
        self._unsettled: dict[int, Incoming | None] = {}  # delivery tag -> held or deferred message
        self._handled = 0
        self._consuming = False
        self._stop = threading.Event()

    # --- connection ------------------------------------------------------------------

    def connect(self) -> DepartmentClient:
        if self._conn is None or not self._conn.is_open:
            params = pika.URLParameters(self.amqp_uri)
            if "heartbeat" not in urllib.parse.urlsplit(self.amqp_uri).query:
                # Both ends notice a dead connection within about a minute; pika answers
                # heartbeats whenever it waits (consume, self.sleep, confirms).
                params.heartbeat = HEARTBEAT_SECONDS
            params.client_properties = {"connection_name": f"{self.client_name}:{self.dept_code}"}
            self._conn = pika.BlockingConnection(params)
            self._pub = None
            self._generation += 1
        return self

    def close(self) -> None:
        conn, self._conn, self._pub, self._consume = self._conn, None, None, None
        self._unsettled.clear()
        if conn is not None and conn.is_open:
            with contextlib.suppress(amqp_errors.AMQPError):
                conn.close()

    def __enter__(self) -> DepartmentClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sleep(self, seconds: float) -> None:
        """Wait while keeping the connection alive (heartbeats), or plainly when not connected."""
        if self._conn is not None and self._conn.is_open:
            self._conn.sleep(seconds)
        else:
            time.sleep(seconds)

    def _publish_channel(self) -> Any:
        self.connect()
        if self._pub is None or not self._pub.is_open:
            self._pub = self._conn.channel()
            self._pub.confirm_delivery()
        return self._pub

    # --- replies ---------------------------------------------------------------------

    def publish_reply(self, action: str, body: dict[str, Any], message_id: str | None = None,
                      trace_headers: dict[str, str] | None = None) -> str:
        """Publish a reply body as it is (see contract.build_reply); returns its message_id.

        Persistent, mandatory, confirmed. On a lost connection it reconnects and publishes
        again with the same message_id (unless a `listen` is running on this client: then
        the error propagates and the listener's reconnect takes over).
        """
        routing_key = contract.reply_routing_key(self.dept_code, action)
        message_id = message_id or str(uuid.uuid4())
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
        props = pika.BasicProperties(content_type=contract.CONTENT_TYPE, delivery_mode=2,
                                     message_id=message_id, timestamp=int(time.time()),
                                     app_id=self.client_name, user_id=self.user_id,
                                     headers=dict(trace_headers or {}) or None)
        for attempt in range(1, self.publish_attempts + 1):
            try:
                self._publish_channel().basic_publish(contract.REPLIES_EXCHANGE, routing_key, raw, props,
                                                      mandatory=True)
                log.info("published %s %s for %s/%s", routing_key, message_id, body.get("reg_no"),
                         body.get("assignment_id"))
                return message_id
            except (amqp_errors.AMQPConnectionError, amqp_errors.ChannelClosed,
                    amqp_errors.ChannelWrongStateError):
                if self._consume is not None or attempt == self.publish_attempts:
                    raise
                log.warning("could not publish %s; trying again with the same message_id", message_id)
                self.close()
                time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
        raise AssertionError("unreachable")

    def reply(self, action: str, assignment: Any, *, message_id: str | None = None,
              replied_at: Any = None, operator: str | None = None, **fields: Any) -> str:
        body = contract.build_reply(action, assignment, replied_at=replied_at, operator=operator, **fields)
        return self.publish_reply(action, body, message_id, contract.trace_headers_of(assignment))

    def sign(self, assignment: Any, operator: str | None = None, **kw: Any) -> str:
        """签收. `assignment`: the assignment message, an Incoming, or (assignment_id, reg_no)."""
        return self.reply("sign", assignment, operator=operator, **kw)

    def respond(self, assignment: Any, outcome: str, reply: str, contacted_at: Any, **kw: Any) -> str:
        """部门响应 (outcome solved | explained | not_solvable)."""
        return self.reply("respond", assignment, outcome=outcome, reply=reply, contacted_at=contacted_at,
                          **kw)

    def return_(self, assignment: Any, reason_code: str, reason: str, suggested_unit: str | None = None,
                **kw: Any) -> str:
        """退单, before the assignment's `return_by`."""
        return self.reply("return", assignment, reason_code=reason_code, reason=reason,
                          suggested_unit=suggested_unit, **kw)

    def extend(self, assignment: Any, requested_until: Any, reason: str, **kw: Any) -> str:
        """延期申请."""
        return self.reply("extend", assignment, requested_until=requested_until, reason=reason, **kw)

    # --- reading ---------------------------------------------------------------------

    def _incoming(self, method: Any, props: Any, raw: bytes) -> tuple[Incoming, str | None]:
        error = None
        try:
            body = decode(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            body, error = {}, f"undecodable body: {exc}"
        return Incoming(body=body, message_id=message_id_of(props, raw, body),
                        routing_key=method.routing_key, redelivered=bool(method.redelivered),
                        headers=dict(getattr(props, "headers", None) or {}), raw=raw,
                        delivery_tag=method.delivery_tag, generation=self._generation), error

    def fetch(self, limit: int = 20) -> list[Incoming]:
        """Up to `limit` waiting messages, without consuming them: they are fetched unacked
        and all returned to the queue (`nack(requeue=True)`); they come back marked redelivered."""
        self.connect()
        channel = self._conn.channel()
        messages: list[Incoming] = []
        try:
            while len(messages) < limit:
                method, props, raw = channel.basic_get(self.queue, auto_ack=False)
                if method is None:
                    break
                messages.append(self._incoming(method, props, raw)[0])
            if messages:
                channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        finally:
            if channel.is_open:
                channel.close()
        return messages

    def stop(self) -> None:
        """Ask a running `listen` to return (from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def holds(self, message: Incoming) -> bool:
        """Whether `message` is still held unacked by the running listen (deferred or not selected)."""
        return (self._consume is not None and message.generation == self._generation
                and message.delivery_tag in self._unsettled)

    def settle(self, message: Incoming) -> bool:
        """Ack a message the handler deferred (returned DEFER). False when it is no longer
        held by this connection (it went back to the queue and will be delivered again)."""
        if not self.holds(message):
            return False
        del self._unsettled[message.delivery_tag]
        self._consume.basic_ack(message.delivery_tag)
        self._done(message)
        return True

    def _done(self, message: Incoming) -> None:
        self.seen.add(message.message_id)
        self._failures.pop(message.message_id, None)
        self._handled += 1

    def listen(self, handler: Callable[[Incoming], Any], stop_after: int | None = None, *,
               select: Callable[[Incoming], bool] | None = None, tick: Callable[[], None] | None = None,
               idle_timeout: float | None = None, reconnect: bool = False,
               poll_interval: float = 0.5) -> int:
        """Consume `dispatch.<code>` and call `handler(message)` for each new message.

        Returns the number of messages handled (acked after the handler). Stops after
        `stop_after` of them, after `idle_timeout` seconds without a message, or on `stop()`.
        `select(message) -> False` leaves a message unacked and untouched; every message
        still held (not selected, or deferred) goes back to the queue when listen returns.
        `tick()` is called at least every `poll_interval` seconds. With `reconnect`, a lost
        connection is re-established with a growing delay; messages not yet acked are
        delivered again by the broker.
        """
        self._stop.clear()
        self._handled = 0
        backoff = 0
        while True:
            self._consuming = False
            try:
                self._consume_loop(handler, stop_after, select, tick, idle_timeout, poll_interval)
                return self._handled
            except _BROKEN as exc:
                if not reconnect or self._stop.is_set():
                    raise
                self.close()
                if self._consuming:
                    backoff = 0
                delay = min(self.retry_delay * 2 ** backoff, self.max_retry_delay)
                backoff += 1
                log.warning("no broker or no queue %s (%r); trying again in %.1fs", self.queue, exc, delay)
                self._stop.wait(delay)
                if self._stop.is_set():
                    return self._handled

    def _consume_loop(self, handler: Callable[[Incoming], Any], stop_after: int | None,
                      select: Callable[[Incoming], bool] | None, tick: Callable[[], None] | None,
                      idle_timeout: float | None, poll_interval: float) -> None:
        self.connect()
        channel = self._conn.channel()
        channel.basic_qos(prefetch_count=self.prefetch)
        self._consume = channel
        self._generation += 1  # delivery tags are per channel: older messages cannot be settled
        self._unsettled.clear()
        last_message = time.monotonic()
        try:
            for method, props, raw in channel.consume(self.queue, inactivity_timeout=poll_interval):
                if not self._consuming:
                    self._consuming = True
                    log.info("listening on %s", self.queue)
                if tick is not None:
                    tick()
                if self._stop.is_set() or (stop_after is not None and self._handled >= stop_after):
                    if method is not None:  # not ours to handle any more: back to the queue
                        self._unsettled[method.delivery_tag] = None
                    return
                if method is None:
                    if idle_timeout is not None and time.monotonic() - last_message > idle_timeout:
                        return
                    continue
                last_message = time.monotonic()
                message, error = self._incoming(method, props, raw)
                if select is not None and not select(message):
                    self._unsettled[method.delivery_tag] = message
                    continue
                if error is not None:
                    self.on_give_up(message, error)
                    channel.basic_nack(method.delivery_tag, requeue=False)
                    continue
                if message.message_id in self.seen:
                    log.info("skipping %s (%s): already handled", message.message_id, message.kind)
                    channel.basic_ack(method.delivery_tag)
                    continue
                self._dispatch(channel, handler, message)
                if stop_after is not None and self._handled >= stop_after:
                    return
        finally:
            self._consume = None
            self._release(channel)

    def _release(self, channel: Any) -> None:
        held, self._unsettled = list(self._unsettled), {}
        if not channel.is_open:
            return
        try:
            channel.cancel()  # returns what pika buffered to the queue
            for tag in held:
                channel.basic_nack(tag, requeue=True)
            channel.close()
        except amqp_errors.AMQPError as exc:
            log.warning("could not return held messages (%s); the broker requeues them", exc)

    def _dispatch(self, channel: Any, handler: Callable[[Incoming], Any], message: Incoming) -> None:
        tag = message.delivery_tag
        try:
            result = handler(message)
        except _BROKEN:
            raise
        except TemporaryError as exc:
            self._temporary_streak += 1
            delay = min(self.retry_delay * 2 ** (self._temporary_streak - 1), self.max_retry_delay)
            log.warning("message %s (%s) not handled now (%s); back to the queue in %.1fs",
                        message.message_id, message.kind, loggable(exc, message), delay)
            self._wait_then_requeue(channel, tag, delay)
            return
        except Exception as exc:
            attempts = self._failures[message.message_id] = self._failures.get(message.message_id, 0) + 1
            if attempts >= self.max_attempts:
                # The traceback, with the error's text masked like any other log text.
                log.error("handler failed on %s (%s) %d times:\n%s", message.message_id,
                          message.kind, attempts,
                          loggable("".join(traceback.format_exception(exc)), message))
                self._failures.pop(message.message_id, None)
                self.on_give_up(message, exc)
                channel.basic_nack(tag, requeue=False)
                return
            delay = min(self.retry_delay * 2 ** (attempts - 1), self.max_retry_delay)
            log.warning("handler failed on %s (%s), attempt %d/%d: %s; back to the queue in %.1fs",
                        message.message_id, message.kind, attempts, self.max_attempts,
                        loggable(repr(exc), message), delay)
            self._wait_then_requeue(channel, tag, delay)
            return
        self._temporary_streak = 0
        if result is DEFER:
            self._unsettled[tag] = message
            return
        channel.basic_ack(tag)
        self._done(message)

    def _wait_then_requeue(self, channel: Any, tag: int, delay: float) -> None:
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._conn.sleep(min(left, 0.5))
        channel.basic_nack(tag, requeue=True)
