"""Nameko glue shared by the services: storage with its outbox relay, a consumer that
never loses a message, metrics per entrypoint.

nameko's own @consume acks a message whose handler raised, dropping it. ReliableConsumer
instead republishes a failing message to a delay queue (bounded retries with backoff)
and finally to the queue's dead-letter queue with the error, and acks only after the
broker confirmed that copy.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import eventlet
from eventlet.event import Event as GreenEvent
from kombu import Queue
from nameko.extensions import DependencyProvider, Entrypoint
from nameko.messaging import QueueConsumer
from nameko.web.handlers import HttpRequestHandler
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge, Histogram

from appeals_common import tracing
from appeals_common.clock import Clock
from appeals_common.db import OutboxRelay, Store, is_unreachable, unreachable_reason
from appeals_common.envelope import EVENTS_EXCHANGE
from appeals_common.privacy import mask_text
from appeals_common.publisher import ConfirmingPublisher
from appeals_common.settings import Settings, load_settings
from appeals_common.topology import REPLIES_EXCHANGE, dead_letter_queue, retry_exchange

log = logging.getLogger("appeals.nameko")

ENTRYPOINT_LATENCY = Histogram(
    "appeals_entrypoint_seconds", "Time spent in a service entrypoint",
    ["service", "entrypoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ENTRYPOINT_ERRORS = Counter(
    "appeals_entrypoint_errors_total", "Entrypoint calls that raised", ["service", "entrypoint"]
)
PURGE_EVERY_SECONDS = 600
OUTBOX_BACKLOG = Gauge("appeals_outbox_backlog", "Outbox messages not yet published", ["service"])
OUTBOX_PUBLISHED = Counter("appeals_outbox_published_total", "Outbox messages published",
                           ["service"])
DEPENDENCY_UP = Gauge(
    "appeals_dependency_up", "1 when the service reaches the dependency, 0 while it cannot "
    "(its consumers then hold their messages instead of failing them)",
    ["service", "dependency"])
OUTAGE_HOLDS = Counter(
    "appeals_messages_held_for_outage_total",
    "Messages a consumer held back while its database was unreachable, then requeued",
    ["service", "queue"])
MESSAGES_RETRIED = Counter("appeals_messages_retried_total",
                           "Consumed messages sent to a retry delay queue", ["service", "queue"])
MESSAGES_DEAD_LETTERED = Counter("appeals_messages_dead_lettered_total",
                                 "Consumed messages moved to a dead-letter queue",
                                 ["service", "queue"])
MESSAGES_WAITING = Counter("appeals_messages_waiting_total",
                           "Consumed messages put back to wait for a predecessor (NotYet)",
                           ["service", "queue"])
# How long an event may wait for its predecessor before it is dead-lettered like any other
# failure: the retry delays, then the longest of them again, until this much has passed.
WAIT_BUDGET_MS = 600_000


class Unprocessable(Exception):
    """A message no retry can fix: it goes straight to the dead-letter queue."""


class NotYet(LookupError):
    """The message needs one that has not arrived yet (events may arrive out of order).

    Not a failure: the consumer puts it back to wait (its own counter `x-wait-attempt`
    and budget WAIT_BUDGET_MS, logged at INFO, counted in appeals_messages_waiting_total),
    and dead-letters it only once the budget is spent. A LookupError, so code that
    catches a missing row still does."""


@dataclass(frozen=True)
class Delivery:
    """A message as consumed, before any decoding: handlers decide what is valid."""

    body: bytes
    routing_key: str  # as first published, even after a retry
    exchange: str
    message_id: str | None
    content_type: str | None
    headers: dict[str, Any]
    attempt: int
    # The broker-validated sender (AMQP user_id) of the message as first published.
    user_id: str | None = None
    # How many times it already waited for a predecessor (NotYet); the suite's own header.
    waits: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


class ServiceRuntime:
    """What a service method gets: its store, clock and settings."""

    def __init__(self, service: str, settings: Settings, store: Store, clock: Clock) -> None:
        self.service = service
        self.settings = settings
        self.store = store
        self.clock = clock

    def now(self) -> datetime:
        return self.clock.now()

    def unit_of_work(self):
        return self.store.unit_of_work(self.clock.now())


class Runtime(DependencyProvider):
    """Storage, clock and the outbox relay of one service.

    `metadata` is the service's own SQLAlchemy metadata (with outbox and inbox tables).
    """

    def __init__(self, service: str, metadata: Any) -> None:
        self.service = service
        self.metadata = metadata
        self._wake = GreenEvent()
        self._running = False

    def setup(self) -> None:
        self.settings = load_settings()
        self.store = Store(self.settings.database_url_for(self.service), self.metadata,
                           producer=self.service, pool_size=self.settings.db_pool_size)
        self.store.create_schema()
        self.store.on_commit.append(self.wake)
        self.publisher = ConfirmingPublisher(self.settings.amqp_uri)
        self.relay = OutboxRelay(self.store, self.publisher.publish_batch,
                                 batch_size=self.settings.relay_batch_size)
        self.clock = self.settings.clock()
        self.runtime = ServiceRuntime(self.service, self.settings, self.store, self.clock)

    def start(self) -> None:
        self._running = True
        self.container.spawn_managed_thread(self._relay_loop, identifier="outbox-relay")

    def stop(self) -> None:
        self._running = False
        self.wake()
        self.publisher.close()
        self.store.dispose()

    kill = stop

    def wake(self) -> None:
        if not self._wake.ready():
            self._wake.send(True)

    def _relay_loop(self) -> None:
        failures = 0
        backlog_read = 0.0
        purged_at = time.monotonic()  # not at start-up: let the service settle first
        while self._running:
            try:
                while self._running:
                    published = self.relay.relay_once()
                    OUTBOX_PUBLISHED.labels(self.service).inc(published)
                    if published < self.relay.batch_size:
                        break
                if time.monotonic() - backlog_read > 5:  # a count per pass would cost a query each
                    OUTBOX_BACKLOG.labels(self.service).set(self.store.outbox_backlog())
                    backlog_read = time.monotonic()
                if time.monotonic() - purged_at > PURGE_EVERY_SECONDS:
                    self.relay.purge_published(
                        timedelta(hours=self.settings.outbox_retention_hours))
                    purged_at = time.monotonic()
                failures = 0
            except Exception:
                failures += 1
                log.exception("outbox relay pass failed (%s in a row)", failures)
                eventlet.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            # Sleep until a commit wakes us, or poll: rows committed by a crashed
            # replica, or unroutable rows whose backoff has passed, still go out.
            self._wake.wait(self.settings.relay_poll_seconds)
            if self._wake.ready():
                self._wake.reset()

    def get_dependency(self, worker_ctx: Any) -> ServiceRuntime:
        return self.runtime


class Metrics(DependencyProvider):
    """Latency and errors for every entrypoint of the service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._started: dict[Any, float] = {}

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = self._started.pop(worker_ctx, None)
        name = worker_ctx.entrypoint.method_name
        if started is not None:
            ENTRYPOINT_LATENCY.labels(self.service, name).observe(time.perf_counter() - started)
        if exc_info is not None:
            ENTRYPOINT_ERRORS.labels(self.service, name).inc()


