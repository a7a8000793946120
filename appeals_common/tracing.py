"""Following one appeal across the services: W3C trace context and structured logs.

Every message the suite sends carries the `traceparent` of the work that sent it: outbox
rows get it when they are written, so it survives the relay, a crash and a retry; the
department client copies it onto its replies; HTTP requests may bring one. A consumer or
HTTP handler continues the trace it is given. Work that starts without one (a timer, a
person's HTTP request, a reply whose department did not copy the header) continues the
appeal's own trace: each service remembers the traceparent under which it first saw
the appeal (`appeal_traces`), so one appeal's path from publish to close is one trace.

Trace ids are always generated and propagated (cheap, and they put a trace id in every
log line); spans are exported only when APPEALS_TRACING=otlp (to
OTEL_EXPORTER_OTLP_ENDPOINT, Jaeger or Tempo in docker-compose.yml). Logs are JSON
lines unless APPEALS_LOG_FORMAT=text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

TRACEPARENT = "traceparent"
TRACING_ENV = "APPEALS_TRACING"  # "off" (default) or "otlp"
LOG_FORMAT_ENV = "APPEALS_LOG_FORMAT"  # "json" (default) or "text"

_tracer = trace.get_tracer("appeals")
# What the current unit of work is about, for log lines (set by the entrypoint's wrapper,
# completed by whoever learns the reg_no).
_log_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "appeals_log_fields", default=None)
# True while the current span continues a trace the work was handed (message, request):
# then an event it emits belongs to that trace; otherwise to its appeal's own trace.
_continued: contextvars.ContextVar[bool] = contextvars.ContextVar("appeals_trace_continued",
                                                                   default=False)


def configure(service: str, exporter: str | None = None) -> None:
    """Install the tracer provider of a process (once, at start-up)."""
    exporter = (exporter or os.environ.get(TRACING_ENV, "off")).strip().lower()
    if exporter not in ("off", "otlp"):
        raise ValueError(f"{TRACING_ENV} must be 'off' or 'otlp', got {exporter!r}")
    provider = TracerProvider(resource=Resource.create({
        "service.name": f"appeals-{service}", "service.namespace": "appeals"}))
    if exporter == "otlp":
        # Endpoint, headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def shutdown() -> None:
    """Export what is still buffered (a clean stop)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


# --- propagation -------------------------------------------------------------------------

def carrier_of(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP or HTTP headers as a propagation carrier (AMQP may hand over bytes)."""
    carrier: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(key, str) and key.lower() in (TRACEPARENT, "tracestate"):
            carrier[key.lower()] = value.decode("ascii", "replace") if isinstance(
                value, bytes) else str(value)
    return carrier


def inject(headers: dict[str, Any]) -> dict[str, Any]:
    """Add the current trace context to outgoing `headers` (a traceparent already there,
    copied from the message being retried or replayed, is kept)."""
    if TRACEPARENT not in headers:
        propagate.inject(headers)
    return headers


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def same_trace(traceparent: str, other: str) -> bool:
    """Whether two traceparents (version-traceid-spanid-flags) name the same trace."""
    return traceparent.split("-")[1:2] == other.split("-")[1:2]


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def continues_given_trace() -> bool:
    return _continued.get()


# An appeal's trace as the current work was handed it, to be remembered in the work's own
# transaction (db.Store.unit_of_work): no commit of its own.
_noted_appeal_trace: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "appeals_noted_appeal_trace", default=None)


def note_appeal_trace(appeal_id: str, traceparent: str) -> None:
    _noted_appeal_trace.set((appeal_id, traceparent))


def take_noted_appeal_trace() -> tuple[str, str] | None:
    noted = _noted_appeal_trace.get()
    if noted is not None:
        _noted_appeal_trace.set(None)
    return noted


# --- spans -------------------------------------------------------------------------------

class WorkSpan:
    """The span of one unit of work (a consumed message, an HTTP request, a timer tick),
    current from start() to end(), in the green thread that does the work."""

    def __init__(self, name: str, *, kind: SpanKind, headers: Mapping[str, Any] | None = None,
                 attributes: Mapping[str, Any] | None = None,
                 log_fields: Mapping[str, str] | None = None) -> None:
        parent = propagate.extract(carrier_of(headers))
        self.continued = trace.get_current_span(parent).get_span_context().is_valid
        self.span = _tracer.start_span(name, context=parent, kind=kind,
                                       attributes={k: v for k, v in (attributes or {}).items()
                                                   if v is not None})
        self._tokens: list[Any] = []
        self._log_fields = dict(log_fields or {})

    def start(self) -> WorkSpan:
        self._tokens = [
            otel_context.attach(trace.set_span_in_context(self.span)),
            _continued.set(self.continued),
            _log_fields.set(self._log_fields),
        ]
        return self

    def fail(self, exc: BaseException, *, error: bool = True) -> None:
        self.span.record_exception(exc)
        if error:
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

    def end(self) -> None:
        self.span.end()
        _noted_appeal_trace.set(None)
        if self._tokens:
            log_token, continued_token, ctx_token = reversed(self._tokens)
            _log_fields.reset(log_token)
            _continued.reset(continued_token)
            otel_context.detach(ctx_token)
            self._tokens = []


def annotate(**fields: str | None) -> None:
    """Name what the current work is about (reg_no, event_type) for its span and logs."""
    current = _log_fields.get()
    span = trace.get_current_span()
    for key, value in fields.items():
        if value is None:
            continue
        if current is not None:
            current[key] = str(value)
        span.set_attribute(f"appeals.{key}", str(value))


@contextmanager
def in_appeal_trace(traceparent: str | None, name: str,
                    attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """A short span in the appeal's own trace (`traceparent` as remembered), linked to the
    current work's span, and current while the body runs: what the body sends carries it."""
    parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
    current = trace.get_current_span().get_span_context()
    links = [Link(current)] if current.is_valid else None
    span = _tracer.start_span(name, context=parent, kind=SpanKind.PRODUCER, links=links,
                              attributes=dict(attributes or {}))
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)
        span.end()


# --- logs --------------------------------------------------------------------------------

class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, the trace and span
    ids of the current work, and what it is about (event_type, reg_no, queue, ...)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        entry.update(_log_fields.get() or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str | None = None, fmt: str | None = None) -> None:
    """The root logger of a service process: JSON lines on stderr (or text for a person)."""
    fmt = (fmt or os.environ.get(LOG_FORMAT_ENV, "json")).strip().lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"{LOG_FORMAT_ENV} must be 'json' or 'text', got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter(service) if fmt == "json" else logging.Formatter(
        f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("APPEALS_LOG_LEVEL", "INFO"))
