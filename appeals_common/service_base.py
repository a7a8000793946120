"""What every service class shares: /metrics and /health."""

from __future__ import annotations

import logging
from typing import Any

from nameko.web.handlers import http

from appeals_common.db import unreachable_reason
from appeals_common.dead_letter_metrics import ensure_registered
from appeals_common.http import json_response, metrics_response
from appeals_common.nameko_ext import DEPENDENCY_UP, Tracing

log = logging.getLogger("appeals.metrics")


class BaseService:
    runtime: Any
    tracing = Tracing()  # a span per message, request and timer tick; ids in every log line

    @http("GET", "/metrics")
    def metrics(self, request: Any) -> Any:
        # Registered on the first scrape: the service's name and broker come from its
        # runtime, which only exists once the container runs.
        ensure_registered(self.runtime.service, self.runtime.settings.amqp_uri)
        DEPENDENCY_UP.labels(self.runtime.service, "database").set(
            int(unreachable_reason(self.runtime.store.engine) is None))
        try:
            self.refresh_metrics()
        except Exception:  # a gauge that cannot be read must not fail the scrape
            log.exception("refreshing %s's gauges failed", self.runtime.service)
        return metrics_response()

    def refresh_metrics(self) -> None:
        """Gauges read at scrape time; a service with any overrides this."""

    @http("GET", "/health")
    def health(self, request: Any) -> Any:
        """ok, or degraded naming what is down: the process itself answers (so a
        supervisor or liveness probe leaves it running), its consumers wait the outage
        out and resume by themselves."""
        problem = unreachable_reason(self.runtime.store.engine)
        if problem is not None:
            # The detail (host, user, driver message) is for the log, not for whoever
            # can reach the port.
            log.warning("%s's health check: database unreachable: %s", self.runtime.service,
                        problem)
            DEPENDENCY_UP.labels(self.runtime.service, "database").set(0)
            return json_response(503, {"status": "degraded", "service": self.runtime.service,
                                       "down": ["database"]})
        DEPENDENCY_UP.labels(self.runtime.service, "database").set(1)
        return json_response(200, {"status": "ok", "service": self.runtime.service})
