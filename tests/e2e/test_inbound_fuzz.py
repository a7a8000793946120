"""Random and malformed bodies on appeals.inbound: every message gets exactly one receipt,
a refused one is kept, and the consumer keeps going."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.bus import appeal_body

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)


@st.composite
def mutated_appeal(draw) -> bytes:
    body = appeal_body(external_id=f"fuzz-{uuid.uuid4()}")
    field = draw(st.sampled_from(sorted(body) + ["enterprise.uscc", "enterprise.contact_phone"]))
    action = draw(st.sampled_from(["drop", "replace"]))
    target, key = (body["enterprise"], field.split(".")[1]) if "." in field else (body, field)
    if action == "drop":
        target.pop(key, None)
    else:
        target[key] = draw(json_values)
    return json.dumps(body, ensure_ascii=False).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_appeal(),
    # A valid body built when drawn, so its submitted_at is the suite's "now" then.
    st.builds(lambda: json.dumps(appeal_body()).encode()),
)


def test_every_inbound_message_gets_exactly_one_receipt(amqp_uri, suite, make_bus):
    bus = make_bus()
    sent: dict[str, str] = {}

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies)
    def publish_and_await(body: bytes) -> None:
        message_id = bus.submit(body)
        receipt = bus.receipt(message_id, timeout=15)
        assert receipt["status"] in ("accepted", "rejected")
        assert ("reg_no" in receipt) == (receipt["status"] == "accepted")
        if receipt["status"] == "rejected":
            assert receipt["errors"] and all(isinstance(v, list) for v in receipt["errors"].values())
        sent[message_id] = receipt["status"]

    publish_and_await()
    assert "rejected" in sent.values() and "accepted" in sent.values()

    # No second receipt for any of them turns up later.
    time.sleep(1.0)
    extra = []
    while True:
        method, props, raw = bus.get("receipts.hotline_12345")
        if method is None:
            break
        if json.loads(raw).get("message_id") in sent:
            extra.append(raw)
    assert not extra
    # Every refused message is kept as it came.
    kept = set()
    while True:
        method, props, raw = bus.get("appeals.inbound.rejected")
        if method is None:
            break
        kept.add(props.headers.get("x-original-message-id"))
    assert {m for m, s in sent.items() if s == "rejected"} <= kept
    bus.close()


def test_two_intake_replicas_number_without_gaps(amqp_uri, suite, suite_env, make_bus):
    """A second intake process on the same queue and database: reg_nos stay unique and
    consecutive."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **suite_env, "APPEALS_INTAKE_HTTP_PORT": str(port)}
    second = subprocess.Popen([sys.executable, "-m", "appeals_common.cli", "run", "intake"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "second intake did not start"
                time.sleep(0.2)
        bus = make_bus()
        ids = {bus.submit(appeal_body(title=f"退税 {i}")) for i in range(120)}
        receipts: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(receipts) < len(ids) and time.monotonic() < deadline:
            body, _ = bus.wait_for("receipts.hotline_12345",
                                   lambda b, p: b.get("message_id") in ids, timeout=30)
            receipts[body["message_id"]] = body
        bus.close()
        assert {r["status"] for r in receipts.values()} == {"accepted"}
        numbers = sorted(int(r["reg_no"].rsplit("-", 1)[1]) for r in receipts.values())
        assert numbers == list(range(numbers[0], numbers[0] + 120))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        handled = [line for line in metrics.splitlines() if line.startswith(
            'appeals_entrypoint_seconds_count{entrypoint="on_inbound"')]
        assert handled and float(handled[0].split()[-1]) > 0, "the second replica took part"
    finally:
        second.terminate()
        second.wait(timeout=30)
