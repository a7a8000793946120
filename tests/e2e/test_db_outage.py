"""A database outage longer than every retry delay: intake's consumer holds its messages
and resumes by itself; nothing is dead-lettered, every appeal gets its receipt. The
outage is a TCP proxy in front of PostgreSQL that drops its connections and refuses new
ones, so the real database and the rest of the suite stay up."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pika
import pytest
import requests

from appeals_common.launcher import SuiteProcesses
from tests.e2e.bus import appeal_body, poll

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 8  # longer than the suite's retry delays in these tests (0.3 + 1 + 3 s)


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a TCP target until cut: then every connection is
    dropped and new ones are refused, until restored on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone may not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


def dlq_depth(amqp_uri: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_intake_waits_out_a_database_outage_and_loses_nothing(suite, suite_env, amqp_uri,
                                                              make_bus, tmp_path: Path):
    url = urllib.parse.urlsplit(suite_env["APPEALS_DATABASE_URL"])
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5432)
    proxied = url._replace(netloc=f"{url.username or 'postgres'}@127.0.0.1:{proxy.port}")
    env = {**suite_env, "APPEALS_DATABASE_URL": urllib.parse.urlunsplit(proxied)}
    # This run's intake, its database behind the proxy, in place of the suite's.
    suite.kill("intake")
    mine = SuiteProcesses(env=env, log_dir=tmp_path, services=("intake",))
    bus = make_bus()
    try:
        mine.start_all(timeout=90)
        health = f"http://127.0.0.1:{mine.settings.http_port('intake')}"
        dlq_before = dlq_depth(amqp_uri, "intake.inbound.dlq")
        proxy.cut()
        ids = [bus.submit(appeal_body(title=f"停库期间的诉求 {i}")) for i in range(10)]
        time.sleep(1)
        during = requests.get(f"{health}/health", timeout=10)
        assert during.status_code == 503
        assert during.json() == {"status": "degraded", "service": "intake", "down": ["database"]}
        metrics = requests.get(f"{health}/metrics", timeout=10).text
        assert 'appeals_dependency_up{dependency="database",service="intake"} 0.0' in metrics
        time.sleep(OUTAGE_SECONDS)
        restored_at = time.monotonic()
        proxy.restore()
        receipts: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(receipts) < len(ids) and time.monotonic() < deadline:
            method, _, raw = bus.get("receipts.hotline_12345")
            if method is None:
                time.sleep(0.05)
            elif (body := json.loads(raw)).get("message_id") in ids:
                receipts[body["message_id"]] = body
        assert len(receipts) == len(ids), f"{len(receipts)} of {len(ids)} receipts"
        recovery = time.monotonic() - restored_at
        assert {r["status"] for r in receipts.values()} == {"accepted"}
        assert len({r["reg_no"] for r in receipts.values()}) == len(ids)
        assert recovery < 15, f"took {recovery:.1f} s after the database came back"
        assert dlq_depth(amqp_uri, "intake.inbound.dlq") == dlq_before
        after = poll(lambda: (r := requests.get(f"{health}/health", timeout=10)).status_code
                     == 200 and r.json(), timeout=30)
        assert after["status"] == "ok"
        log = (tmp_path / "intake.log").read_text(errors="replace")
        assert "holding message" in log and "dead-lettered" not in log
    finally:
        bus.close()
        if proxy._listener is None:
            proxy.restore()
        mine.stop_all()
        suite.restart("intake")