class Tracing(DependencyProvider):
    """A span per unit of work, continuing the trace it was handed: a consumed message's
    `traceparent` header, an HTTP request's. Timers start their own; what they emit about
    an appeal joins the appeal's trace (UnitOfWork.emit). /metrics and /health are not
    traced: scrapes and probes would drown the appeals."""

    UNTRACED_PATHS = ("/metrics", "/health")

    def __init__(self) -> None:
        self._spans: dict[Any, tracing.WorkSpan] = {}

    def worker_setup(self, worker_ctx: Any) -> None:
        work = self._span_for(worker_ctx)
        if work is not None:
            self._spans[worker_ctx] = work.start()
            if isinstance(worker_ctx.entrypoint, ReliableConsumer):
                self._about_appeal(worker_ctx)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        work = self._spans.get(worker_ctx)
        if work is None:
            return
        if exc_info is not None:
            # Waiting for a predecessor or for the database is not the message's failure.
            quiet = issubclass(exc_info[0], NotYet) or is_unreachable(exc_info[1])
            work.fail(exc_info[1], error=not quiet)
        if isinstance(worker_ctx.entrypoint, ReliableConsumer):
            # One line per message handled: with the trace id and reg_no an operator finds
            # every step of one appeal in every service's log.
            outcome = "ok" if exc_info is None else f"not done ({exc_info[0].__name__})"
            log.info("handled %s %s: %s", worker_ctx.args[0].routing_key,
                     worker_ctx.args[0].message_id, result if outcome == "ok" and
                     isinstance(result, str) else outcome)

    def worker_teardown(self, worker_ctx: Any) -> None:
        work = self._spans.pop(worker_ctx, None)
        if work is not None:
            work.end()

    @staticmethod
    def _about_appeal(worker_ctx: Any) -> None:
        """Which appeal a consumed event or reply is about, for its span and log lines. An
        event handed over with its trace: this service remembers that trace for the appeal
        (once, in the handler's transaction), so what a timer or a person later does to
        the appeal here joins it."""
        delivery: Delivery = worker_ctx.args[0]
        if delivery.exchange not in (EVENTS_EXCHANGE, REPLIES_EXCHANGE):
            return  # an inbound appeal has no reg_no yet: its registration names it
        try:
            body = json.loads(delivery.body)
            data = body.get("data") if isinstance(body.get("data"), dict) else body
            reg_no = data.get("reg_no")
            tracing.annotate(reg_no=reg_no if isinstance(reg_no, str) else None)
            traceparent = tracing.carrier_of(delivery.headers).get(tracing.TRACEPARENT)
            appeal_id = body.get("appeal_id")
            if (delivery.exchange == EVENTS_EXCHANGE and traceparent
                    and isinstance(appeal_id, str) and 0 < len(appeal_id) <= 64):
                tracing.note_appeal_trace(appeal_id, traceparent[:64])
        except Exception as exc:  # a trace is never worth failing or delaying the work
            log.debug("could not note the appeal of %s: %r", delivery.message_id, exc)

    def _span_for(self, worker_ctx: Any) -> tracing.WorkSpan | None:
        entrypoint = worker_ctx.entrypoint
        service = self.container.service_name
        if isinstance(entrypoint, ReliableConsumer):
            delivery: Delivery = worker_ctx.args[0]
            event_type = delivery.routing_key if delivery.exchange == EVENTS_EXCHANGE else None
            return tracing.WorkSpan(
                f"{entrypoint.queue_name} process", kind=SpanKind.CONSUMER,
                headers=delivery.headers,
                attributes={"messaging.system": "rabbitmq", "messaging.operation": "process",
                            "messaging.destination.name": entrypoint.queue_name,
                            "messaging.rabbitmq.destination.routing_key": delivery.routing_key,
                            "messaging.message.id": delivery.message_id,
                            "appeals.attempt": delivery.attempt, "appeals.sender": delivery.user_id},
                log_fields={k: v for k, v in {
                    "queue": entrypoint.queue_name, "message_id": delivery.message_id,
                    "event_type": event_type}.items() if v})
        if isinstance(entrypoint, HttpRequestHandler):
            request = worker_ctx.args[0]
            if request.path in self.UNTRACED_PATHS:
                return None
            route = f"{entrypoint.method} {entrypoint.url}"
            return tracing.WorkSpan(route, kind=SpanKind.SERVER, headers=request.headers,
                                    attributes={"http.request.method": request.method,
                                                "http.route": entrypoint.url,
                                                "url.path": request.path},
                                    log_fields={"route": route})
        name = f"{service}.{entrypoint.method_name}"
        return tracing.WorkSpan(name, kind=SpanKind.INTERNAL, log_fields={"work": name})


