"""Intake's entrypoints: the inbound bus, staff HTTP and RPC. Each only translates."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.web.handlers import http

from appeals_common.auth import Principal
from appeals_common.http import NotFound, api, read_json
from appeals_common.nameko_ext import Delivery, Metrics, Runtime, reliable_consume
from appeals_common.registries import load_source_systems
from appeals_common.service_base import BaseService
from appeals_common.settings import load_settings
from services.intake import usecases
from services.intake.models import Base

STAFF_ROLES = ("bureau_admin", "bureau_staff")
READ_ROLES = (*STAFF_ROLES, "viewer", "department")


class SourceSystems(DependencyProvider):
    """The source-system registry, read and checked once at start."""

    def setup(self) -> None:
        self.names = frozenset(load_source_systems(load_settings().config_dir))

    def get_dependency(self, worker_ctx: Any) -> frozenset[str]:
        return self.names


class IntakeService(BaseService):
    name = "intake"
    runtime = Runtime("intake", Base.metadata)
    metrics_dep = Metrics("intake")
    sources = SourceSystems()

    @reliable_consume("intake.inbound")
    def on_inbound(self, delivery: Delivery) -> str:
        return usecases.handle_inbound(self.runtime, delivery, self.sources)

    @reliable_consume("intake.events")
    def on_event(self, delivery: Delivery) -> None:
        usecases.apply_event(self.runtime, delivery)

    @http("POST", "/appeals")
    @api(*STAFF_ROLES)
    def http_register(self, request: Any, principal: Principal) -> tuple[int, dict]:
        result = usecases.register_by_staff(self.runtime, read_json(request), principal.subject)
        return (200 if result["duplicate"] else 201), result

    @http("GET", "/appeals/<string:reg_no>")
    @api(*READ_ROLES)
    def http_get(self, request: Any, principal: Principal, reg_no: str) -> dict:
        appeal = usecases.get_appeal(self.runtime, reg_no)
        if appeal is None or not _may_see(principal, appeal):
            raise NotFound(f"no appeal {reg_no}")
        return appeal

    @rpc
    def register(self, payload: dict, actor: str) -> dict:
        return usecases.register_by_staff(self.runtime, payload, actor)

    @rpc
    def get(self, reg_no: str) -> dict | None:
        return usecases.get_appeal(self.runtime, reg_no)


def _may_see(principal: Principal, appeal: dict) -> bool:
    if principal.role != "department":
        return True
    units = appeal.get("units") or {}
    return principal.dept_code in [units.get("lead"), *units.get("co", [])]
