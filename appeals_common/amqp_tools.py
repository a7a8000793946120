"""pika helpers for tools outside the services (topology, dead letters)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika


@contextmanager
def blocking_channel(amqp_uri: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = connection.channel()
        yield channel
    finally:
        if connection.is_open:
            connection.close()
