"""The department side against the running suite: the reference adapter between the bus and
a department's HTTP endpoint, and the `appeals-dept` command line.

Other tests read `dispatch.zjj` too: everything here takes only the messages about its own
appeal, leaves the others in the queue, and stops every listener before it returns. Each
test then closes (satisfied follow-up) or withdraws its appeal, so no clock of ours is left
running to escalate when a later test moves the suite's clock.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pika
import pytest
import requests

from department_client.adapter import Adapter, EndpointForwarder, reply_message_id
from department_client.client import DepartmentClient
from tests.e2e import suite_time
from tests.e2e.bus import Bus, appeal_body, poll

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]




def take(amqp_uri: str, queue: str, match: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    """Consume the first message on `queue` that matches; every other one stays in the queue
    (fetched unacked, returned when the channel closes)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _, raw = channel.basic_get(queue, auto_ack=False)
            if method is None:
                conn.sleep(0.1)
                continue
            body = json.loads(raw)
            if match(body):
                channel.basic_ack(method.delivery_tag)
                return body
        raise TimeoutError(f"nothing matching on {queue} within {timeout}s")
    finally:
        conn.close()


class RecordingEndpoint(ThreadingHTTPServer):
    """A department's system: records every POST and answers with `answer(message)`."""

    daemon_threads = True

    def __init__(self, answer: Callable[[dict], dict]) -> None:
        self.answer = answer
        self.received: list[tuple[dict, dict]] = []  # (headers, message)
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server: RecordingEndpoint = self.server  # type: ignore[assignment]
                with server.lock:
                    server.received.append((dict(self.headers), message))
                raw = json.dumps(server.answer(message), ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/appeals/inbox"

    def messages(self, reg_no: str, kind: str) -> list[tuple[dict, dict]]:
        with self.lock:
            return [(h, m) for h, m in self.received if m.get("reg_no") == reg_no and m.get("kind") == kind]



@pytest.fixture
def run_adapter(user_uri):
    """Start an adapter for zjj on a thread, handling only one appeal's messages; stopped after the test."""
    running: list[tuple[Adapter, threading.Thread, DepartmentClient]] = []

    def start(reg_no: str, forwarder: EndpointForwarder, **client_kw: Any) -> Adapter:
        client = DepartmentClient(user_uri("dept-zjj"), "zjj", prefetch=1000, **client_kw)
        adapter = Adapter(client, forwarder, operator="e2e-adapter", chain_timeout=15)
        thread = threading.Thread(target=adapter.run, kwargs={"select": lambda m: m.reg_no == reg_no},
                                  name=f"adapter-{reg_no}", daemon=True)
        thread.start()
        running.append((adapter, thread, client))
        return adapter

    yield start
    for adapter, thread, client in running:
        adapter.stop()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the adapter did not stop"
        client.close()


@pytest.fixture
def finish(urls, token):
    """`finish(reg_no, responded)`: after the test, close the appeal with a satisfied follow-up
    (when its lead responded) or withdraw it, and wait until supervision has applied that."""
    appeals: list[tuple[str, bool]] = []
    yield lambda reg_no, responded: appeals.append((reg_no, responded))
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    for reg_no, responded in appeals:
        if responded:  # 409 until supervision has heard of the response
            try:
                poll(lambda reg_no=reg_no: requests.post(
                    f"{urls['supervision']}/appeals/{reg_no}/followups", headers=staff, timeout=10,
                    json={"grade": "satisfied", "resolved": True, "comments": "e2e"}).status_code == 201)
            except TimeoutError:  # the test failed before the response: withdraw it instead
                responded = False
        if not responded:
            resp = requests.post(f"{urls['intake']}/appeals/{reg_no}/withdrawal", headers=staff,
                                 json={"reason": "e2e: department adapter test done"}, timeout=10)
            assert resp.status_code == 200, resp.text
        poll(lambda reg_no=reg_no: requests.get(
            f"{urls['supervision']}/appeals/{reg_no}/clock", headers=staff,
            timeout=10).json().get("state") in ("closed", "withdrawn"))


def submit(bus: Bus) -> str:
    receipt = bus.receipt(bus.submit(appeal_body(title="施工许可办理进度慢")))
    assert receipt["status"] == "accepted", receipt
    return receipt["reg_no"]


def test_adapter_forwards_to_the_endpoint_and_publishes_its_answers(bus, run_adapter, urls, token, finish):
    def answer(message: dict) -> dict:
        if message.get("kind") != "assignment":
            return {}
        # The department's system answers in the suite's time (shifted in CI's year-end run):
        # it contacted the enterprise and replies now, never in the suite's future.
        now = suite_time.iso()
        return {"actions": [
            {"action": "sign", "operator": "李四"},
            {"action": "respond", "outcome": "solved", "reply": "已协调办理施工许可",
             "contacted_at": now, "replied_at": now},
        ]}

    endpoint = RecordingEndpoint(answer)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    try:
        reg_no = submit(bus)
        finish(reg_no, responded=True)
        run_adapter(reg_no, EndpointForwarder(endpoint.url, timeout=5, retries=1))

        [(headers, assignment)] = poll(lambda: endpoint.messages(reg_no, "assignment"))
        assert (assignment["role"], assignment["units"]) == ("lead", {"lead": "zjj", "co": ["zrzyj"]})
        assert headers["X-Appeals-Message-Id"] == assignment["message_id"]
        assert (headers["X-Appeals-Dept"], headers["X-Appeals-Kind"]) == ("zjj", "assignment")

        # Both answers went out in order, and the endpoint hears how each was taken.
        results = poll(lambda: (r := [m for _, m in endpoint.messages(reg_no, "reply_result")])
                       and len(r) >= 2 and r)
        assert [(r["action"], r["status"]) for r in results] == [("sign", "accepted"),
                                                                  ("respond", "accepted")]
        # Reply ids derive from the message: a redelivered assignment would repeat them.
        expected = reply_message_id("zjj", assignment["message_id"], 1, "respond")
        assert results[1]["reply_message_id"] == expected

        staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
        poll(lambda: requests.get(f"{urls['supervision']}/appeals/{reg_no}/clock", headers=staff,
                                  timeout=10).json().get("state") == "responded")
        assert len(endpoint.messages(reg_no, "assignment")) == 1, "handled once"
    finally:
        endpoint.shutdown()
        endpoint.server_close()


def test_adapter_leaves_the_message_in_the_queue_while_the_endpoint_is_down(bus, run_adapter, amqp_uri,
                                                                           finish):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/appeals/inbox"  # nothing listens there

    class Counting(EndpointForwarder):
        calls = 0

        def post(self, message, dept_code):
            if message.kind == "assignment":
                Counting.calls += 1
            return super().post(message, dept_code)

    reg_no = submit(bus)
    finish(reg_no, responded=False)
    adapter = run_adapter(reg_no, Counting(down, timeout=1, retries=0), retry_delay=0.2, max_retry_delay=0.5)
    poll(lambda: Counting.calls >= 3, timeout=30)  # delivered again and again, never dropped
    adapter.stop()
    # Once stopped, the assignment is still waiting for the department.
    time.sleep(0.5)
    kept = take(amqp_uri, "dispatch.zjj",
                lambda b: b.get("kind") == "assignment" and b.get("reg_no") == reg_no)
    assert kept["units"]["lead"] == "zjj"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "department_client.cli", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60)


