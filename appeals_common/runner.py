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

    from appeals_common.settings import load_settings

    logging.basicConfig(
        level=os.environ.get("APPEALS_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    settings = load_settings()
    if os.environ.get("APPEALS_APPLY_TOPOLOGY", "1") == "1":
        # Every replica can start on an empty broker; declaring is idempotent.
        from appeals_common.cli import cmd_topology

        cmd_topology(argparse.Namespace(action="apply"))
    module_name, class_name = SERVICE_CLASSES[name].split(":")
    service_cls = getattr(importlib.import_module(module_name), class_name)
    config = {
        "AMQP_URI": settings.amqp_uri,
        "WEB_SERVER_ADDRESS": f"{settings.http_host}:{settings.http_port(name)}",
        "max_workers": settings.max_workers,
        "parent_calls_tracked": 10,
        "serializer": "json",
    }
    run([service_cls], config)
