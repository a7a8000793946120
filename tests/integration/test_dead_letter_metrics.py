"""Dead-letter depth on /metrics against the real broker (DESIGN §8): the gauge counts what
waits in a service's `<queue>.dlq`, and a broker that cannot be read never fails a scrape."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import pika
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from appeals_common.dead_letter_metrics import DeadLetterCollector, service_dead_letter_queues


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(registry).decode()
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name}


def _dead_letter(channel, queue: str) -> None:
    channel.basic_publish("", queue, b'{"broken": true}', pika.BasicProperties(
        delivery_mode=2, message_id=str(uuid.uuid4()), headers={"x-failed-queue": queue[:-4]}))


def test_each_service_watches_the_dead_letter_queues_of_its_own_queues() -> None:
    assert service_dead_letter_queues("intake") == ["intake.inbound.dlq", "intake.events.dlq"]
    assert service_dead_letter_queues("dispatch") == ["dispatch.events.dlq", "dispatch.replies.dlq"]
    assert service_dead_letter_queues("supervision") == ["supervision.events.dlq"]
    assert service_dead_letter_queues("reporting") == ["reporting.events.dlq"]


def test_gauge_counts_messages_in_the_services_dead_letter_queues(amqp_uri, channel) -> None:
    for queue in service_dead_letter_queues("intake"):
        # The arguments `appeals topology apply` declares them with (classic by default).
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
    collector = DeadLetterCollector("intake", amqp_uri)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        before = collector.read()
        assert set(before) == {"intake.inbound.dlq", "intake.events.dlq"}
        channel.confirm_delivery()
        for _ in range(3):
            _dead_letter(channel, "intake.events.dlq")
        samples = _samples(registry, "appeals_dead_letter_messages")
        key = (("queue", "intake.events.dlq"), ("service", "intake"))
        assert samples[key] == before["intake.events.dlq"] + 3
        assert samples[(("queue", "intake.inbound.dlq"), ("service", "intake"))] \
            == before["intake.inbound.dlq"]
        # The kept connection is reused: a second scrape reads the same, no error counted.
        assert _samples(registry, "appeals_dead_letter_messages")[key] == samples[key]
        errors = _samples(registry, "appeals_dead_letter_read_errors_total")
        assert errors == {(("service", "intake"),): 0.0}
    finally:
        collector.close()


def test_a_missing_queue_has_no_sample_and_the_others_still_do(amqp_uri, channel) -> None:
    present = f"dlm-{uuid.uuid4().hex[:8]}.dlq"
    channel.queue_declare(present, durable=False, auto_delete=True)
    channel.confirm_delivery()
    _dead_letter(channel, present)
    missing = f"dlm-missing-{uuid.uuid4().hex[:8]}.dlq"
    collector = DeadLetterCollector("intake", amqp_uri, queues=[missing, present])
    try:
        assert collector.read() == {present: 1}
        assert collector.read() == {present: 1}, "the channel the broker closed is reopened"
        assert collector.errors == 0
    finally:
        collector.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung broker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_broker_outage_gives_no_sample_and_an_error_not_a_failed_scrape(kind, silent_server) -> None:
    port = _closed_port() if kind == "refused" else silent_server
    collector = DeadLetterCollector("reporting", f"amqp://guest:guest@127.0.0.1:{port}/", timeout=0.5)
    registry = CollectorRegistry()
    registry.register(collector)
    started = time.monotonic()
    text = generate_latest(registry).decode()  # one scrape, which must not raise
    assert time.monotonic() - started < 3, "the read is bounded in time"
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    assert "appeals_dead_letter_messages" not in samples
    assert samples["appeals_dead_letter_read_errors_total"].value == 1
    assert collector.read() == {}
    assert collector.errors == 2, "every failed scrape counts"


class FreezableProxy:
    """A TCP proxy to the broker that can stop forwarding: a broker that hangs while a
    connection is open (what a half-open connection looks like to the client)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self.server.accept()[0]
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.frozen.is_set():
                    continue  # swallow: the other side waits for an answer forever
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def proxy(amqp_uri) -> Iterator[tuple[FreezableProxy, str]]:
    parsed = urllib.parse.urlparse(amqp_uri)
    p = FreezableProxy((parsed.hostname or "127.0.0.1", parsed.port or 5672))
    yield p, amqp_uri.replace(f"@{parsed.hostname}:{parsed.port or 5672}/", f"@127.0.0.1:{p.port}/")
    p.close()


def test_a_broker_hanging_on_a_kept_connection_costs_a_bounded_scrape(proxy, channel) -> None:
    server, uri = proxy
    queue = f"dlm-{uuid.uuid4().hex[:8]}.dlq"
    channel.queue_declare(queue, durable=False, auto_delete=True)
    collector = DeadLetterCollector("intake", uri, queues=[queue], timeout=0.5)
    assert collector.read() == {queue: 0}
    server.frozen.set()
    started = time.monotonic()
    assert collector.read() == {}
    assert time.monotonic() - started < 3
    assert collector.errors == 1
    collector._discard()


def test_read_is_bounded_under_eventlet_too(proxy, channel) -> None:
    # The services run with eventlet's green sockets, where py-amqp's socket timeouts do
    # not apply to an open connection: the collector's own deadline must end the read.
    server, uri = proxy
    queue = f"dlm-{uuid.uuid4().hex[:8]}.dlq"
    channel.queue_declare(queue, durable=True)
    script = textwrap.dedent(f"""
        import eventlet
        eventlet.monkey_patch()
        import sys, time
        from appeals_common.dead_letter_metrics import DeadLetterCollector
        c = DeadLetterCollector("intake", {uri!r}, queues=[{queue!r}], timeout=0.5)
        assert c.read() == {{{queue!r}: 0}}, c.errors
        print("read", flush=True)
        sys.stdin.readline()  # the proxy is frozen now
        started = time.monotonic()
        assert c.read() == {{}}
        assert c.errors == 1
        print(round(time.monotonic() - started, 2), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "read", proc.stderr and proc.stderr.read()
        server.frozen.set()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        channel.queue_delete(queue)
    assert proc.returncode == 0, err
    assert float(out.strip()) < 3