def test_cli_lists_without_consuming_and_signs(bus, amqp_uri, user_uri, finish):
    reg_no = submit(bus)
    finish(reg_no, responded=True)
    zjj_uri = user_uri("dept-zjj")  # the department's own broker user
    env = {"APPEALS_DEPT_AMQP_URI": zjj_uri, "APPEALS_DEPT_CODE": "zjj"}

    def listed() -> list[dict]:
        done = _cli("list", "--limit", "1000", env=env)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        return [m for m in lines if m.get("kind") == "assignment" and m.get("reg_no") == reg_no]

    [shown] = poll(listed)
    # `list` left it in the queue: it can still be consumed.
    assignment = take(amqp_uri, "dispatch.zjj",
                      lambda b: b.get("kind") == "assignment" and b.get("reg_no") == reg_no)
    assert assignment["message_id"] == shown["message_id"]

    done = _cli("--amqp-uri", zjj_uri, "--dept", "zjj", "sign", assignment["assignment_id"], reg_no,
                "--operator", "李四")
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)
    assert published["routing_key"] == "dept.zjj.sign"
    assert published["body"]["operator"] == "李四"

    result = take(amqp_uri, "dispatch.zjj", lambda b: b.get("kind") == "reply_result"
                  and b.get("reply_message_id") == published["message_id"])
    assert (result["action"], result["status"], result["errors"]) == ("sign", "accepted", {})
    assert (result["reg_no"], result["assignment_id"]) == (reg_no, assignment["assignment_id"])

    # The same reply again (same message_id) is processed once: no second reply_result.
    again = _cli("--amqp-uri", zjj_uri, "--dept", "zjj", "sign", assignment["assignment_id"], reg_no,
                 "--message-id", published["message_id"])
    assert again.returncode == 0, again.stderr
    now = suite_time.iso()  # the suite's "now": never after the suite's own clock
    done = _cli("respond", assignment["assignment_id"], reg_no, "--outcome", "explained",
                "--reply", "已说明办理时限", "--contacted-at", now, "--replied-at", now, env=env)
    assert done.returncode == 0, done.stderr
    respond_id = json.loads(done.stdout)["message_id"]
    result = take(amqp_uri, "dispatch.zjj", lambda b: b.get("kind") == "reply_result"
                  and b.get("reg_no") == reg_no)
    assert (result["reply_message_id"], result["action"], result["status"]) == (
        respond_id, "respond", "accepted")


