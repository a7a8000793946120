"""Dead-letter depth on /metrics (DESIGN §8).

Each service reports how many messages wait in the dead-letter queues of the queues it
consumes (`<queue>.dlq`), read at scrape time with a passive queue.declare: the broker
answers with the count without creating or changing anything. The connection is kept
between scrapes (one per service process, with heartbeats answered at each scrape so a
dead one is noticed), reopened once when it has gone stale, and every read is bounded in time.

A scrape never fails because of the broker: when it cannot be read the gauge simply has
no samples and `appeals_dead_letter_read_errors_total` goes up, so an alert can tell
"no dead letters" from "could not look".
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

from kombu import Connection
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appeals_common.topology import SERVICE_QUEUES, dead_letter_queue

HEARTBEAT_SECONDS = 30
log = logging.getLogger("appeals.metrics.dead_letters")

GAUGE = "appeals_dead_letter_messages"
ERRORS = "appeals_dead_letter_read_errors"


class ReadTimeout(Exception):
    """The broker did not answer within the read's time budget."""


def service_dead_letter_queues(service: str) -> list[str]:
    """The dead-letter queues of the queues `service` consumes (named `<service>.…`)."""
    return [dead_letter_queue(q) for q in SERVICE_QUEUES if q.split(".", 1)[0] == service]


def _deadline(seconds: float) -> contextlib.AbstractContextManager[Any]:
    # Inside a service sockets are eventlet's: py-amqp's socket timeouts do not apply to
    # them, so a half-open connection would hang the scrape. eventlet's Timeout bounds it.
    if "eventlet" not in sys.modules:  # not imported, so certainly not monkey-patched
        return contextlib.nullcontext()
    from eventlet import Timeout, patcher

    if patcher.is_monkey_patched("socket"):
        return Timeout(seconds, ReadTimeout(f"no answer from the broker within {seconds}s"))
    return contextlib.nullcontext()


class DeadLetterCollector:
    """A prometheus_client collector: `appeals_dead_letter_messages{service, queue}`."""

    def __init__(self, service: str, amqp_uri: str, queues: list[str] | None = None,
                 timeout: float = 2.0) -> None:
        self.service = service
        self.amqp_uri = amqp_uri
        self.queues = list(queues) if queues is not None else service_dead_letter_queues(service)
        self.timeout = timeout
        self.errors = 0
        self._lock = threading.Lock()  # green under eventlet: one read at a time per process
        self._conn: Any = None  # an amqp.Connection
        self._channel: Any = None
        self._failing = False

    # --- prometheus_client's collector protocol ---------------------------------------

    def describe(self) -> list[Metric]:
        # Without describe() registering would call collect(), i.e. talk to the broker.
        return [self._gauge(), self._errors()]

    def collect(self) -> Iterator[Metric]:
        gauge = self._gauge()
        try:
            for queue, count in self.read().items():
                gauge.add_metric([self.service, queue], count)
        except Exception:  # never fail the scrape; read() already counts its own failures
            log.exception("reading dead-letter depths failed")
        yield gauge
        yield self._errors()

    def _gauge(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(GAUGE, "Messages waiting in a dead-letter queue of this service",
                                 labels=["service", "queue"])

    def _errors(self) -> CounterMetricFamily:
        errors = CounterMetricFamily(ERRORS, "Scrapes that could not read the dead-letter "
                                     "queues from the broker", labels=["service"])
        errors.add_metric([self.service], self.errors)
        return errors

    # --- reading ------------------------------------------------------------------------

    def read(self) -> dict[str, int]:
        """Message count per dead-letter queue; {} when the broker cannot be read."""
        if not self._lock.acquire(timeout=self.timeout * 2):
            return {}  # another scrape is reading right now; it will report
        try:
            # A kept connection may have died since the last scrape: then one more try on
            # a new one. A new connection that fails means the broker is out.
            while True:
                kept = self._conn is not None
                try:
                    with _deadline(self.timeout):
                        depths = self._read_once()
                except Exception as exc:
                    self._discard()
                    if kept:
                        continue
                    self.errors += 1
                    if not self._failing:  # once per outage, not on every scrape
                        log.warning("cannot read dead-letter depths from the broker: %r", exc)
                    self._failing = True
                    return {}
                if self._failing:
                    log.info("dead-letter depths readable again")
                self._failing = False
                return depths
        finally:
            self._lock.release()

    def _read_once(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        for queue in self.queues:
            channel = self._ensure_channel()
            try:
                ok = channel.queue_declare(queue=queue, passive=True)
            except Exception as exc:
                if getattr(exc, "reply_code", None) != 404:
                    raise
                # No such queue (topology not applied here): no sample. The broker has
                # closed the channel; the connection stays usable.
                self._channel = None
                continue
            depths[queue] = int(ok.message_count)
        return depths

    def _ensure_channel(self) -> Any:
        if self._conn is None:
            # kombu parses the URI as nameko does; its transport connects once, without
            # Connection.connect()'s retry and sleep.
            client = Connection(self.amqp_uri, heartbeat=HEARTBEAT_SECONDS,
                                connect_timeout=self.timeout,
                                transport_options={
                                    "read_timeout": self.timeout, "write_timeout": self.timeout,
                                    # how the broker's connection list names it
                                    "client_properties": {
                                        "connection_name": f"{self.service} dead-letter metrics"}})
            self._conn = client.transport.establish_connection()
        else:
            # Answers the broker's heartbeat; raises when the connection missed too many
            # (scrapes further apart than the broker waits), and read() reopens it.
            self._conn.heartbeat_tick()
        if self._channel is None:
            self._channel = self._conn.channel()
        return self._channel

    def _discard(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.collect()  # drop the socket without a close handshake that could hang

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
            if conn is not None:
                with contextlib.suppress(Exception), _deadline(self.timeout):
                    conn.close()


_registered: dict[str, DeadLetterCollector] = {}
_registered_lock = threading.Lock()


def ensure_registered(service: str, amqp_uri: str,
                      registry: CollectorRegistry = REGISTRY) -> DeadLetterCollector:
    """Register the service's collector once per process (idempotent)."""
    with _registered_lock:
        collector = _registered.get(service)
        if collector is None:
            collector = DeadLetterCollector(service, amqp_uri)
            registry.register(collector)
            _registered[service] = collector
        return collector
