"""The broker-validated sender a test's simulated message carries: what RabbitMQ would
set for a publisher connected as the user its routing key belongs to."""

from __future__ import annotations

from appeals_common.identity import dept_user, source_user


def rightful_sender(routing_key: str) -> str | None:
    parts = routing_key.split(".")
    if parts[:2] == ["appeal", "submit"] and len(parts) == 3:
        return source_user(parts[2])
    if parts[0] == "dept" and len(parts) == 3:
        return dept_user(parts[1])
    return None
