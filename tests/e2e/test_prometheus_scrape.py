"""A real Prometheus server scraping the running suite (DESIGN §8): the four services are
up, business series arrive with their labels, dead-letter depth is visible, and the
deploy/prometheus alert rules load and evaluate against real data.

The server is Debian's `prometheus` (scripts/test.sh installs it), started here on a free
port with its own configuration and data directory, never the packaged service."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from appeals_common.settings import SERVICES
from tests.e2e.bus import appeal_body, poll
from tests.tools import missing_tool

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHANNEL = "door_visit"  # 上门问诊: a channel no other end-to-end test registers appeals on
DLQ = "supervision.events.dlq"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(suite, tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        missing_tool("the prometheus server is not installed (scripts/test.sh installs Debian's)")
    workdir = Path(tmp_path_factory.mktemp("prometheus"))
    shutil.copy(REPO / "deploy" / "prometheus" / "alerts.yml", workdir / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": service, "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{suite.settings.http_port(service)}"],
                                 "labels": {"service": service}}]}
            for service in SERVICES],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = _free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text(errors="replace")[-3000:]
            try:
                return requests.get(f"{base}/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        poll(ready, timeout=60, interval=0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _registered(urls: dict[str, str]) -> float:
    """appeals_registered_total{channel=CHANNEL} straight from reporting's /metrics."""
    text = requests.get(f"{urls['reporting']}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "appeals_registered_total" and sample.labels.get("channel") == CHANNEL:
                return sample.value
    return 0.0


def test_prometheus_scrapes_all_four_services(prometheus: str) -> None:
    def all_up() -> dict[str, str] | None:
        jobs = {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")}
        return jobs if jobs == dict.fromkeys(SERVICES, "1") else None

    assert poll(all_up, timeout=60, interval=0.5) == dict.fromkeys(SERVICES, "1")


def test_a_registered_appeal_shows_up_in_prometheus_by_channel(prometheus: str, urls, amqp_uri,
                                                              make_bus) -> None:
    before = _registered(urls)
    bus = make_bus()
    try:
        message_id = bus.submit(appeal_body(channel=CHANNEL))
        receipt = bus.receipt(message_id)
    finally:
        bus.close()
    assert receipt["status"] == "accepted", receipt

    def scraped() -> list[dict[str, Any]]:
        result = query(prometheus, "appeals_registered_total")
        return [r for r in result
                if r["metric"].get("channel") == CHANNEL and float(r["value"][1]) >= before + 1]

    (sample,) = poll(scraped, timeout=60, interval=0.5)
    assert sample["metric"]["job"] == "reporting"
    assert sample["metric"]["__name__"] == "appeals_registered_total"


def test_dead_letter_depth_reaches_prometheus(prometheus: str, amqp_uri) -> None:
    message_id = f"prom-e2e-{uuid.uuid4()}"
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish("", DLQ, b'{"broken": true}', pika.BasicProperties(
            delivery_mode=2, message_id=message_id, headers={"x-failed-queue": "supervision.events"}))

        def depth() -> list[dict[str, Any]]:
            return [r for r in query(prometheus, f'appeals_dead_letter_messages{{queue="{DLQ}"}}')
                    if float(r["value"][1]) >= 1]

        (sample,) = poll(depth, timeout=60, interval=0.5)
        assert sample["metric"]["job"] == "supervision"
        # Every service reports the dead-letter queues of its own queues, and only those.
        by_job: dict[str, set[str]] = {}
        for r in query(prometheus, "appeals_dead_letter_messages"):
            by_job.setdefault(r["metric"]["job"], set()).add(r["metric"]["queue"])
        assert by_job == {"intake": {"intake.inbound.dlq", "intake.events.dlq"},
                          "dispatch": {"dispatch.events.dlq", "dispatch.replies.dlq"},
                          "supervision": {"supervision.events.dlq"},
                          "reporting": {"reporting.events.dlq"}}
        errors = query(prometheus, "appeals_dead_letter_read_errors_total")
        assert {r["metric"]["job"] for r in errors} == set(SERVICES)
    finally:
        _remove(conn, DLQ, message_id)
        conn.close()


def _remove(conn: pika.BlockingConnection, queue: str, message_id: str) -> None:
    """Take our message out of the dead-letter queue, leaving any other as it was."""
    channel = conn.channel()
    last = None
    while True:
        method, props, _ = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        if props.message_id == message_id:
            channel.basic_ack(method.delivery_tag)
        else:
            last = method.delivery_tag
    if last is not None:
        channel.basic_nack(last, multiple=True, requeue=True)


def test_the_alert_rules_load_and_evaluate_against_the_suite(prometheus: str) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        resp = requests.get(f"{prometheus}/api/v1/rules", timeout=5).json()
        rules = [rule for group in resp["data"]["groups"] for rule in group["rules"]]
        return rules if rules and all(rule.get("lastEvaluation", "").startswith("20") and
                                      not rule["lastEvaluation"].startswith("0001")
                                      for rule in rules) else None

    rules = poll(evaluated, timeout=30, interval=0.5)
    assert {r["name"] for r in rules} >= {"AppealsServiceDown", "AppealsOverdueGrowing",
                                         "AppealsDeadLettersPresent", "AppealsOutboxBacklog"}
    # Which alerts fire is not asserted (promtool's unit tests do that): other tests may
    # leave dead letters behind. Every rule must evaluate without an error, though.
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
