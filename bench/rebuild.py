"""Time reporting's rebuild: archive N events of a realistic mix in a fresh PostgreSQL
database (COPY), then drop the projections and replay the archive as
`appeals reporting rebuild` does. Prints one JSON line:

  {"bench": "rebuild", "events": ..., "appeals": ..., "seconds": ..., "events_per_s": ...}

The mix, per appeal: registration; 5% answered on the spot; dispatch to a lead and, for
40%, a co-unit; signatures (10% missed), reminders, overdue notices and 督办 for some;
returns re-dispatched, extensions; the response and the co-unit's contribution; a
follow-up, 15% unsatisfied (key supervision order, its written feedback, 重办, a second
response and follow-up); the close. Plus class problems, walkthroughs and patrols.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from appeals_common.db import Store  # noqa: E402
from bench.scratch import drop_database  # noqa: E402
from services.reporting import readmodel  # noqa: E402
from services.reporting.models import METADATA  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
DEPTS = ("zjj", "scjgj", "rsj", "swj", "jrb", "czj", "gxj", "kjj", "fgj", "swtcj")
CHANNELS = ("sit_in", "chain_patrol", "hotline_12345", "online", "observation_station")
CHAINS = ("digital_economy", "trade_consumption", "modern_finance", "culture_tourism", None)
CATEGORIES = ("0101", "0102", "0201", "0301", "0402", "0403", "0404", None)
GRADES = ("very_satisfied", "satisfied", "basically_satisfied")


class History:
    """Event envelopes as the services emit them, kept in the order they happened."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: list[tuple[datetime, dict[str, Any]]] = []
        self.appeals = 0

    def emit(self, event_type: str, at: datetime, data: dict[str, Any],
             appeal_id: str | None = None, producer: str = "dispatch") -> None:
        self.rows.append((at, {
            "event_id": str(uuid.uuid4()), "event_type": event_type, "schema_version": 1,
            "occurred_at": at.isoformat(), "producer": producer, "appeal_id": appeal_id,
            "correlation_id": None, "data": data}))

    def appeal(self, start: datetime) -> None:
        rng, emit = self.rng, self.emit
        self.appeals += 1
        appeal_id, reg_no = str(uuid.uuid4()), f"WH-2026-{self.appeals:06d}"
        t = start
        on_spot = rng.random() < 0.05
        emit("appeal.registered", t, {
            "reg_no": reg_no, "source_system": "hotline_12345", "external_id": str(uuid.uuid4()),
            "channel": rng.choice(CHANNELS),
            "enterprise": {"name": f"昆明五华某某{self.appeals}科技有限公司",
                           "uscc": "91110000600037341L", "contact_name": "张三",
                           "contact_phone": "13800138000"},
            "title": "施工许可办理进度慢", "content": "我公司施工许可申请已提交两周，尚无答复。" * 4,
            "category": rng.choice(CATEGORIES), "industry_chain": rng.choice(CHAINS),
            "urgency": "normal", "activity_id": None, "attachments": [],
            "submitted_at": t.isoformat(), "registered_at": t.isoformat(),
            "registered_by": "bench", "resolved_on_spot": on_spot}, appeal_id, "intake")
        if on_spot:
            emit("appeal.resolved_on_spot", t, {"reg_no": reg_no, "answer": "当场答复"},
                 appeal_id, "intake")
            t += timedelta(days=1)
            emit("followup.recorded", t, {"reg_no": reg_no, "grade": "satisfied",
                                          "satisfied": True, "on_time": True}, appeal_id,
                 "supervision")
            emit("appeal.closed", t, {"reg_no": reg_no, "reason": "satisfied_followup",
                                      "on_time": True}, appeal_id, "supervision")
            return
        lead = self.dispatch(appeal_id, reg_no, t := t + timedelta(seconds=1))
        if rng.random() < 0.03:  # returned, accepted, dispatched again
            emit("assignment.returned", t + timedelta(hours=1), {
                "reg_no": reg_no, "assignment_id": lead[0]["assignment_id"], "role": "lead",
                "reason_code": "not_our_duty"}, appeal_id)
            emit("assignment.return_decided", t + timedelta(hours=3), {
                "reg_no": reg_no, "assignment_id": lead[0]["assignment_id"], "role": "lead",
                "accepted": True}, appeal_id)
            for co in lead[1:]:
                emit("assignment.reassigned", t + timedelta(hours=3), {
                    "reg_no": reg_no, "assignment_id": co["assignment_id"]}, appeal_id)
            lead = self.dispatch(appeal_id, reg_no, t := t + timedelta(hours=3, seconds=1))
        for unit in lead:
            if rng.random() < 0.9:
                late = rng.random() < 0.1
                at = t + timedelta(hours=30 if late else rng.randrange(1, 8))
                emit("assignment.signed", at, {
                    "reg_no": reg_no, "assignment_id": unit["assignment_id"],
                    "dept_code": unit["dept_code"], "role": unit["role"],
                    "signed_at": at.isoformat(), "on_time": not late}, appeal_id)
            else:
                emit("appeal.overdue", t + timedelta(days=2), {
                    "reg_no": reg_no, "assignment_id": unit["assignment_id"],
                    "dept_code": unit["dept_code"], "deadline": "sign",
                    "due_at": unit["sign_by"]}, appeal_id, "supervision")
                emit("appeal.supervised", t + timedelta(days=2), {
                    "reg_no": reg_no, "assignment_id": unit["assignment_id"]}, appeal_id,
                    "supervision")
        main = lead[0]
        if rng.random() < 0.1:
            emit("appeal.reminded", t + timedelta(days=4), {
                "reg_no": reg_no, "assignment_id": main["assignment_id"]}, appeal_id,
                "supervision")
        if rng.random() < 0.08:
            emit("extension.requested", t + timedelta(days=3), {
                "reg_no": reg_no, "assignment_id": main["assignment_id"]}, appeal_id)
            emit("extension.decided", t + timedelta(days=3, hours=2), {
                "reg_no": reg_no, "assignment_id": main["assignment_id"], "approved": True,
                "respond_by": (t + timedelta(days=15)).isoformat()}, appeal_id)
        t += timedelta(days=rng.randrange(1, 7))
        self.respond(appeal_id, reg_no, lead, t)
        t += timedelta(days=1)
        if rng.random() < 0.15:
            emit("followup.recorded", t, {"reg_no": reg_no, "grade": "unsatisfied",
                                          "on_time": True}, appeal_id, "supervision")
            order_no = f"ZD-{reg_no}-{main['dept_code']}-{t:%Y%m%d%H%M%S}"
            emit("supervision_order.issued", t, {
                "reg_no": reg_no, "order_no": order_no, "dept_code": main["dept_code"],
                "assignment_id": main["assignment_id"], "grade": "unsatisfied",
                "feedback_required": True, "feedback_by": (t + timedelta(days=7)).isoformat(),
                "respond_by": (t + timedelta(days=7)).isoformat()}, appeal_id, "supervision")
            emit("appeal.reopened", t, {"reg_no": reg_no, "reason": "unsatisfied_followup",
                                        "respond_by": (t + timedelta(days=7)).isoformat()},
                 appeal_id, "supervision")
            t += timedelta(days=2)
            emit("supervision_order.answered", t, {
                "reg_no": reg_no, "order_no": order_no, "assignment_id": main["assignment_id"],
                "dept_code": main["dept_code"], "feedback": "已重新处置",
                "answered_at": t.isoformat(), "on_time": True}, appeal_id)
            self.respond(appeal_id, reg_no, lead[:1], t)
            t += timedelta(days=1)
        emit("followup.recorded", t, {"reg_no": reg_no, "grade": rng.choice(GRADES),
                                      "on_time": True}, appeal_id, "supervision")
        emit("appeal.closed", t, {"reg_no": reg_no, "reason": "satisfied_followup",
                                  "on_time": rng.random() < 0.9}, appeal_id, "supervision")

    def dispatch(self, appeal_id: str, reg_no: str, t: datetime) -> list[dict[str, Any]]:
        depts = self.rng.sample(DEPTS, 2)
        units = [("lead", depts[0])] + ([("co", depts[1])] if self.rng.random() < 0.4 else [])
        assignments = [{
            "assignment_id": str(uuid.uuid4()), "dept_code": dept, "role": role,
            "state": "assigned", "assigned_at": t.isoformat(),
            "sign_by": (t + timedelta(days=1)).isoformat(),
            "return_by": (t + timedelta(days=2)).isoformat(),
            "respond_by": (t + timedelta(days=7)).isoformat()} for role, dept in units]
        self.emit("appeal.dispatched", t, {
            "reg_no": reg_no, "units": {"lead": depts[0], "co": [d for r, d in units if r == "co"]},
            "rule": "bench", "assignments": assignments, "deadlines_provisional": False},
            appeal_id)
        return assignments

    def respond(self, appeal_id: str, reg_no: str, units: list[dict[str, Any]],
                t: datetime) -> None:
        for unit in units:
            self.emit("appeal.responded" if unit["role"] == "lead" else "assignment.contributed",
                      t, {"reg_no": reg_no, "assignment_id": unit["assignment_id"],
                          "dept_code": unit["dept_code"], "role": unit["role"],
                          "outcome": self.rng.choice(("solved", "solved", "explained")),
                          "reply": "已办理", "responded_at": t.isoformat(),
                          "respond_by": unit["respond_by"], "on_time": True}, appeal_id)

    def extras(self, start: datetime, n: int) -> None:
        """Class problems, walkthroughs, patrols: a few of each."""
        for i in range(n):
            t = start + timedelta(days=i)
            view = {"class_id": f"LT-2026-{i:04d}", "state": "suggested", "reg_nos": ["WH-1"],
                    "keywords": ["用电"], "industry_chain": "digital_economy"}
            self.emit("class_problem.suggested", t, view, producer="supervision")
            self.emit("class_problem.confirmed", t + timedelta(days=1),
                      {**view, "state": "confirmed", "lead_entity": "fgj",
                       "deadline": (t + timedelta(days=30)).isoformat()}, producer="supervision")
            wid = f"WT-{i}"
            self.emit("walkthrough.recorded", t, {
                "walkthrough_id": wid, "service_item": "企业开办", "mode": "in_person",
                "lead_unit": "zwfwzx", "walked_on": t.date().isoformat(),
                "scores": {"accuracy": 4, "smoothness": 4, "proofs": 4, "experience": 4,
                           "conduct": 4},
                "items": [{"item_id": f"{wid}-1", "list": "problem", "description": "d",
                           "owner": "zjj", "due_at": (t + timedelta(days=10)).isoformat()}]},
                producer="supervision")
            self.emit("activity.registered", t, {
                "activity_id": f"patrol-{i}", "kind": "chain_patrol",
                "held_on": t.date().isoformat(), "title": "巡诊", "lead_unit": "gxj",
                "industry_chain": "digital_economy"}, producer="intake")


