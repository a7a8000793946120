"""Supervision's entrypoints: appeal events from the bus; follow-ups over HTTP and RPC."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.timer import timer
from nameko.web.handlers import http
from sqlalchemy.exc import IntegrityError

from appeals_common.auth import Principal
from appeals_common.calendar import WorkingCalendar
from appeals_common.http import FieldErrors, NotFound, api, page_args, read_json
from appeals_common.input_guard import whole_number
from appeals_common.metrics import load_calendar, set_provisional_gauges
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, reliable_consume
from appeals_common.privacy import as_read_by
from appeals_common.registries import load_departments, load_industry_chains
from appeals_common.service_base import BaseService
from appeals_common.settings import SettingsError, load_settings
from services.supervision import activities, clocks, recompute, usecases, walkthroughs
from services.supervision import class_problem_usecases as classes
from services.supervision.activities import ChainLeads
from services.supervision.class_problems import ClusterSettings
from services.supervision.escalation import WorkingHours
from services.supervision.models import Base

# Read at import: nameko fixes a timer's interval when the class is defined.
SCAN_SECONDS = float(os.environ.get("APPEALS_SCAN_SECONDS", "60"))
try:  # checked at start: a bad value would otherwise fail every scan
    WORKING_HOURS = WorkingHours.parse(os.environ.get("APPEALS_WORKING_HOURS", "09:00-17:30"))
except ValueError as exc:
    raise SettingsError(f"APPEALS_WORKING_HOURS: {exc}") from None
DETECT_SECONDS = float(os.environ.get("APPEALS_CLASS_DETECT_SECONDS", "3600"))
STAFF_ROLES = ("bureau_admin", "bureau_staff")


class ClassSettings(DependencyProvider):
    """Clustering settings for 类题破解, the departments (who may lead a class, own a list
    item, serve a 附件3 row) and each key chain's lead unit (附件2)."""

    def setup(self) -> None:
        env = os.environ
        defaults = ClusterSettings()
        self.settings = ClusterSettings(
            threshold=float(env.get("APPEALS_CLASS_THRESHOLD", defaults.threshold)),
            window_days=int(env.get("APPEALS_CLASS_WINDOW_DAYS", defaults.window_days)),
            min_size=int(env.get("APPEALS_CLASS_MIN_SIZE", defaults.min_size)))
        config_dir = load_settings().config_dir
        registry = load_departments(config_dir)
        self.departments = frozenset(registry)
        self.chains = ChainLeads({code: chain.lead for code, chain in
                                  load_industry_chains(config_dir, registry).items()})
        # The bureau (局长坐诊 is its own activity): reminded of each sit-in window.
        self.bureau = next(code for code, dept in registry.items() if dept.kind == "bureau")

    def get_dependency(self, worker_ctx: Any) -> ClassSettings:
        return self


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
    class_settings = ClassSettings()

    def refresh_metrics(self) -> None:
        waiting = recompute.recompute(self.runtime, self.calendar, apply=False)
        set_provisional_gauges("supervision", waiting.checked, waiting.still_provisional)

    @reliable_consume("supervision.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.on_event(self.runtime, self.calendar, self.class_settings.chains, delivery)

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
        return as_read_by(principal, clock)

    @timer(interval=SCAN_SECONDS)
    def scan_deadlines(self) -> int:
        return self.scan()

    @http("GET", "/appeals/<string:reg_no>/deadlines")
    @api("bureau_admin", "bureau_staff", "viewer")
    def http_deadlines(self, request: Any, principal: Principal, reg_no: str) -> list[dict]:
        return as_read_by(principal, clocks.list_clocks(self.runtime, reg_no))

    @rpc
    def record_followup(self, reg_no: str, followup: dict, actor: str) -> dict:
        return usecases.record_followup(self.runtime, self.calendar, reg_no, followup, actor)

    @timer(interval=DETECT_SECONDS)
    def detect_class_problems(self) -> int:
        return len(classes.detect(self.runtime, self.class_settings.settings))

    @http("POST", "/class-problems/detection")
    @api(*STAFF_ROLES)
    def http_detect(self, request: Any, principal: Principal) -> list[dict]:
        return classes.detect(self.runtime, self.class_settings.settings)

    @http("GET", "/class-problems")
    @api(*STAFF_ROLES, "viewer")
    def http_class_problems(self, request: Any, principal: Principal) -> list[dict]:
        return as_read_by(principal, classes.list_problems(self.runtime, request.args.get("state")))

    @http("POST", "/class-problems/<string:class_id>/confirmation")
    @api(*STAFF_ROLES)
    def http_confirm(self, request: Any, principal: Principal, class_id: str) -> dict:
        return classes.confirm(self.runtime, self.class_settings.departments, class_id,
                               read_json(request), principal.subject)

    @http("POST", "/class-problems/<string:class_id>/resolution")
    @api(*STAFF_ROLES)
    def http_resolve(self, request: Any, principal: Principal, class_id: str) -> dict:
        return classes.resolve(self.runtime, class_id, read_json(request), principal.subject)

    @http("POST", "/class-problems/<string:class_id>/closure")
    @api(*STAFF_ROLES)
    def http_close_class(self, request: Any, principal: Principal, class_id: str) -> dict:
        return classes.close(self.runtime, class_id, read_json(request), principal.subject)

    @http("POST", "/class-problems/<string:class_id>/dismissal")
    @api(*STAFF_ROLES)
    def http_dismiss(self, request: Any, principal: Principal, class_id: str) -> dict:
        return classes.dismiss(self.runtime, class_id, read_json(request), principal.subject)

    @rpc
    def close_unreachable(self, reg_no: str, payload: dict, actor: str) -> dict:
        return usecases.close_unreachable(self.runtime, reg_no, payload, actor)

    @rpc
    def scan(self) -> int:
        """Run a deadline scan now (operators, tests with a moved clock)."""
        # Another replica may open this year's patrol clocks at the same moment.
        with contextlib.suppress(IntegrityError):
            activities.open_year_clocks(self.runtime, self.calendar, self.class_settings.chains)
            activities.open_sit_in_reminders(self.runtime, self.calendar,
                                             self.class_settings.bureau)
        return clocks.scan(self.runtime, self.calendar, WORKING_HOURS)

    # --- 《重点督办单》 and their written feedback ---------------------------------------

    @http("GET", "/supervision-orders")
    @api(*STAFF_ROLES, "viewer", "department")
    def http_key_orders(self, request: Any, principal: Principal) -> list[dict]:
        dept = principal.dept_code if principal.role == "department" else request.args.get("dept")
        return as_read_by(principal, usecases.list_key_orders(self.runtime, request.args.get("state"),
                                                          dept, page_args(request)))

    # --- 我陪群众走流程 -----------------------------------------------------------------

    @http("POST", "/walkthroughs")
    @api(*STAFF_ROLES)
    def http_record_walkthrough(self, request: Any, principal: Principal) -> tuple[int, dict]:
        return 201, walkthroughs.record(self.runtime, self.class_settings.departments,
                                        read_json(request), principal.subject)

    @http("GET", "/walkthroughs")
    @api(*STAFF_ROLES, "viewer")
    def http_walkthroughs(self, request: Any, principal: Principal) -> list[dict]:
        return as_read_by(principal, walkthroughs.list_walkthroughs(self.runtime, page_args(request)))

    @http("GET", "/walkthroughs/<string:walkthrough_id>")
    @api(*STAFF_ROLES, "viewer")
    def http_walkthrough(self, request: Any, principal: Principal, walkthrough_id: str) -> dict:
        return as_read_by(principal, walkthroughs.get(self.runtime, walkthrough_id))

    @http("GET", "/list-items")
    @api(*STAFF_ROLES, "viewer", "department")
    def http_list_items(self, request: Any, principal: Principal) -> list[dict]:
        owner = principal.dept_code if principal.role == "department" else request.args.get("owner")
        return as_read_by(principal, walkthroughs.list_items(
            self.runtime, request.args.get("list"), request.args.get("state"), owner,
            page_args(request)))

    @http("POST", "/list-items/<string:item_id>/closure")
    @api(*STAFF_ROLES)
    def http_close_item(self, request: Any, principal: Principal, item_id: str) -> dict:
        return walkthroughs.close_item(self.runtime, item_id, read_json(request),
                                       principal.subject)

    # --- activity obligations (附件1) -----------------------------------------------------

    @http("POST", "/activities/<string:activity_id>/plan")
    @api(*STAFF_ROLES, "department")
    def http_patrol_plan(self, request: Any, principal: Principal, activity_id: str) -> dict:
        return activities.submit_plan(self.runtime, activity_id, read_json(request), principal,
                                      self.class_settings.chains)

    @http("POST", "/activities/<string:activity_id>/report")
    @api(*STAFF_ROLES, "department")
    def http_patrol_report(self, request: Any, principal: Principal, activity_id: str) -> dict:
        return activities.submit_report(self.runtime, self.calendar, activity_id,
                                        read_json(request), principal,
                                        self.class_settings.chains,
                                        self.class_settings.departments)

    @http("GET", "/activity-obligations")
    @api(*STAFF_ROLES, "viewer")
    def http_obligations(self, request: Any, principal: Principal) -> dict:
        year = _year_arg(request, self.calendar.local_date(self.runtime.now()).year)
        return as_read_by(principal, {
            **activities.year_compliance(self.runtime, self.calendar, self.class_settings.chains,
                                         year),
            "activities": activities.list_activities(self.runtime, year)})


def _year_arg(request: Any, default: int) -> int:
    raw = request.args.get("year")
    if raw is None:
        return default
    year = whole_number(raw, 4)
    if year is None or not 2000 <= year <= 2100:
        raise FieldErrors({"year": ["a year such as 2026"]})
    return year
