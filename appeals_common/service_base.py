"""What every service class shares: /metrics and /health."""

from __future__ import annotations

import logging
from typing import Any

from nameko.web.handlers import http
from sqlalchemy import text

from appeals_common.dead_letter_metrics import ensure_registered
from appeals_common.http import json_response, metrics_response

log = logging.getLogger("appeals.metrics")


class BaseService:
    runtime: Any

    @http("GET", "/metrics")
    def metrics(self, request: Any) -> Any:
        # Registered on the first scrape: the service's name and broker come from its
        # runtime, which only exists once the container runs.
        ensure_registered(self.runtime.service, self.runtime.settings.amqp_uri)
        try:
            self.refresh_metrics()
        except Exception:  # a gauge that cannot be read must not fail the scrape
            log.exception("refreshing %s's gauges failed", self.runtime.service)
        return metrics_response()

    def refresh_metrics(self) -> None:
        """Gauges read at scrape time; a service with any overrides this."""

    @http("GET", "/health")
    def health(self, request: Any) -> Any:
        try:
            with self.runtime.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # report, don't raise: this is what probes read
            # The detail (host, user, driver message) is for the log, not for whoever
            # can reach the port.
            log.warning("%s's health check: database unreachable: %r",
                        self.runtime.service, exc)
            return json_response(503, {"status": "down", "database": "unreachable"})
        return json_response(200, {"status": "ok", "service": self.runtime.service})