def build(n_events: int, seed: int) -> History:
    rng = random.Random(seed)
    history = History(rng)
    start = datetime(2026, 1, 5, 9, tzinfo=TZ)
    history.extras(start, 50)
    while len(history.rows) < n_events:
        history.appeal(start + timedelta(minutes=rng.randrange(0, 300 * 24 * 60)))
    history.rows.sort(key=lambda r: r[0])
    del history.rows[n_events:]
    return history


def archive(engine: Any, history: History) -> None:
    """COPY the envelopes into event_archive, in the order they happened."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for at, envelope in history.rows:
        writer.writerow([envelope["event_id"], envelope["event_type"],
                         at.astimezone(UTC).isoformat(), envelope["producer"],
                         envelope["appeal_id"] or "",
                         json.dumps(envelope, ensure_ascii=False)])
    buffer.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.copy_expert("COPY event_archive (event_id, event_type, occurred_at, producer, "
                            "appeal_id, body) FROM STDIN WITH (FORMAT csv, NULL '')", buffer)
        raw.commit()
    finally:
        raw.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    name = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
    store = Store(f"{args.pg}/{name}", METADATA, producer="reporting", pool_size=1)
    try:
        store.create_schema()
        history = build(args.events, args.seed)
        archive(store.engine, history)
        result = readmodel.rebuild(store.engine, TZ, batch=args.batch)
        assert result is not None
        print(json.dumps({"bench": "rebuild", "events": result.events,
                          "appeals": history.appeals, "skipped": result.skipped,
                          "seconds": round(result.seconds, 2),
                          "events_per_s": result.events_per_s}))
    finally:
        store.dispose()
        if not args.keep:
            drop_database(args.pg, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
