"""Intake's entrypoints: the inbound bus, staff HTTP and RPC. Each only translates."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.web.handlers import http

from appeals_common.auth import Principal
from appeals_common.http import NotFound, api, read_json
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, reliable_consume
from appeals_common.privacy import mask_personal
from appeals_common.registries import (
    load_categories,
    load_departments,
    load_industry_chains,
    load_source_systems,
)
from appeals_common.service_base import BaseService
from appeals_common.settings import load_settings
from services.intake import usecases
from services.intake.classification import Classifier
from services.intake.models import Base

STAFF_ROLES = ("bureau_admin", "bureau_staff")
READ_ROLES = (*STAFF_ROLES, "viewer", "department")


class IntakeReference(DependencyProvider):
    """Source systems, departments, categories and chains: read and checked once at start."""

    def setup(self) -> None:
        config_dir = load_settings().config_dir
        departments = load_departments(config_dir)
        self.context = usecases.IntakeContext(
            sources=frozenset(load_source_systems(config_dir)),
            departments=frozenset(departments),
            classifier=Classifier(load_categories(config_dir),
                                  load_industry_chains(config_dir, departments)),
            duplicate_threshold=float(os.environ.get("APPEALS_DUPLICATE_THRESHOLD", "0.6")),
            duplicate_window=timedelta(days=int(os.environ.get("APPEALS_DUPLICATE_DAYS", "30"))),
        )

    def get_dependency(self, worker_ctx: Any) -> usecases.IntakeContext:
        return self.context


class IntakeService(BaseService):
    name = "intake"
    runtime = Runtime("intake", Base.metadata)
    metrics_dep = Metrics("intake")
    reference = IntakeReference()

    @reliable_consume("intake.inbound")
    def on_inbound(self, delivery: Delivery) -> str:
        return usecases.handle_inbound(self.runtime, self.reference, delivery)

    @reliable_consume("intake.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.apply_event(self.runtime, delivery)

    @http("POST", "/appeals")
    @api(*STAFF_ROLES)
    def http_register(self, request: Any, principal: Principal) -> tuple[int, dict]:
        result = usecases.register_by_staff(self.runtime, self.reference, read_json(request),
                                            principal.subject)
        return (200 if result["duplicate"] else 201), result

    @http("POST", "/appeals/on-spot")
    @api(*STAFF_ROLES)
    def http_register_on_spot(self, request: Any, principal: Principal) -> tuple[int, dict]:
        result = usecases.register_on_spot(self.runtime, self.reference, read_json(request),
                                           principal.subject)
        return (200 if result["duplicate"] else 201), result

    @http("GET", "/appeals")
    @api(*STAFF_ROLES, "viewer")
    def http_search(self, request: Any, principal: Principal) -> dict:
        return usecases.search(self.runtime, request.args.to_dict(),
                               mask=principal.role == "viewer")

    @http("GET", "/appeals/<string:reg_no>")
    @api(*READ_ROLES)
    def http_get(self, request: Any, principal: Principal, reg_no: str) -> dict:
        # A department's share only, and an appeal not dispatched to it is unknown to it.
        appeal = usecases.get_appeal(self.runtime, reg_no, principal)
        if appeal is None:
            raise NotFound(f"no appeal {reg_no}")
        return appeal

    @http("POST", "/appeals/<string:reg_no>/classification")
    @api(*STAFF_ROLES)
    def http_reclassify(self, request: Any, principal: Principal, reg_no: str) -> dict:
        return usecases.reclassify(self.runtime, self.reference, reg_no, read_json(request),
                                   principal.subject)

    @http("POST", "/appeals/<string:reg_no>/withdrawal")
    @api(*STAFF_ROLES)
    def http_withdraw(self, request: Any, principal: Principal, reg_no: str) -> dict:
        return usecases.withdraw(self.runtime, reg_no, read_json(request), principal.subject)

    @http("POST", "/activities")
    @api(*STAFF_ROLES)
    def http_register_activity(self, request: Any, principal: Principal) -> tuple[int, dict]:
        return 201, usecases.register_activity(self.runtime, self.reference, read_json(request),
                                               principal.subject)

    @http("GET", "/activities")
    @api(*READ_ROLES)
    def http_activities(self, request: Any, principal: Principal) -> list[dict]:
        activities = usecases.list_activities(self.runtime)
        return activities if principal.is_bureau else mask_personal(activities)

    # RPC: the same operations for other bureau systems; `actor` says who acted.

    @rpc
    def register(self, payload: dict, actor: str) -> dict:
        return usecases.register_by_staff(self.runtime, self.reference, payload, actor)

    @rpc
    def register_on_spot(self, payload: dict, actor: str) -> dict:
        return usecases.register_on_spot(self.runtime, self.reference, payload, actor)

    @rpc
    def reclassify(self, reg_no: str, payload: dict, actor: str) -> dict:
        return usecases.reclassify(self.runtime, self.reference, reg_no, payload, actor)

    @rpc
    def withdraw(self, reg_no: str, payload: dict, actor: str) -> dict:
        return usecases.withdraw(self.runtime, reg_no, payload, actor)

    @rpc
    def get(self, reg_no: str) -> dict | None:
        return usecases.get_appeal(self.runtime, reg_no)

    @rpc
    def search(self, params: dict) -> dict:
        return usecases.search(self.runtime, params)

    @rpc
    def register_activity(self, payload: dict, actor: str) -> dict:
        return usecases.register_activity(self.runtime, self.reference, payload, actor)

