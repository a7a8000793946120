"""Supervision's entrypoints: appeal events from the bus; follow-ups over HTTP and RPC."""

from __future__ import annotations

import os
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.timer import timer
from nameko.web.handlers import http

from appeals_common.auth import Principal
from appeals_common.calendar import WorkingCalendar
from appeals_common.http import NotFound, api, read_json
from appeals_common.metrics import load_calendar
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, reliable_consume
from appeals_common.service_base import BaseService
from appeals_common.settings import load_settings
from services.supervision import clocks, usecases
from services.supervision.escalation import WorkingHours
from services.supervision.models import Base

# Read at import: nameko fixes a timer's interval when the class is defined.
SCAN_SECONDS = float(os.environ.get("APPEALS_SCAN_SECONDS", "60"))
WORKING_HOURS = WorkingHours.parse(os.environ.get("APPEALS_WORKING_HOURS", "09:00-17:30"))


class Calendar(DependencyProvider):
    def setup(self) -> None:
        settings = load_settings()
        self.calendar = load_calendar(settings.config_dir, settings.timezone)

    def get_dependency(self, worker_ctx: Any) -> WorkingCalendar:
        return self.calendar


class SupervisionService(BaseService):
    name = "supervision"
    runtime = Runtime("supervision", Base.metadata)
    calendar = Calendar()
    metrics_dep = Metrics("supervision")

    @reliable_consume("supervision.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.on_event(self.runtime, self.calendar, delivery)

    @http("POST", "/appeals/<string:reg_no>/followups")
    @api("bureau_admin", "bureau_staff")
    def http_followup(self, request: Any, principal: Principal, reg_no: str) -> tuple[int, dict]:
        return 201, usecases.record_followup(self.runtime, self.calendar, reg_no,
                                             read_json(request), principal.subject)

    @http("POST", "/appeals/<string:reg_no>/closure")
    @api("bureau_admin", "bureau_staff")
    def http_close_unreachable(self, request: Any, principal: Principal, reg_no: str) -> dict:
        return usecases.close_unreachable(self.runtime, reg_no, read_json(request),
                                          principal.subject)

    @http("GET", "/appeals/<string:reg_no>/clock")
    @api("bureau_admin", "bureau_staff", "viewer")
    def http_clock(self, request: Any, principal: Principal, reg_no: str) -> dict:
        clock = usecases.get_clock(self.runtime, reg_no)
        if clock is None:
            raise NotFound(f"no appeal {reg_no}")
        return clock

    @timer(interval=SCAN_SECONDS)
    def scan_deadlines(self) -> int:
        return clocks.scan(self.runtime, self.calendar, WORKING_HOURS)

    @http("GET", "/appeals/<string:reg_no>/deadlines")
    @api("bureau_admin", "bureau_staff", "viewer")
    def http_deadlines(self, request: Any, principal: Principal, reg_no: str) -> list[dict]:
        return clocks.list_clocks(self.runtime, reg_no)

    @rpc
    def record_followup(self, reg_no: str, followup: dict, actor: str) -> dict:
        return usecases.record_followup(self.runtime, self.calendar, reg_no, followup, actor)

    @rpc
    def close_unreachable(self, reg_no: str, payload: dict, actor: str) -> dict:
        return usecases.close_unreachable(self.runtime, reg_no, payload, actor)

    @rpc
    def scan(self) -> int:
        """Run a deadline scan now (operators, tests with a moved clock)."""
        return clocks.scan(self.runtime, self.calendar, WORKING_HOURS)
