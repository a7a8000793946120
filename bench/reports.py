"""Time every report query on a read model of a million appeals.

Loads N appeal facts (default 1,000,000, registered 2023-01-01 to "now", 2026-12-10
15:00 Asia/Shanghai) with their assignment and follow-up facts into a fresh PostgreSQL
database by COPY, with the daily roll-up and metric counters the projection would have
kept (computed by the projection's own `contributions`), then runs each report as the
HTTP route does (the use case, without HTTP) once to warm up and `--runs` times more,
printing one JSON line per query:

  {"bench": "reports", "appeals": 1000000, "query": "...", "ms_p50": ..., "ms_max": ...}

Most appeals are closed; those of the last few weeks are at every stage, some past
their deadlines (the overdue list has a few thousand duties).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, text  # noqa: E402

from appeals_common.clock import FixedClock  # noqa: E402
from appeals_common.db import Store  # noqa: E402
from appeals_common.nameko_ext import ServiceRuntime  # noqa: E402
from appeals_common.reference import CHANNELS, SATISFIED_GRADES  # noqa: E402
from appeals_common.settings import Settings  # noqa: E402
from bench.scratch import drop_database  # noqa: E402
from services.reporting import usecases  # noqa: E402
from services.reporting.models import (  # noqa: E402
    APPEAL_FACTS,
    ASSIGNMENT_FACTS,
    COUNTERS,
    FOLLOWUP_FACTS,
    METADATA,
    ROLLUP,
)
from services.reporting.projection import contributions, new_row  # noqa: E402
from services.reporting.usecases import ReportingContext  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 10, 15, 0, tzinfo=TZ)
START = datetime(2023, 1, 1, tzinfo=TZ)
GRADES = (("very_satisfied", 30), ("satisfied", 40), ("basically_satisfied", 18),
          ("unsatisfied", 9), ("very_unsatisfied", 3))
NULL = r"\N"


class Loader:
    """Fact rows as the projection writes them, and the aggregates they contribute."""

    def __init__(self, ctx: ReportingContext, seed: int) -> None:
        self.rng = random.Random(seed)
        self.depts = sorted(ctx.departments)
        self.chains = [*sorted(ctx.chains), None]
        self.categories = [c for c in sorted(ctx.categories) if len(c) == 4] + [None]
        self.channels = sorted(CHANNELS)
        self.grades = [g for g, _ in GRADES]
        self.weights = [w for _, w in GRADES]
        self.cells: dict[str, dict[tuple, list[float]]] = {"rollup": {}, "counters": {}}
        self.span = (NOW - START).total_seconds()

    def contribute(self, table: str, row: dict[str, Any]) -> None:
        for agg, key, n, value in contributions(table, row, TZ):
            cell = self.cells[agg].get(key)
            if cell is None:
                self.cells[agg][key] = [n, value]
            else:
                cell[0] += n
                cell[1] += value

    def appeal(self, i: int) -> tuple[dict, list[dict], list[dict]]:
        rng = self.rng
        registered = START + timedelta(seconds=rng.random() * self.span)
        a = new_row("appeal", f"{i:032x}")
        a.update(reg_no=f"WH-{registered.year}-{i:07d}", channel=rng.choice(self.channels),
                 source_system="bench", category=rng.choice(self.categories),
                 industry_chain=rng.choice(self.chains), urgency="normal",
                 enterprise_name=f"昆明五华某某{i}有限公司", contact_phone="138****8000",
                 title="施工许可办理进度慢", state="registered", state_at=registered,
                 classified_at=registered, registered_at=registered)
        age = NOW - registered
        if rng.random() < 0.05:  # answered on the spot
            a.update(state="resolved_on_spot", resolved_on_spot_at=registered)
            if age > timedelta(days=2):
                grade = "satisfied"
                f = self._followup(a, i, 0, registered + timedelta(days=1), grade, None)
                a.update(state="closed", closed_at=f["recorded_at"], closed_on_time=True,
                         close_reason="satisfied_followup", followups=1, last_grade=grade,
                         last_followup_at=f["recorded_at"])
                return a, [], [f]
            return a, [], []
        assigned = registered + timedelta(minutes=1)
        units = [("lead", rng.choice(self.depts))]
        if rng.random() < 0.4:
            units.append(("co", rng.choice(self.depts)))
        assignments = []
        for n, (role, dept) in enumerate(units):
            x = new_row("assignment", f"{i:030x}{n:02d}")
            x.update(appeal_id=a["appeal_id"], reg_no=a["reg_no"], dept_code=dept, role=role,
                     state="assigned", state_at=assigned, assigned_at=assigned,
                     sign_by=assigned + timedelta(days=1), respond_by=assigned + timedelta(days=7),
                     respond_by_at=assigned, channel=a["channel"], category=a["category"],
                     industry_chain=a["industry_chain"])
            # Recent assignments go unsigned now and then; old ones very rarely stay so.
            if rng.random() < (0.95 if age < timedelta(days=30) else 0.998):
                signed = assigned + timedelta(hours=rng.choice((1, 3, 6, 20, 30)))
                if signed < NOW:
                    x.update(state="signed", state_at=signed, signed_at=signed,
                             signed_on_time=signed <= x["sign_by"])
            assignments.append(x)
        lead = assignments[0]
        a.update(state="dispatched", state_at=assigned, dispatched_at=assigned,
                 lead_dept=lead["dept_code"], lead_assignment_id=lead["assignment_id"],
                 sign_by=lead["sign_by"], signed_at=lead["signed_at"],
                 signed_on_time=lead["signed_on_time"], respond_by=lead["respond_by"])
        if lead["signed_at"] is None:
            return a, assignments, []
        a.update(state="in_progress", state_at=lead["signed_at"])
        responded = assigned + timedelta(days=rng.uniform(1, 10))
        if responded > NOW:
            return a, assignments, []
        self._respond(a, lead, responded)
        followups = []
        asked = responded + timedelta(days=1)
        if asked > NOW or rng.random() < 0.08:
            return a, assignments, followups
        grade = rng.choices(self.grades, self.weights)[0]
        followups.append(self._followup(a, i, 0, asked, grade, lead["dept_code"]))
        if grade not in SATISFIED_GRADES:  # 重办 and a second round
            a.update(state="reopened", state_at=asked, reopen_count=1, key_orders=1)
            lead.update(state="signed", state_at=asked, respond_by=asked + timedelta(days=7),
                        respond_by_at=asked)
            again = asked + timedelta(days=rng.uniform(1, 6))
            if again > NOW:
                a["respond_by"] = lead["respond_by"]
                return a, assignments, followups
            self._respond(a, lead, again)
            asked = again + timedelta(days=1)
            if asked > NOW:
                return a, assignments, followups
            grade = "satisfied"
            followups.append(self._followup(a, i, 1, asked, grade, lead["dept_code"]))
        a.update(state="closed", state_at=asked, closed_at=asked,
                 closed_on_time=a["responded_on_time"], close_reason="satisfied_followup",
                 followups=len(followups), last_grade=grade, last_followup_at=asked)
        for x in assignments:
            x["appeal_closed"] = True
        return a, assignments, followups

    def _respond(self, a: dict, lead: dict, at: datetime) -> None:
        outcome = self.rng.choices(("solved", "explained", "not_solvable"), (70, 25, 5))[0]
        on_time = at <= lead["respond_by"]
        lead.update(state="responded", state_at=at, responded_at=at, responded_on_time=on_time,
                    outcome=outcome)
        a.update(state="responded", state_at=at, responded_at=at, responded_on_time=on_time,
                 outcome=outcome, first_responded_at=a["first_responded_at"] or at,
                 respond_by=lead["respond_by"])

    def _followup(self, a: dict, i: int, k: int, at: datetime, grade: str,
                  dept: str | None) -> dict:
        f = new_row("followup", f"f{i}-{k}")
        f.update(appeal_id=a["appeal_id"], reg_no=a["reg_no"], recorded_at=at, grade=grade,
                 satisfied=grade in SATISFIED_GRADES, on_time=True, dept_code=dept,
                 channel=a["channel"], category=a["category"], industry_chain=a["industry_chain"])
        return f


def copy_rows(engine: Any, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    names = [c.name for c in table.columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    count = 0
    for row in rows:
        writer.writerow([NULL if row[n] is None else
                         row[n].astimezone(UTC).isoformat() if isinstance(row[n], datetime)
                         else row[n] for n in names])
        count += 1
    buffer.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.copy_expert(f"COPY {table.name} ({', '.join(names)}) FROM STDIN WITH "
                            f"(FORMAT csv, NULL '{NULL}')", buffer)
        raw.commit()
    finally:
        raw.close()
    return count


def load(store: Store, ctx: ReportingContext, appeals: int, seed: int) -> dict[str, int]:
    loader = Loader(ctx, seed)
    counts = {"appeal_facts": 0, "assignment_facts": 0, "followup_facts": 0}
    chunk = 100_000
    for start in range(0, appeals, chunk):
        a_rows, x_rows, f_rows = [], [], []
        for i in range(start, min(start + chunk, appeals)):
            a, xs, fs = loader.appeal(i)
            a_rows.append(a)
            x_rows += xs
            f_rows += fs
            loader.contribute("appeal", a)
            for x in xs:
                loader.contribute("assignment", x)
            for f in fs:
                loader.contribute("followup", f)
        counts["appeal_facts"] += copy_rows(store.engine, APPEAL_FACTS, a_rows)
        counts["assignment_facts"] += copy_rows(store.engine, ASSIGNMENT_FACTS, x_rows)
        counts["followup_facts"] += copy_rows(store.engine, FOLLOWUP_FACTS, f_rows)
        print(f"loaded {min(start + chunk, appeals)} appeals", file=sys.stderr)
    keys = {"rollup": ("measure", "dim", "day", "key", "n", "hit"),
            "counters": ("name", "label", "n", "total")}
    for agg, table in (("rollup", ROLLUP), ("counters", COUNTERS)):
        counts[table.name] = copy_rows(store.engine, table, (
            dict(zip(keys[agg], (*key, int(v[0]), v[1] if agg == "counters" else int(v[1])),
                     strict=True))
            for key, v in loader.cells[agg].items() if v[0] or v[1]))
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return counts


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    fn()  # warm up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--appeals", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    name = f"bench_reports_{uuid.uuid4().hex[:8]}"
    settings = Settings()
    ctx = ReportingContext.load(settings)
    store = Store(f"{args.pg}/{name}", METADATA, producer="reporting", pool_size=2)
    try:
        store.create_schema()
        started = time.perf_counter()
        counts = load(store, ctx, args.appeals, args.seed)
        print(json.dumps({"bench": "reports-load", "appeals": args.appeals, **counts,
                          "seconds": round(time.perf_counter() - started, 1)}))
        runtime = ServiceRuntime("reporting", settings, store, FixedClock(NOW))
        queries: list[tuple[str, Callable[[], Any]]] = []
        periods = {"month": {"period": "month", "year": "2026", "month": "11"},
                   "quarter": {"period": "quarter", "year": "2026", "quarter": "4"},
                   "year": {"period": "year", "year": "2026"},
                   "custom 4y": {"from": "2023-01-01", "to": "2026-12-31"}}
        for label, params in periods.items():
            for group_by in ("none", "department", "channel", "industry_chain", "category",
                             "month", "quarter"):
                queries.append((f"rates period={label} group_by={group_by}",
                                lambda p=params, g=group_by: usecases.rates(
                                    runtime, ctx, {**p, "group_by": g})))
        queries += [
            ("overdue limit=100", lambda: usecases.overdue(runtime, ctx, {})),
            ("overdue dept=zjj kind=respond",
             lambda: usecases.overdue(runtime, ctx, {"dept": "zjj", "kind": "respond"})),
            ("summary all", lambda: usecases.summary(runtime, ctx, None, None)),
            ("summary 2026 (whole days)", lambda: usecases.summary(
                runtime, ctx, datetime(2026, 1, 1, tzinfo=TZ), datetime(2027, 1, 1, tzinfo=TZ))),
            ("summary 2026 from 12:00 (from the facts)", lambda: usecases.summary(
                runtime, ctx, datetime(2026, 1, 1, 12, tzinfo=TZ),
                datetime(2027, 1, 1, tzinfo=TZ))),
            ("metrics snapshot", lambda: usecases.metric_snapshot(runtime, ctx)),
            ("activity-compliance 2026",
             lambda: usecases.activity_compliance(runtime, ctx, {"year": "2026"})),
        ]
        for label, fn in queries:
            p50, worst = timed(fn, args.runs)
            print(json.dumps({"bench": "reports", "appeals": args.appeals, "query": label,
                              "ms_p50": round(p50, 1), "ms_max": round(worst, 1)}), flush=True)
    finally:
        store.dispose()
        if not args.keep:
            drop_database(args.pg, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