def test_adapter_process_with_the_example_endpoint(bus, amqp_uri, user_uri, urls, token, tmp_path,
                                                   finish):
    """`python -m department_client.adapter` as a department runs it, configured by environment
    only, for swtcj (lead of investment_matrix appeals; no other test reads dispatch.swtcj)."""
    message_id = bus.submit(appeal_body(source="investment_matrix", channel="investment_matrix",
                                        title="新建厂房项目落地咨询", content="希望了解项目落地的办理流程。"),
                            source="investment_matrix")
    receipt = bus.receipt(message_id, source="investment_matrix")
    assert receipt["status"] == "accepted", receipt
    reg_no = receipt["reg_no"]
    finish(reg_no, responded=True)

    log_file = tmp_path / "adapter.log"
    env = {**os.environ, "APPEALS_DEPT_AMQP_URI": user_uri("dept-swtcj"), "APPEALS_DEPT_CODE": "swtcj",
           "APPEALS_DEPT_EXAMPLE_ENDPOINT": "1", "APPEALS_DEPT_OPERATOR": "招商专员",
           "APPEALS_DEPT_CHAIN_TIMEOUT": "10", "APPEALS_DEPT_LOG_LEVEL": "INFO"}
    with log_file.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "department_client.adapter"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
        poll(lambda: requests.get(f"{urls['supervision']}/appeals/{reg_no}/clock", headers=staff,
                                  timeout=10).json().get("state") == "responded", timeout=45)
    finally:
        proc.terminate()  # SIGTERM: the adapter finishes the message in hand and exits
        code = proc.wait(timeout=30)
    text = log_file.read_text(errors="replace")
    assert code == 0, text
    assert "published dept.swtcj.sign" in text and "published dept.swtcj.respond" in text, text
    assert "giving up" not in text, text
