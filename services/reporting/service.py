"""Reporting's entrypoints: every event from the bus; reports over HTTP and RPC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nameko.rpc import rpc
from nameko.web.handlers import http
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from appeals_common.auth import Principal
from appeals_common.http import HttpError, api
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, ServiceRuntime, reliable_consume
from appeals_common.service_base import BaseService
from services.reporting import usecases
from services.reporting.models import Base


class BusinessCollector:
    """Business series read from the read model at scrape time, so they survive restarts
    and agree across replicas."""

    runtime: ServiceRuntime | None = None

    def collect(self) -> Any:
        if self.runtime is None:
            return
        snap = usecases.metric_snapshot(self.runtime)
        registered = CounterMetricFamily("appeals_registered", "Appeals registered, by channel",
                                         labels=["channel"])
        for channel, count in snap["registered_by_channel"].items():
            registered.add_metric([channel], count)
        yield registered
        open_ = GaugeMetricFamily("appeals_open", "Open appeals by state", labels=["state"])
        for state, count in snap["open_by_state"].items():
            open_.add_metric([state], count)
        yield open_


COLLECTOR = BusinessCollector()
REGISTRY.register(COLLECTOR)


class ReportingRuntime(Runtime):
    def setup(self) -> None:
        super().setup()
        COLLECTOR.runtime = self.runtime


class ReportingService(BaseService):
    name = "reporting"
    runtime = ReportingRuntime("reporting", Base.metadata)
    metrics_dep = Metrics("reporting")

    @reliable_consume("reporting.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.on_event(self.runtime, delivery)

    @http("GET", "/reports/summary")
    @api("bureau_admin", "bureau_staff", "viewer")
    def http_summary(self, request: Any, principal: Principal) -> dict:
        return usecases.summary(self.runtime, _date_arg(request, "from"), _date_arg(request, "to"))

    @rpc
    def summary(self, start: str | None = None, end: str | None = None) -> dict:
        return usecases.summary(self.runtime, start and datetime.fromisoformat(start),
                                end and datetime.fromisoformat(end))

    @rpc
    def rebuild(self) -> int:
        return usecases.rebuild(self.runtime)


def _date_arg(request: Any, name: str) -> datetime | None:
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
