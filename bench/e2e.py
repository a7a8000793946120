"""End-to-end benchmark: prints one JSON line.

As an external system, publish appeals to `appeals.inbound`; departments auto-reply
(sign, then respond) and the bureau records a satisfied follow-up, so each appeal runs
the whole cycle. Measured in one run:
  * latency publish -> lead assignment on `dispatch.<dept>` at a steady offered rate;
  * registered->assigned throughput for a burst published as fast as the broker takes it;
  * full-cycle throughput (publish -> closed) for the same burst;
  * the raw broker ceiling: pika publishing persistent messages with confirms into a
    durable queue, and our throughput as a fraction of it.
Everything runs on this machine, in its own vhost and databases.

    python bench/e2e.py [--burst 2000] [--rate 50] [--steady-seconds 20] [--sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appeals_common.amqp_tools import manage_vhost  # noqa: E402
from appeals_common.auth import issue_token  # noqa: E402
from appeals_common.launcher import SuiteProcesses  # noqa: E402
from appeals_common.provisioning import delete_users  # noqa: E402
from bench.scratch import drop_database  # noqa: E402

# A fresh random JWT secret per run: services refuse a short or placeholder one.
SECRET = secrets.token_hex(32)
DEPTS = ("swj", "scjgj", "zjj", "zrzyj", "rsj", "jrb", "czj", "swtcj", "zwfwzx")
TITLES = ("退税办理咨询", "营业执照变更", "施工许可进度", "社保补贴申领", "融资担保需求", "其他诉求")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def as_user(uri: str, user: str, password: str) -> str:
    """``uri`` logged in as a provisioned source system or department."""
    parts = urllib.parse.urlsplit(uri)
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}" \
             f"@{parts.hostname}:{parts.port or 5672}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def appeal(external_id: str, i: int) -> bytes:
    return json.dumps({
        "schema_version": 1, "source_system": "hotline_12345", "external_id": external_id,
        "channel": "hotline_12345", "submitted_at": now_iso(),
        "enterprise": {"name": f"基准测试企业{i}", "uscc": "91110000600037341L",
                       "contact_name": "张三", "contact_phone": "13800138000"},
        "title": TITLES[i % len(TITLES)], "content": "基准测试诉求内容",
    }, ensure_ascii=False).encode()


class Departments(threading.Thread):
    """All departments in one pika consumer: record arrival, sign, respond."""

    def __init__(self, uri: str, dept_uris: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.uri = uri
        self.dept_uris = dept_uris  # each department replies as its own broker user
        self.arrived: dict[str, float] = {}  # external title key -> arrival time (lead)
        self.reg_of: dict[str, str] = {}
        self.responded: list[str] = []
        self.leads: set[str] = set()
        self.lock = threading.Lock()
        self.stop = False

    def run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.uri))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)
        reply_conns = {d: pika.BlockingConnection(pika.URLParameters(u))
                       for d, u in self.dept_uris.items()}
        self.reply_channels = {d: c.channel() for d, c in reply_conns.items()}

        def on_message(ch, method, props, raw):
            msg = json.loads(raw)
            now = time.monotonic()
            dept = msg["dept_code"]
            base = {"schema_version": 1, "assignment_id": msg.get("assignment_id"),
                    "reg_no": msg["reg_no"], "replied_at": now_iso()}
            if msg["kind"] == "assignment":
                if msg["role"] == "lead":
                    with self.lock:
                        self.arrived[msg["reg_no"]] = now
                        self.leads.add(msg["assignment_id"])
                self._reply(ch, dept, "sign", base)
            elif msg["kind"] == "reply_result" and msg["status"] == "accepted":
                # A department answers once its sign is confirmed: replies are handled
                # concurrently, so a respond sent right behind the sign could overtake it.
                if msg["action"] == "sign" and msg["assignment_id"] in self.leads:
                    self._reply(ch, dept, "respond", {
                        **base, "outcome": "solved", "reply": "已办结",
                        "contacted_at": now_iso()})
                elif msg["action"] == "respond":
                    with self.lock:
                        self.responded.append(msg["reg_no"])
            ch.basic_ack(method.delivery_tag)

        for dept in DEPTS:
            ch.basic_consume(f"dispatch.{dept}", on_message)
        while not self.stop:
            conn.process_data_events(time_limit=0.2)
        conn.close()
        for c in reply_conns.values():
            c.close()

    def _reply(self, ch, dept: str, action: str, body: dict) -> None:
        user = pika.URLParameters(self.dept_uris[dept]).credentials.username
        self.reply_channels[dept].basic_publish(
            "appeals.replies", f"dept.{dept}.{action}", json.dumps(body).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 message_id=str(uuid.uuid4()), user_id=user))


class Receipts(threading.Thread):
    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.uri = uri
        self.reg_by_ext: dict[str, str] = {}
        self.stop = False

    def run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.uri))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)

        def on_message(ch, method, props, raw):
            body = json.loads(raw)
            if body.get("reg_no"):
                self.reg_by_ext[body["external_id"]] = body["reg_no"]
            ch.basic_ack(method.delivery_tag)

        ch.basic_consume("receipts.hotline_12345", on_message)
        while not self.stop:
            conn.process_data_events(time_limit=0.2)
        conn.close()


class Publisher:
    def __init__(self, uri: str) -> None:
        self.user = pika.URLParameters(uri).credentials.username  # its user_id
        self.conn = pika.BlockingConnection(pika.URLParameters(uri))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.sent_at: dict[str, float] = {}

    def send(self, i: int) -> str:
        ext = f"bench-{uuid.uuid4().hex}"
        self.sent_at[ext] = time.monotonic()
        self.ch.basic_publish("appeals.inbound", "appeal.submit.hotline_12345", appeal(ext, i),
                              pika.BasicProperties(content_type="application/json",
                                                   delivery_mode=2, message_id=ext,
                                                   user_id=self.user))
        return ext


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def followups(urls: str, reg_nos: list[str], token: str) -> None:
    for reg_no in reg_nos:
        for _ in range(200):  # supervision may not have consumed the response yet
            req = urllib.request.Request(
                f"{urls}/appeals/{reg_no}/followups", method="POST",
                data=json.dumps({"grade": "satisfied", "resolved": True}).encode(),
                headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
                break
            except urllib.error.HTTPError as err:
                if err.code not in (404, 409):
                    raise
                time.sleep(0.05)


def summary(url: str, token: str) -> dict:
    req = urllib.request.Request(f"{url}/reports/summary",
                                 headers={"Authorization": f"Bearer {token}"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def broker_ceiling(uri: str, count: int) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(uri))
    ch = conn.channel()
    ch.confirm_delivery()
    queue = f"bench.raw.{uuid.uuid4().hex[:6]}"
    ch.queue_declare(queue, durable=True)
    body = appeal("raw", 0)
    start = time.monotonic()
    for _ in range(count):
        ch.basic_publish("", queue, body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2))
    elapsed = time.monotonic() - start
    ch.queue_delete(queue)
    conn.close()
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--sqlite", action="store_true", help="SQLite files instead of PostgreSQL")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    vhost = f"appeals-bench-{run}"
    manage_vhost("add", vhost)
    uri = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    tmp = Path(tempfile.mkdtemp(prefix="appeals-bench-"))
    db_url = (f"sqlite:///{tmp}/{{service}}.db" if args.sqlite
              else f"{args.pg}/bench_{run}_{{service}}")
    env = {"APPEALS_AMQP_URI": uri, "APPEALS_DATABASE_URL": db_url,
           "APPEALS_JWT_SECRET": SECRET, "APPEALS_LOG_LEVEL": "WARNING"}
    for i, service in enumerate(("intake", "dispatch", "supervision", "reporting")):
        env[f"APPEALS_{service.upper()}_HTTP_PORT"] = str(18101 + i)
    os.environ.update(env)
    import subprocess

    subprocess.run([sys.executable, "-m", "appeals_common.cli", "topology", "apply"],
                   env={**os.environ, **env}, check=True, capture_output=True)
    # The source system and the departments connect as their own broker users.
    prefix, creds = f"b{run}-", tmp / "credentials.json"
    subprocess.run([sys.executable, "-m", "appeals_common.cli", "provision", "apply",
                    "--vhost", vhost, "--user-prefix", prefix, "--credentials-file", str(creds)],
                   env={**os.environ, **env}, check=True, capture_output=True)
    passwords = json.loads(creds.read_text())
    env["APPEALS_BUS_USER_PREFIX"] = prefix
    os.environ.update(env)
    suite = SuiteProcesses(env=env, log_dir=tmp / "logs")
    suite.start_all(timeout=120)
    staff = issue_token(SECRET, "bench", "bureau_staff")
    departments = Departments(uri, {d: as_user(uri, f"{prefix}dept-{d}",
                                                passwords[f"{prefix}dept-{d}"]) for d in DEPTS})
    receipts = Receipts(uri)
    departments.start()
    receipts.start()
    source = f"{prefix}src-hotline_12345"
    publisher = Publisher(as_user(uri, source, passwords[source]))
    try:
        progress("suite up; warming up")
        # Warm up: connections, pools, first-time imports.
        for i in range(20):
            publisher.send(i)
        wait_for(lambda: len(departments.arrived) >= 20, 60)

        progress(f"warm: {len(departments.arrived)} assigned; steady phase")
        # 1. Latency at a steady offered rate.
        steady = int(args.rate * args.steady_seconds)
        steady_ids = []
        start = time.monotonic()
        for i in range(steady):
            target = start + i / args.rate
            time.sleep(max(0.0, target - time.monotonic()))
            steady_ids.append(publisher.send(i))
        wait_for(lambda: all(receipts.reg_by_ext.get(e) in departments.arrived
                             for e in steady_ids), 120)
        latencies = [departments.arrived[receipts.reg_by_ext[e]] - publisher.sent_at[e]
                     for e in steady_ids
                     if receipts.reg_by_ext.get(e) in departments.arrived]

        progress(f"steady done: {len(latencies)}/{steady} measured; burst phase")
        # 2. Burst: registered -> assigned throughput, then the full cycle.
        closed_before = summary("http://127.0.0.1:18104", staff)["closed"]
        wait_for(lambda: len(departments.responded) >= 20 + steady, 120)
        responded_before = len(departments.responded)
        burst_ids = []
        t0 = time.monotonic()
        for i in range(args.burst):
            burst_ids.append(publisher.send(i))
        t_published = time.monotonic()
        wait_for(lambda: sum(1 for e in burst_ids
                             if receipts.reg_by_ext.get(e) in departments.arrived)
                 >= args.burst, 600)
        burst_regs = [receipts.reg_by_ext[e] for e in burst_ids if e in receipts.reg_by_ext]
        t_assigned = max(departments.arrived[r] for r in burst_regs if r in departments.arrived)
        assigned = sum(1 for r in burst_regs if r in departments.arrived)

        progress(f"burst assigned: {assigned}; waiting for responses")
        wait_for(lambda: len(departments.responded) - responded_before >= args.burst, 600)
        progress("recording follow-ups")
        followups("http://127.0.0.1:18103", burst_regs, staff)
        wait_for(lambda: summary("http://127.0.0.1:18104", staff)["closed"] - closed_before
                 >= args.burst, 600)
        t_closed = time.monotonic()
        closed = summary("http://127.0.0.1:18104", staff)["closed"] - closed_before

        raw = broker_ceiling(uri, 5000)
        assigned_rate = assigned / (t_assigned - t0)
        result = {
            "bench": "e2e", "store": "sqlite" if args.sqlite else "postgresql",
            "burst": args.burst, "assigned": assigned, "closed": closed,
            "publish_seconds": round(t_published - t0, 3),
            "registered_to_assigned_per_s": round(assigned_rate, 1),
            "full_cycle_per_s": round(closed / (t_closed - t0), 1),
            "offered_rate_per_s": args.rate, "latency_samples": len(latencies),
            "latency_ms_p50": round(statistics.median(latencies) * 1000, 1),
            "latency_ms_p95": round(percentile(latencies, 95) * 1000, 1),
            "latency_ms_p99": round(percentile(latencies, 99) * 1000, 1),
            "broker_ceiling_msgs_per_s": round(raw, 1),
            "ratio_to_broker": round(assigned_rate / raw, 3),
        }
        print(json.dumps(result))
    finally:
        departments.stop = receipts.stop = True
        suite.stop_all()
        manage_vhost("delete", vhost)
        delete_users(list(passwords))
        if not args.sqlite:
            for service in ("intake", "dispatch", "supervision", "reporting"):
                drop_database(args.pg, f"bench_{run}_{service}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
