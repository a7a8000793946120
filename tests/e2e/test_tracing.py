"""Following one appeal: the external publisher's trace context travels through intake,
the outbox, dispatch, the department's queue and its replies, supervision's HTTP
follow-up and reporting, and ends as one trace at the collector; every log line of its
work carries that trace id and the reg_no."""

from __future__ import annotations

import json
import secrets

import requests

from tests.e2e import suite_time
from tests.e2e.bus import appeal_body, poll, reply_body
from tests.e2e.otlp_collector import render_tree

CONSUMER = 5  # OTLP SpanKind


def _traceparent_of(props) -> str:
    value = (props.headers or {}).get("traceparent")
    return value.decode() if isinstance(value, bytes) else str(value)


def _trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def test_one_appeal_is_one_trace_from_publish_to_close(bus, urls, token, otlp_collector, suite):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    trace_id = secrets.token_hex(16)
    publisher_span = secrets.token_hex(8)
    message_id = bus.submit(appeal_body(title="施工许可进度咨询（追踪）"),
                            headers={"traceparent": f"00-{trace_id}-{publisher_span}-01"})

    receipt, receipt_props = bus.wait_for(
        "receipts.hotline_12345", lambda b, p: b.get("message_id") == message_id)
    reg_no = receipt["reg_no"]
    assert _trace_id(_traceparent_of(receipt_props)) == trace_id

    def assignment(dept: str):
        return bus.wait_for(f"dispatch.{dept}", lambda b, p: b.get("kind") == "assignment"
                            and b.get("reg_no") == reg_no)

    lead, lead_props = assignment("zjj")
    co, co_props = assignment("zrzyj")
    lead_trace = {"traceparent": _traceparent_of(lead_props)}
    assert _trace_id(lead_trace["traceparent"]) == trace_id
    assert _trace_id(_traceparent_of(co_props)) == trace_id

    # The lead department copies the traceparent onto its replies (as the contract asks);
    # the co-unit's system does not trace at all.
    bus.reply("zjj", "sign", reply_body(lead), headers=lead_trace)
    bus.reply("zrzyj", "sign", reply_body(co))
    bus.reply("zjj", "respond", reply_body(lead, outcome="solved", reply="已办理",
                                           contacted_at=suite_time.iso()), headers=lead_trace)
    poll(lambda: requests.get(f"{urls['supervision']}/appeals/{reg_no}/clock",
                              headers=staff).json().get("state") == "responded")
    # A person's follow-up, with no trace context of its own.
    resp = requests.post(f"{urls['supervision']}/appeals/{reg_no}/followups", headers=staff,
                         json={"grade": "satisfied", "resolved": True, "comments": "满意"})
    assert resp.status_code == 201, resp.text

    def appeal_trace_complete():
        spans = otlp_collector.trace(trace_id)
        names = {(s.service, s.name) for s in spans}
        wanted = {("appeals-intake", "intake.inbound process"),
                  ("appeals-dispatch", "dispatch.events process"),
                  ("appeals-dispatch", "dispatch.replies process"),
                  ("appeals-supervision", "followup.recorded send"),
                  ("appeals-intake", "intake.events process"),
                  ("appeals-reporting", "reporting.events process")}
        closed = any(s.attributes.get("messaging.rabbitmq.destination.routing_key")
                     == "appeal.closed" and s.service == "appeals-reporting" for s in spans)
        return spans if wanted <= names and closed else None

    spans = poll(appeal_trace_complete, timeout=30, interval=0.3)
    print(f"\ntrace {trace_id} of {reg_no}:\n{render_tree(spans)}")

    # The registration continues the publisher's span.
    registration = next(s for s in spans if s.name == "intake.inbound process")
    assert registration.parent_span_id == publisher_span
    assert registration.attributes["appeals.reg_no"] == reg_no
    # Every event about the appeal, in every service, was handled inside its trace.
    everywhere = [s for s in otlp_collector.spans
                  if s.kind == CONSUMER and s.attributes.get("appeals.reg_no") == reg_no
                  and s.name.endswith(".events process")]
    assert {s.service for s in everywhere} == {"appeals-intake", "appeals-dispatch",
                                               "appeals-supervision", "appeals-reporting"}
    assert {s.trace_id for s in everywhere} == {trace_id}
    # The untraced co-unit's reply started a trace of its own; the event it caused was
    # sent in the appeal's trace, linked to it.
    signed = [s for s in spans if s.name == "assignment.signed send"]
    assert signed, render_tree(spans)
    assert all(s.links and s.links[0][0] != trace_id for s in signed)
    # So did the person's follow-up (an HTTP request without a traceparent).
    followup = next(s for s in spans if s.name == "followup.recorded send")
    http_span = next(s for s in otlp_collector.spans if s.span_id == followup.links[0][1])
    assert http_span.name == "POST /appeals/<string:reg_no>/followups"

    # The services' JSON log lines for this appeal carry its trace id.
    def logged() -> set[str]:
        services = set()
        for service in ("intake", "dispatch", "supervision", "reporting"):
            for line in (suite.log_dir / f"{service}.log").read_text(errors="replace").splitlines():
                if reg_no not in line or not line.startswith("{"):
                    continue
                entry = json.loads(line)
                if entry.get("reg_no") == reg_no and entry.get("trace_id") == trace_id:
                    assert entry["service"] == service and entry["level"] and entry["message"]
                    services.add(service)
        return services

    assert logged() == {"intake", "dispatch", "supervision", "reporting"}
