"""Dispatch's entrypoints: new appeals and department replies from the bus; the bureau's
decisions and views over HTTP and RPC."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.web.handlers import http

from appeals_common.auth import Principal
from appeals_common.deadlines import DeadlinePolicy
from appeals_common.http import api, page_args, read_json
from appeals_common.metrics import load_calendar, set_provisional_gauges
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, reliable_consume
from appeals_common.privacy import as_read_by
from appeals_common.registries import load_categories, load_departments, load_routing_rules
from appeals_common.service_base import BaseService
from appeals_common.settings import load_settings
from services.dispatch import bureau, recompute, usecases
from services.dispatch.models import Base
from services.dispatch.routing import Router

STAFF_ROLES = ("bureau_admin", "bureau_staff")


class DispatchRules(DependencyProvider):
    """Reference data loaded and checked once at start: a bad file stops the service."""

    def setup(self) -> None:
        settings = load_settings()
        departments = load_departments(settings.config_dir)
        self.context = usecases.DispatchContext(
            router=Router.from_config(load_routing_rules(settings.config_dir, departments)),
            calendar=load_calendar(settings.config_dir, settings.timezone),
            policy=DeadlinePolicy.from_file(settings.config_dir / "deadlines.yaml",
                                            set(load_categories(settings.config_dir))),
            departments=set(departments),
        )

    def get_dependency(self, worker_ctx: Any) -> usecases.DispatchContext:
        return self.context


class DispatchService(BaseService):
    name = "dispatch"
    runtime = Runtime("dispatch", Base.metadata)
    rules = DispatchRules()
    metrics_dep = Metrics("dispatch")

    def refresh_metrics(self) -> None:
        waiting = recompute.recompute(self.runtime, self.rules.calendar, self.rules.policy,
                                      apply=False)
        set_provisional_gauges("dispatch", waiting.checked, waiting.still_provisional)

    @reliable_consume("dispatch.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.on_event(self.runtime, self.rules, delivery)

    @reliable_consume("dispatch.replies")
    def on_reply(self, delivery: Delivery) -> str:
        return usecases.on_reply(self.runtime, self.rules, delivery)

    @http("GET", "/assignments")
    @api(*STAFF_ROLES, "viewer", "department")
    def http_assignments(self, request: Any, principal: Principal) -> list[dict]:
        # A department sees only its own assignments, whatever it asks for.
        dept = principal.dept_code if principal.role == "department" else request.args.get("dept")
        return as_read_by(principal, usecases.list_assignments(
            self.runtime, dept, request.args.get("reg_no"), request.args.get("state"),
            page_args(request)))

    @http("POST", "/assignments/<string:assignment_id>/return-decision")
    @api(*STAFF_ROLES)
    def http_return_decision(self, request: Any, principal: Principal,
                             assignment_id: str) -> dict:
        return bureau.decide_return(self.runtime, self.rules, assignment_id, read_json(request),
                                    principal.subject)

    @http("GET", "/extensions")
    @api(*STAFF_ROLES, "viewer")
    def http_extensions(self, request: Any, principal: Principal) -> list[dict]:
        return as_read_by(principal, bureau.list_extensions(self.runtime, request.args.get("state"),
                                                        page_args(request)))

    @http("POST", "/extensions/<string:extension_id>/decision")
    @api(*STAFF_ROLES)
    def http_extension_decision(self, request: Any, principal: Principal,
                                extension_id: str) -> dict:
        return bureau.decide_extension(self.runtime, extension_id, read_json(request),
                                       principal.subject)

    @http("POST", "/appeals/<string:reg_no>/dispatch")
    @api(*STAFF_ROLES)
    def http_override(self, request: Any, principal: Principal, reg_no: str) -> dict:
        return bureau.override(self.runtime, self.rules, reg_no, read_json(request),
                               principal.subject)

    @rpc
    def assignments(self, reg_no: str) -> list[dict]:
        return usecases.list_assignments(self.runtime, reg_no=reg_no)

    @rpc
    def decide_return(self, assignment_id: str, payload: dict, actor: str) -> dict:
        return bureau.decide_return(self.runtime, self.rules, assignment_id, payload, actor)

    @rpc
    def decide_extension(self, extension_id: str, payload: dict, actor: str) -> dict:
        return bureau.decide_extension(self.runtime, extension_id, payload, actor)

    @rpc
    def override(self, reg_no: str, payload: dict, actor: str) -> dict:
        return bureau.override(self.runtime, self.rules, reg_no, payload, actor)
