"""Dead-letter tools against the real broker: list leaves the queue as it was, replay sends
a message back to the queue it failed in."""

from __future__ import annotations

import json
import subprocess
import sys

import pika

from appeals_common import deadletters
from tests.integration.conftest import drain


def _park(channel, queue: str, message_id: str) -> None:
    channel.queue_declare(queue, durable=True)
    channel.queue_declare(f"{queue}.dlq", durable=True)
    channel.basic_publish("", f"{queue}.dlq", b'{"broken": true}', pika.BasicProperties(
        content_type="application/json", delivery_mode=2, message_id=message_id,
        headers={"x-failed-queue": queue, "x-attempts": 4, "x-last-error": "KeyError: 'x'",
                 "x-original-routing-key": "appeal.registered"}))


def test_list_show_and_replay(amqp_uri, channel):
    _park(channel, "dltest", "m-1")
    _park(channel, "dltest", "m-2")
    listed = deadletters.peek(amqp_uri, "dltest.dlq")
    assert [d.message_id for d in listed] == ["m-1", "m-2"]
    assert deadletters.summary(listed[0])["error"] == "KeyError: 'x'"
    assert len(deadletters.peek(amqp_uri, "dltest.dlq")) == 2, "listing consumed nothing"

    assert deadletters.replay(amqp_uri, "dltest.dlq", message_id="m-2") == 1
    back = drain(channel, "dltest")
    assert [(p.message_id, b) for p, b in back] == [("m-2", b'{"broken": true}')]
    assert "x-attempts" not in back[0][0].headers, "a replay gets a fresh retry budget"
    assert [d.message_id for d in deadletters.peek(amqp_uri, "dltest.dlq")] == ["m-1"]


def test_cli_lists_and_replays(amqp_uri, channel):
    _park(channel, "dlcli", "m-9")
    env_cmd = [sys.executable, "-m", "appeals_common.cli", "dead-letters"]
    env = {"APPEALS_AMQP_URI": amqp_uri, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([*env_cmd, "list", "--queue", "dlcli.dlq"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out.splitlines()[0])["message_id"] == "m-9"
    shown = subprocess.run([*env_cmd, "show", "m-9", "--queue", "dlcli.dlq"], env=env,
                           check=True, capture_output=True, text=True).stdout
    assert json.loads(shown)["body"] == '{"broken": true}'
    out = subprocess.run([*env_cmd, "replay", "--queue", "dlcli.dlq"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "replayed 1" in out
    assert [p.message_id for p, _ in drain(channel, "dlcli")] == ["m-9"]
