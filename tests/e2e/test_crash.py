"""Kill services with SIGKILL mid-stream and restart them: nothing is lost, nothing is
applied twice."""

from __future__ import annotations

import json
import threading
import time
import uuid

import requests

from tests.e2e.bus import appeal_body

N = 250


def test_sigkill_mid_stream_loses_and_duplicates_nothing(amqp_uri, suite, urls, token, make_bus):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    registered_before = requests.get(f"{urls['reporting']}/reports/summary",
                                     headers=staff).json()["registered"]
    batch = uuid.uuid4().hex[:8]
    external_ids = [f"crash-{batch}-{i}" for i in range(N)]

    def publish() -> None:
        bus = make_bus()
        for ext in external_ids:
            # "税" routes every one of them to the tax bureau alone.
            bus.submit(appeal_body(external_id=ext, title=f"退税办理 {ext}"))
            time.sleep(1 / 50)
        bus.close()

    publisher = threading.Thread(target=publish)
    publisher.start()
    for service in ("intake", "dispatch", "reporting", "supervision"):
        time.sleep(0.4)
        suite.kill(service)  # SIGKILL: no cleanup, unacked messages go back to the queue
        suite.restart(service)
    publisher.join()

    bus = make_bus()
    receipts: dict[str, dict[str, dict]] = {ext: {} for ext in external_ids}
    deadline = time.monotonic() + 90
    while any(not r for r in receipts.values()) and time.monotonic() < deadline:
        method, props, raw = bus.get("receipts.hotline_12345")
        if method is None:
            time.sleep(0.05)
            continue
        body = json.loads(raw)
        if body.get("external_id") in receipts:
            receipts[body["external_id"]][props.message_id] = body
    missing = [ext for ext, r in receipts.items() if not r]
    assert not missing, f"{len(missing)} appeals got no receipt"
    # A receipt may be delivered twice after a crash, but then with the same message_id.
    assert all(len(r) == 1 for r in receipts.values())
    assert all(next(iter(r.values()))["status"] == "accepted" for r in receipts.values())
    reg_nos = {next(iter(r.values()))["reg_no"] for r in receipts.values()}
    assert len(reg_nos) == N

    assignments: dict[str, set[str]] = {}
    deadline = time.monotonic() + 90
    while len(assignments) < N and time.monotonic() < deadline:
        method, props, raw = bus.get("dispatch.swj")
        if method is None:
            time.sleep(0.05)
            continue
        body = json.loads(raw)
        if body["kind"] == "assignment" and body["reg_no"] in reg_nos:
            assignments.setdefault(body["reg_no"], set()).add(props.message_id)
    bus.close()
    assert set(assignments) == reg_nos, "every appeal reached its department"
    assert all(len(ids) == 1 for ids in assignments.values()), "one assignment per appeal"

    for reg_no in sorted(reg_nos):
        stored = requests.get(f"{urls['dispatch']}/assignments", params={"reg_no": reg_no},
                              headers=staff).json()
        assert [a["dept_code"] for a in stored] == ["swj"], reg_no
        assert requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=staff).status_code == 200

    def registered() -> int:
        return requests.get(f"{urls['reporting']}/reports/summary",
                            headers=staff).json()["registered"]

    deadline = time.monotonic() + 60
    while registered() < registered_before + N and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # anything duplicated would land by now
    assert registered() == registered_before + N
