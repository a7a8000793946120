"""pika helpers for tools outside the services (topology, dead letters)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika

HEARTBEAT_SECONDS = 30


@contextmanager
def blocking_channel(amqp_uri: str) -> Iterator[Any]:
    params = pika.URLParameters(amqp_uri)
    if "heartbeat" not in urllib.parse.urlsplit(amqp_uri).query:  # the URI's own wins
        params.heartbeat = HEARTBEAT_SECONDS
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        yield channel
    finally:
        if connection.is_open:
            connection.close()


def _management(method: str, url: str, path: str, body: dict | None = None) -> None:
    import base64
    import json
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    req = urllib.request.Request(
        f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}/api/{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json", "authorization": "Basic " + base64.b64encode(
            f"{parsed.username or 'guest'}:{parsed.password or 'guest'}".encode()).decode()})
    urllib.request.urlopen(req, timeout=10).read()


def manage_vhost(action: str, name: str, user: str = "guest",
                 management_url: str = "http://guest:guest@127.0.0.1:15672") -> None:
    """Add (with full rights for `user`) or delete a vhost: through the management API
    when the plugin is on, else with rabbitmqctl on this machine. Tests and benchmarks
    use one vhost per run so no run sees another's messages."""
    import shutil
    import subprocess
    import urllib.error

    quoted = urllib.parse.quote(name, safe="")
    try:
        if action == "add":
            _management("PUT", management_url, f"vhosts/{quoted}")
            _management("PUT", management_url, f"permissions/{quoted}/{user}",
                        {"configure": ".*", "write": ".*", "read": ".*"})
        else:
            _management("DELETE", management_url, f"vhosts/{quoted}")
        return
    except (urllib.error.URLError, OSError):
        pass
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if action == "add":
        subprocess.run([ctl, "add_vhost", name], check=True, capture_output=True)
        subprocess.run([ctl, "set_permissions", "-p", name, user, ".*", ".*", ".*"],
                       check=True, capture_output=True)
    else:
        subprocess.run([ctl, "delete_vhost", name], check=False, capture_output=True)