class RawQueueConsumer(QueueConsumer):
    """nameko's queue consumer, handing over undecoded messages.

    kombu would otherwise decode JSON itself and loop on a body it cannot decode.
    """

    def get_consumers(self, consumer_cls: Any, channel: Any) -> Any:
        for provider in self._providers:
            consumer = consumer_cls(queues=[provider.queue], on_message=partial(
                self.handle_message, provider, None), accept=None)
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[provider] = consumer
        return self._consumers.values()


class ReliableConsumer(Entrypoint):
    queue_consumer = RawQueueConsumer()

    def __init__(self, queue_name: str, **kwargs: Any) -> None:
        self.queue_name = queue_name
        # The suite declares the topology (appeals topology apply); consumers never do,
        # so arguments such as the queue type live in one place.
        self.queue = Queue(queue_name, no_declare=True)
        self._publisher: ConfirmingPublisher | None = None
        super().__init__(**kwargs)

    def setup(self) -> None:
        self.settings = load_settings()
        self._stopping = False
        self.queue_consumer.register_provider(self)

    def stop(self) -> None:
        self._stopping = True  # a message held through an outage is handed back now
        self.queue_consumer.unregister_provider(self)
        if self._publisher is not None:
            self._publisher.close()

    @property
    def publisher(self) -> ConfirmingPublisher:
        if self._publisher is None:
            self._publisher = ConfirmingPublisher(self.settings.amqp_uri)
        return self._publisher

    def handle_message(self, _body: None, message: Any) -> None:
        try:
            delivery = self._delivery(message)
        except Exception as exc:  # nothing a publisher sends may stop the consumer
            self._refuse_unreadable(message, exc)
            return
        try:
            self.container.spawn_worker(self, (delivery,), {},
                                        handle_result=partial(self.handle_result, message, delivery))
        except Exception:  # container being killed: the broker redelivers
            self.queue_consumer.requeue_message(message)

    def _delivery(self, message: Any) -> Delivery:
        """The message as handlers see it. Routing key, sender and attempt are the broker's,
        except on a message the suite itself sent back (retry, replay): its headers carry
        them from the first delivery. A publisher's own headers prove nothing."""
        props = message.properties
        headers = dict(message.headers or {})
        info = message.delivery_info
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        user_id = _text_or_none(props.get("user_id"))
        routing_key, exchange = str(info.get("routing_key", "")), str(info.get("exchange", ""))
        attempt, waits = 1, 0
        if self.settings.trusts_bus_user(user_id) and "x-original-routing-key" in headers:
            routing_key = str(headers["x-original-routing-key"])
            exchange = str(headers.get("x-original-exchange", ""))
            user_id = _text_or_none(headers.get("x-original-user-id"))
            attempt = _positive_int(headers.get("x-attempt"), default=1)
            waits = _positive_int(headers.get("x-wait-attempt"), default=1) - 1
        return Delivery(body=body, routing_key=routing_key, exchange=exchange,
                        message_id=_text_or_none(props.get("message_id")),
                        content_type=_text_or_none(props.get("content_type")
                                                   or message.content_type),
                        headers=headers, attempt=attempt, user_id=user_id, waits=waits)

    def _refuse_unreadable(self, message: Any, exc: Exception) -> None:
        """A message whose properties cannot even be read: kept in the dead-letter queue."""
        log.error("unreadable message on %s dead-lettered: %r", self.queue_name, exc)
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        delivery = Delivery(body=raw, routing_key=str(message.delivery_info.get("routing_key", "")),
                            exchange=str(message.delivery_info.get("exchange", "")),
                            message_id=None, content_type=None, headers={}, attempt=1)
        self.handle_result(message, delivery, None,
                           exc_info=(Unprocessable, Unprocessable(f"unreadable: {exc!r}"), None))

    def handle_result(self, message: Any, delivery: Delivery, worker_ctx: Any,
                      result: Any = None, exc_info: Any = None) -> tuple[Any, Any]:
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return result, exc_info
        if is_unreachable(exc_info[1]):
            self._hold_through_outage(message, delivery, exc_info[1])
            return result, exc_info
        try:
            self._park(delivery, exc_info)
        except Exception:
            log.exception("could not park failing message %s; requeueing it", delivery.message_id)
            eventlet.sleep(1)  # don't spin on a broker that refuses us
            self.queue_consumer.requeue_message(message)
        else:
            self.queue_consumer.ack_message(message)
        return result, exc_info

    def _hold_through_outage(self, message: Any, delivery: Delivery, exc: BaseException) -> None:
        """The database is unreachable: not the message's fault. Keep it unacked (its
        worker slot busy, so with the prefetch the consumer stops taking messages) until
        the database answers, then hand it back to the queue to be handled again at once.
        Nothing goes to retry or dead-letter for this, however long the outage."""
        service = self.container.service_name
        DEPENDENCY_UP.labels(service, "database").set(0)
        OUTAGE_HOLDS.labels(service, self.queue_name).inc()
        log.warning("%s: database unreachable (%s); holding message %s until it is back",
                    self.queue_name, type(exc).__name__, delivery.message_id)
        delay, since = OUTAGE_PROBE_FIRST_SECONDS, time.monotonic()
        while not self._stopping and self._database_problem() is not None:
            eventlet.sleep(delay)
            delay = min(delay * 2, OUTAGE_PROBE_MAX_SECONDS)
        DEPENDENCY_UP.labels(service, "database").set(1)
        log.info("%s: database answers again after %.1f s; message %s goes back to the queue",
                 self.queue_name, time.monotonic() - since, delivery.message_id)
        self.queue_consumer.requeue_message(message)

    def _database_problem(self) -> str | None:
        runtime = next((d for d in self.container.dependencies if isinstance(d, Runtime)), None)
        return None if runtime is None else unreachable_reason(runtime.store.engine)

    def _park(self, delivery: Delivery, exc_info: Any) -> None:
        """Send a failed message to its next retry delay, or to the dead-letter queue."""
        service = self.container.service_name
        # A database error may quote a phone number or a name: masked for logs and headers.
        error = mask_text("".join(traceback.format_exception_only(exc_info[0], exc_info[1])).strip())
        headers = dict(delivery.headers)
        headers.pop("x-death", None)  # broker bookkeeping from earlier delays
        headers.update({
            "x-original-exchange": delivery.exchange,
            "x-original-routing-key": delivery.routing_key,
            "x-original-user-id": delivery.user_id or "",
            "x-last-error": error[:2000],
            "x-failed-queue": self.queue_name,
            "x-failed-service": service,
        })
        delays = self.settings.retry_delays_ms
        wait = _wait_delay(delivery, exc_info, delays)
        if wait is not None:  # out of order: a quiet wait, not a failure
            headers["x-wait-attempt"] = delivery.waits + 2  # the delivery after this wait
            target = (retry_exchange(wait), self.queue_name)
            MESSAGES_WAITING.labels(service, self.queue_name).inc()
            log.info("message %s on %s waits %sms for its predecessor (wait %s): %s",
                     delivery.message_id, self.queue_name, wait, delivery.waits + 1, error)
        elif (delivery.attempt <= len(delays) and not issubclass(exc_info[0], Unprocessable)
              and not issubclass(exc_info[0], NotYet)):
            delay = delays[delivery.attempt - 1]
            headers["x-attempt"] = delivery.attempt + 1
            target = (retry_exchange(delay), self.queue_name)
            MESSAGES_RETRIED.labels(service, self.queue_name).inc()
            log.warning("handler for %s failed (attempt %s/%s), retrying in %sms: %s",
                        self.queue_name, delivery.attempt, len(delays) + 1, delay, error)
        else:
            headers["x-attempts"] = delivery.attempt
            if issubclass(exc_info[0], NotYet):
                headers["x-wait-attempts"] = delivery.waits + 1
            # Selectable even when the message came without a message_id (appeals dead-letters).
            headers["x-dead-letter-id"] = str(uuid.uuid4())
            headers["x-dead-lettered-at"] = datetime.now(UTC).isoformat()
            headers["x-error-traceback"] = mask_text("".join(traceback.format_exception(*exc_info)))[-8000:]
            target = ("", dead_letter_queue(self.queue_name))
            MESSAGES_DEAD_LETTERED.labels(service, self.queue_name).inc()
            log.error("handler for %s failed %s times; message %s dead-lettered as %s: %s",
                      self.queue_name, delivery.attempt, delivery.message_id,
                      headers["x-dead-letter-id"], error)
        self.publisher.publish_batch([{
            "exchange": target[0], "routing_key": target[1], "body": delivery.body,
            "message_id": delivery.message_id or "", "headers": headers,
            "content_type": delivery.content_type or "application/octet-stream",
        }])


reliable_consume = ReliableConsumer.decorator


def wait_schedule(delays: tuple[int, ...] | list[int], budget_ms: int | None = None) -> list[int]:
    """The delays an out-of-order message waits, one per try: the retry delays, then the
    longest of them again, until the budget is spent (at least one wait per delay)."""
    budget = WAIT_BUDGET_MS if budget_ms is None else budget_ms
    if not delays:
        return []
    schedule = list(delays)
    while sum(schedule) < budget:
        schedule.append(max(delays))
    return schedule


def _wait_delay(delivery: Delivery, exc_info: Any, delays: Any) -> int | None:
    """The delay before the next try of a message whose predecessor is missing (NotYet),
    or None: another failure, or its wait budget is spent (then it is dead-lettered)."""
    if exc_info is None or not issubclass(exc_info[0], NotYet):
        return None
    schedule = wait_schedule(tuple(delays))
    if delivery.waits >= len(schedule):
        return None
    return schedule[delivery.waits]


# Probing an unreachable database: soon at first (recovery in about a second), then
# every few seconds.
OUTAGE_PROBE_FIRST_SECONDS = 0.5
OUTAGE_PROBE_MAX_SECONDS = 5.0


def _text_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _positive_int(value: Any, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number >= 1 else default
