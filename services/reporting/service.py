"""Reporting's entrypoints: every event from the bus; reports over HTTP and RPC; the
business series on /metrics."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.web.handlers import http
from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from werkzeug.wrappers import Response

from appeals_common.auth import Principal
from appeals_common.http import HttpError, api
from appeals_common.metrics import load_calendar
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, ServiceRuntime, reliable_consume
from appeals_common.service_base import BaseService
from appeals_common.settings import load_settings
from services.reporting import readmodel, usecases
from services.reporting.models import METADATA
from services.reporting.usecases import ReportingContext

log = logging.getLogger("appeals.reporting")
READERS = ("bureau_admin", "bureau_staff", "viewer")


class BusinessCollector:
    """Business series read from the read model at scrape time, so they survive restarts
    and agree across replicas. Names are what the dashboards and alert rules use."""

    runtime: ServiceRuntime | None = None
    context: ReportingContext | None = None

    def collect(self) -> Any:
        if self.runtime is None or self.context is None:
            return
        try:
            snap = usecases.metric_snapshot(self.runtime, self.context)
        except Exception:  # a scrape must not fail because the database hiccuped
            log.exception("business metrics unavailable")
            return
        registered = CounterMetricFamily("appeals_registered", "Appeals registered, by channel",
                                         labels=["channel"])
        for channel, count in sorted(snap["registered_by_channel"].items()):
            registered.add_metric([channel], count)
        yield registered
        open_ = GaugeMetricFamily("appeals_open", "Open appeals by state", labels=["state"])
        for state, count in sorted(snap["open_by_state"].items()):
            open_.add_metric([state], count)
        yield open_
        overdue = GaugeMetricFamily(
            "appeals_overdue", "Open duties past their deadline (sign, respond, written "
            "feedback, class problem, walkthrough item), by the department that owes them",
            labels=["dept_code"])
        for dept, count in sorted(snap["overdue_by_dept"].items()):
            overdue.add_metric([dept], count)
        yield overdue
        yield HistogramMetricFamily(
            "appeals_response_seconds", "Registration to the lead unit's first response",
            buckets=[*((str(bound), n) for bound, n in snap["response_buckets"]),
                     ("+Inf", snap["response_count"])],
            sum_value=snap["response_sum"])
        followups = CounterMetricFamily("appeals_followups", "Follow-ups recorded, by grade",
                                        labels=["grade"])
        for grade, count in sorted(snap["followups_by_grade"].items()):
            followups.add_metric([grade], count)
        yield followups
        rate = snap["satisfaction_rate"]
        yield GaugeMetricFamily(
            "appeals_satisfaction_rate", "Follow-ups rated very satisfied, satisfied or "
            "basically satisfied / all follow-ups (NaN before the first)",
            value=math.nan if rate is None else rate)


COLLECTOR = BusinessCollector()
REGISTRY.register(COLLECTOR)


class ReportingRuntime(Runtime):
    def setup(self) -> None:
        super().setup()
        context = ReportingContext.load(self.settings, load_calendar(
            self.settings.config_dir, self.settings.timezone))
        # A read model written by an older release is rebuilt before anything reads it.
        readmodel.ensure_current(self.store.engine, context.tz)
        COLLECTOR.runtime, COLLECTOR.context = self.runtime, context


class Context(DependencyProvider):
    def setup(self) -> None:
        settings = load_settings()
        self.context = ReportingContext.load(settings, load_calendar(settings.config_dir,
                                                                     settings.timezone))

    def get_dependency(self, worker_ctx: Any) -> ReportingContext:
        return self.context


class ReportingService(BaseService):
    name = "reporting"
    runtime = ReportingRuntime("reporting", METADATA)
    context = Context()
    metrics_dep = Metrics("reporting")

    @reliable_consume("reporting.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.on_event(self.runtime, self.context, delivery)

    @http("GET", "/reports/summary")
    @api(*READERS)
    def http_summary(self, request: Any, principal: Principal) -> dict:
        return usecases.summary(self.runtime, self.context, _time_arg(request, "from"),
                                _time_arg(request, "to"))

    @http("GET", "/reports/rates")
    @api(*READERS)
    def http_rates(self, request: Any, principal: Principal) -> dict:
        return usecases.rates(self.runtime, self.context, request.args)

    @http("GET", "/reports/overdue")
    @api(*READERS)
    def http_overdue(self, request: Any, principal: Principal) -> dict:
        return usecases.overdue(self.runtime, self.context, request.args)

    @http("GET", "/reports/class-problems")
    @api(*READERS)
    def http_class_problems(self, request: Any, principal: Principal) -> dict:
        return usecases.class_problems(self.runtime, self.context, request.args)

    @http("GET", "/reports/walkthroughs")
    @api(*READERS)
    def http_walkthroughs(self, request: Any, principal: Principal) -> dict:
        return usecases.walkthroughs(self.runtime, self.context, request.args)

    @http("GET", "/reports/activity-compliance")
    @api(*READERS)
    def http_activity_compliance(self, request: Any, principal: Principal) -> dict:
        return usecases.activity_compliance(self.runtime, self.context, request.args)

    @http("GET", "/exports/patrol-report/<string:activity_id>")
    @api(*READERS)
    def http_export_patrol_report(self, request: Any, principal: Principal,
                                  activity_id: str) -> Response:
        return _file(usecases.export(self.runtime, self.context, "patrol-report", request.args,
                                     activity_id))

    @http("GET", "/exports/sitin-summary")
    @api(*READERS)
    def http_export_sitin_summary(self, request: Any, principal: Principal) -> Response:
        return _file(usecases.export(self.runtime, self.context, "sitin-summary", request.args))

    @http("GET", "/exports/annual-review")
    @api(*READERS)
    def http_export_annual_review(self, request: Any, principal: Principal) -> Response:
        return _file(usecases.export(self.runtime, self.context, "annual-review", request.args))

    @rpc
    def summary(self, start: str | None = None, end: str | None = None) -> dict:
        return usecases.summary(self.runtime, self.context,
                                start and datetime.fromisoformat(start),
                                end and datetime.fromisoformat(end))

    @rpc
    def rates(self, params: dict[str, str]) -> dict:
        return usecases.rates(self.runtime, self.context, params)

    @rpc
    def rebuild(self) -> dict:
        return usecases.rebuild(self.runtime, self.context)


def _file(export: usecases.ExportFile) -> Response:
    return Response(export.content, status=200, content_type=export.media_type, headers={
        "Content-Disposition": f'attachment; filename="{export.filename}"'})


def _time_arg(request: Any, name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be an ISO 8601 time with an offset") from None
    if moment.tzinfo is None:
        raise HttpError(400, f"{name} must carry an offset, e.g. 2026-01-01T00:00:00+08:00")
    return moment
