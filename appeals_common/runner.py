"""Start one service: `appeals run intake`.

eventlet must patch the standard library before anything opens a socket. Its
monkey_patch() also installs psycopg2's wait callback (psycopg=True): without it one
database call would block every green thread of the service.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os

SERVICE_CLASSES = {
    "intake": "services.intake.service:IntakeService",
    "dispatch": "services.dispatch.service:DispatchService",
    "supervision": "services.supervision.service:SupervisionService",
    "reporting": "services.reporting.service:ReportingService",
}


def run_service(name: str) -> None:
    import eventlet

    eventlet.monkey_patch()  # everything, psycopg2 included
    from appeals_common import green

    green.install()  # psycopg2's wait callback, with a critical-section escape hatch

    from nameko.cli.run import run

    from appeals_common import tracing
    from appeals_common.settings import SettingsError, check_service_start, load_settings

    try:
        tracing.configure_logging(name)
        tracing.configure(name)
    except ValueError as exc:
        raise SystemExit(f"appeals run {name}: {exc}") from None
    logging.getLogger("pika").setLevel(logging.WARNING)
    log = logging.getLogger("appeals.runner")
    try:
        settings = load_settings()
        warnings = check_service_start(settings)  # no weak JWT secret outside development
    except SettingsError as exc:
        raise SystemExit(f"appeals run {name}: {exc}") from None
    for warning in warnings:
        log.warning("%s", warning)
    if os.environ.get("APPEALS_APPLY_TOPOLOGY", "1") == "1":
        # Every replica can start on an empty broker; declaring is idempotent.
        _apply_topology(name, log)
    module_name, class_name = SERVICE_CLASSES[name].split(":")
    service_cls = getattr(importlib.import_module(module_name), class_name)
    config = {
        "AMQP_URI": settings.amqp_uri,
        "WEB_SERVER_ADDRESS": f"{settings.http_host}:{settings.http_port(name)}",
        "max_workers": settings.max_workers,
        "parent_calls_tracked": 10,
        "serializer": "json",
    }
    try:
        run([service_cls], config)
    finally:
        tracing.shutdown()  # export the spans still buffered


def _apply_topology(name: str, log: logging.Logger) -> None:
    """Declare the topology as this service's broker user. A per-service user (svc-<name>)
    may not declare it: the topology job does (as appeals-topology), and
    APPEALS_APPLY_TOPOLOGY=0 says so; if it was left on, say why and carry on, since the
    queues are there once that job ran (a missing one stops the consumer anyway)."""
    import pika.exceptions

    from appeals_common.cli import cmd_topology

    try:
        cmd_topology(argparse.Namespace(action="apply"))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 403:
            raise
        log.warning("%s's broker user may not declare the topology (%s): leaving it to "
                    "`appeals topology apply` as the topology user; set "
                    "APPEALS_APPLY_TOPOLOGY=0 to skip this attempt", name, exc.reply_text)
