"""Trace context and structured logs (appeals_common.tracing), and how a unit of work puts
an appeal's events into the appeal's own trace (db.UnitOfWork.emit)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import MetaData

from appeals_common import tracing
from appeals_common.db import Store, reliability_tables

PUBLISHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EXPORTED = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        tracing.configure("test", exporter="off")
        current = trace.get_tracer_provider()
    current.add_span_processor(SimpleSpanProcessor(EXPORTED))


@pytest.fixture
def store(tmp_path) -> Store:
    metadata = MetaData()
    reliability_tables(metadata)
    store = Store(f"sqlite:///{tmp_path}/t.db", metadata, producer="test")
    store.create_schema()
    return store


def outgoing_traceparents(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        rows = conn.execute(store.outbox.select()).mappings().all()
    return {row["routing_key"]: json.loads(row["headers"]).get("traceparent") for row in rows}


def trace_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def test_work_continues_the_trace_it_was_handed_and_names_its_appeal() -> None:
    work = tracing.WorkSpan("q process", kind=SpanKind.CONSUMER,
                            headers={"traceparent": PUBLISHER.encode(), "other": "x"}).start()
    try:
        assert tracing.current_trace_id() == trace_of(PUBLISHER)
        assert tracing.continues_given_trace()
        tracing.annotate(reg_no="WH-2026-000001", event_type=None)
        sent = tracing.inject({})
        assert trace_of(sent["traceparent"]) == trace_of(PUBLISHER)
        # A traceparent already on a message (a retry, a replay) is kept as it was.
        assert tracing.inject({"traceparent": PUBLISHER}) == {"traceparent": PUBLISHER}
    finally:
        work.end()
    span = EXPORTED.get_finished_spans()[-1]
    assert format(span.parent.span_id, "016x") == PUBLISHER.split("-")[2]
    assert span.attributes["appeals.reg_no"] == "WH-2026-000001"
    assert tracing.current_trace_id() is None  # nothing left current after the work


def test_work_without_a_traceparent_starts_its_own_trace() -> None:
    work = tracing.WorkSpan("tick", kind=SpanKind.INTERNAL, headers={"traceparent": "garbage"}).start()
    try:
        assert tracing.current_trace_id() not in (None, trace_of(PUBLISHER))
        assert not tracing.continues_given_trace()
    finally:
        work.end()


def test_json_log_lines_carry_service_trace_and_what_the_work_is_about() -> None:
    formatter = tracing.JsonLogFormatter("dispatch")
    work = tracing.WorkSpan("q process", kind=SpanKind.CONSUMER, headers={"traceparent": PUBLISHER},
                            log_fields={"queue": "dispatch.events", "event_type": "appeal.registered"}
                            ).start()
    try:
        tracing.annotate(reg_no="WH-2026-000002")
        try:
            raise ValueError("a broken rule 电话13912345678")
        except ValueError:
            record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1,
                                                       "failed %s", ("once",), sys.exc_info())
        line = json.loads(formatter.format(record))
    finally:
        work.end()
    assert line["service"] == "dispatch" and line["level"] == "ERROR"
    assert line["message"] == "failed once"
    assert line["trace_id"] == trace_of(PUBLISHER) and len(line["span_id"]) == 16
    assert (line["queue"], line["event_type"], line["reg_no"]) == (
        "dispatch.events", "appeal.registered", "WH-2026-000002")
    assert "ValueError" in line["exception"]


def test_log_format_and_exporter_are_checked() -> None:
    with pytest.raises(ValueError, match="APPEALS_LOG_FORMAT"):
        tracing.configure_logging("intake", fmt="xml")
    with pytest.raises(ValueError, match="APPEALS_TRACING"):
        tracing.configure("intake", exporter="zipkin")


def test_an_appeals_events_join_its_trace_whoever_acts_on_it(store: Store) -> None:
    now = datetime(2026, 12, 4, 10, tzinfo=UTC)
    # Registration, continuing the publisher's trace: that becomes the appeal's trace.
    work = tracing.WorkSpan("intake.inbound process", kind=SpanKind.CONSUMER,
                            headers={"traceparent": PUBLISHER}).start()
    try:
        with store.unit_of_work(now) as uow:
            uow.emit("appeal.registered", {"reg_no": "WH-2026-000003"}, appeal_id="a-3")
    finally:
        work.end()
    # A timer (no trace of its own) acts on the appeal: its event goes into the appeal's
    # trace, in a span linked to the timer's.
    store.traces._cache.clear()  # read back from the table, as after a restart
    timer = tracing.WorkSpan("scan", kind=SpanKind.INTERNAL).start()
    try:
        timer_trace = tracing.current_trace_id()
        with store.unit_of_work(now) as uow:
            uow.emit("appeal.reminded", {"reg_no": "WH-2026-000003"}, appeal_id="a-3")
            uow.emit("appeal.reminded", {"reg_no": "WH-2026-000009"}, appeal_id="a-9")
            uow.send("appeals.dispatch", "dispatch.zjj", {"kind": "reminder"})
    finally:
        timer.end()
    sent = outgoing_traceparents(store)
    assert trace_of(sent["appeal.registered"]) == trace_of(PUBLISHER)
    assert trace_of(sent["dispatch.zjj"]) == timer_trace  # not about an appeal: the timer's
    reminded = [s for s in EXPORTED.get_finished_spans() if s.name == "appeal.reminded send"]
    assert len(reminded) == 1  # a-9 had no trace yet: its reminder's trace became its own
    assert format(reminded[0].context.trace_id, "032x") == trace_of(PUBLISHER)
    assert format(reminded[0].links[0].context.trace_id, "032x") == timer_trace
    with store.engine.connect() as conn:
        remembered = dict(conn.exec_driver_sql("SELECT appeal_id, traceparent FROM appeal_traces").all())
    assert trace_of(remembered["a-3"]) == trace_of(PUBLISHER)
    assert trace_of(remembered["a-9"]) == timer_trace


def test_a_consumer_remembers_the_trace_it_was_handed_in_the_handlers_transaction(store: Store) -> None:
    work = tracing.WorkSpan("supervision.events process", kind=SpanKind.CONSUMER,
                            headers={"traceparent": PUBLISHER}).start()
    try:
        tracing.note_appeal_trace("a-5", PUBLISHER)
        with store.unit_of_work(datetime(2026, 12, 4, 10, tzinfo=UTC)):
            pass  # a handler that sends nothing: the note is still kept
    finally:
        work.end()
    with store.engine.connect() as conn:
        remembered = dict(conn.exec_driver_sql("SELECT appeal_id, traceparent FROM appeal_traces").all())
    assert remembered == {"a-5": PUBLISHER}
    assert tracing.take_noted_appeal_trace() is None
