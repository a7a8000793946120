"""Reporting's own tables: the event archive (append-only, the source of truth) and the
read model projected from it (dropped and rebuilt by `appeals reporting rebuild`).

Core tables, not ORM classes: the projection reads and writes rows in batches
(services/reporting/readmodel.py), which is what makes a replay fast.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from appeals_common.db import UtcDateTime, reliability_tables
from appeals_common.lifecycle import OPEN_STATES

METADATA = MetaData()

# Bump when a projection table or what the projection writes changes: the service
# rebuilds the read model from the archive on its next start.
PROJECTION_VERSION = 2

# --- not projections: kept across rebuilds ---------------------------------------------

EVENT_ARCHIVE = Table(
    "event_archive", METADATA,
    # The order events were applied in live; a rebuild replays in this order, so each
    # event finds what it found the first time (see readmodel.archive_and_project).
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("producer", String(32), nullable=False),
    Column("appeal_id", String(36)),
    Column("body", Text, nullable=False),
    Index("event_archive_appeal", "appeal_id"),
)

META = Table(
    "reporting_meta", METADATA,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)

OUTBOX, INBOX = reliability_tables(METADATA)

# --- projections --------------------------------------------------------------------

APPEAL_FACTS = Table(
    "appeal_facts", METADATA,
    Column("appeal_id", String(36), primary_key=True),
    Column("reg_no", String(32), nullable=False, unique=True),
    Column("channel", String(32), nullable=False),
    Column("source_system", String(64)),
    Column("category", String(64)),
    Column("industry_chain", String(64)),
    Column("urgency", String(16)),
    Column("enterprise_name", String(200)),
    Column("contact_phone", String(24)),  # masked (138****8000): never the number itself
    Column("title", String(200)),
    Column("activity_id", String(80)),
    Column("state", String(24), nullable=False),
    Column("state_at", UtcDateTime, nullable=False),
    Column("classified_at", UtcDateTime),  # of the category/chain in force
    Column("registered_at", UtcDateTime, nullable=False),
    Column("resolved_on_spot_at", UtcDateTime),
    Column("dispatched_at", UtcDateTime),
    Column("lead_dept", String(48)),
    Column("lead_assignment_id", String(36)),
    Column("sign_by", UtcDateTime),
    Column("signed_at", UtcDateTime),
    Column("signed_on_time", Boolean),
    Column("respond_by", UtcDateTime),
    Column("first_responded_at", UtcDateTime),
    Column("responded_at", UtcDateTime),
    Column("responded_on_time", Boolean),
    Column("outcome", String(24)),
    Column("followups", Integer, nullable=False, default=0),
    Column("last_grade", String(24)),
    Column("last_followup_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("closed_on_time", Boolean),
    Column("close_reason", String(40)),
    Column("withdrawn_at", UtcDateTime),
    Column("reopen_count", Integer, nullable=False, default=0),
    # Supervision said a deadline was missed (appeal.overdue) and no response, close or
    # withdrawal came after: overdue_since is the earliest missed deadline of the spell.
    Column("overdue", Boolean, nullable=False, default=False),
    Column("overdue_since", UtcDateTime),
    Column("overdue_noticed_at", UtcDateTime),
    Column("overdue_cleared_at", UtcDateTime),
    Column("key_orders", Integer, nullable=False, default=0),
    Column("class_id", String(40)),
)
# Open appeals only: appeals_open reads this at every scrape.
Index("appeal_facts_open", APPEAL_FACTS.c.state,
      postgresql_where=APPEAL_FACTS.c.state.in_(sorted(OPEN_STATES)),
      sqlite_where=APPEAL_FACTS.c.state.in_(sorted(OPEN_STATES)))
Index("appeal_facts_registered", APPEAL_FACTS.c.registered_at)
Index("appeal_facts_activity", APPEAL_FACTS.c.activity_id)

ASSIGNMENT_FACTS = Table(
    "assignment_facts", METADATA,
    Column("assignment_id", String(36), primary_key=True),
    Column("appeal_id", String(36), nullable=False),
    Column("reg_no", String(32), nullable=False),
    Column("dept_code", String(48), nullable=False),
    Column("role", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_at", UtcDateTime, nullable=False),  # of the event that set the state
    Column("assigned_at", UtcDateTime, nullable=False),
    Column("sign_by", UtcDateTime, nullable=False),
    Column("signed_at", UtcDateTime),  # the first signature
    Column("signed_on_time", Boolean),
    Column("respond_by", UtcDateTime),
    Column("respond_by_at", UtcDateTime),  # of the event that set respond_by
    Column("responded_at", UtcDateTime),  # the latest response
    Column("responded_on_time", Boolean),
    Column("outcome", String(24)),
    Column("returned_at", UtcDateTime),  # the latest return
    Column("return_rejected_at", UtcDateTime),  # the latest return the bureau rejected
    Column("withdrawn_at", UtcDateTime),
    # The appeal was closed or withdrawn: whatever the unit still owed is moot.
    Column("appeal_closed", Boolean, nullable=False, default=False),
    # The appeal's classification, copied so rates by channel/chain/category need no join.
    Column("channel", String(32)),
    Column("category", String(64)),
    Column("industry_chain", String(64)),
    Index("assignment_facts_appeal", "appeal_id"),
    Index("assignment_facts_sign_by", "sign_by"),
)
_A = ASSIGNMENT_FACTS.c
# Open duties (the overdue list, appeals_overdue): small partial indexes, cheap at any size.
Index("assignment_facts_open_sign", _A.dept_code, _A.sign_by,
      postgresql_where=(_A.state == "assigned") & (_A.appeal_closed == false()),
      sqlite_where=(_A.state == "assigned") & (_A.appeal_closed == false()))
Index("assignment_facts_open_respond", _A.dept_code, _A.respond_by,
      postgresql_where=(_A.role == "lead") & _A.state.in_(["assigned", "signed"])
      & (_A.appeal_closed == false()),
      sqlite_where=(_A.role == "lead") & _A.state.in_(["assigned", "signed"])
      & (_A.appeal_closed == false()))

FOLLOWUP_FACTS = Table(
    "followup_facts", METADATA,
    Column("followup_id", String(64), primary_key=True),  # the event id
    Column("appeal_id", String(36), nullable=False),
    Column("reg_no", String(32), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("grade", String(24), nullable=False),
    Column("satisfied", Boolean, nullable=False),
    Column("on_time", Boolean),
    Column("dept_code", String(48)),  # the lead unit when the enterprise was asked
    Column("channel", String(32)),
    Column("category", String(64)),
    Column("industry_chain", String(64)),
    Index("followup_facts_appeal", "appeal_id"),
)

CLASS_PROBLEM_FACTS = Table(
    "class_problem_facts", METADATA,
    Column("class_id", String(40), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("state_at", UtcDateTime, nullable=False),
    Column("industry_chain", String(64)),
    Column("category", String(64)),
    Column("keywords", Text, nullable=False, default="[]"),  # JSON
    Column("score", Float),
    Column("reg_nos", Text, nullable=False, default="[]"),  # JSON
    Column("members", Integer, nullable=False, default=0),
    Column("lead_entity", String(48)),
    Column("units", Text, nullable=False, default="[]"),  # JSON
    Column("deadline", UtcDateTime),
    Column("measures", Text),
    Column("promote", Boolean),
    Column("note", Text),
    Column("suggested_at", UtcDateTime),
    Column("confirmed_at", UtcDateTime),
    Column("resolved_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("dismissed_at", UtcDateTime),
)

ORDER_FACTS = Table(
    "supervision_order_facts", METADATA,
    Column("order_no", String(120), primary_key=True),
    Column("appeal_id", String(36)),  # null for an order about a class problem or activity
    Column("reg_no", String(40)),
    Column("assignment_id", String(80)),
    Column("dept_code", String(48)),
    Column("cause", String(40)),
    Column("issued_at", UtcDateTime),
    Column("reasons", Text),
    Column("feedback_required", Boolean, nullable=False, default=True),
    Column("feedback_by", UtcDateTime),
    Column("answered_at", UtcDateTime),
    Column("feedback", Text),
    Column("answered_on_time", Boolean),
)
Index("supervision_order_facts_open", ORDER_FACTS.c.dept_code, ORDER_FACTS.c.feedback_by,
      postgresql_where=ORDER_FACTS.c.answered_at.is_(None),
      sqlite_where=ORDER_FACTS.c.answered_at.is_(None))

WALKTHROUGH_FACTS = Table(
    "walkthrough_facts", METADATA,
    Column("walkthrough_id", String(40), primary_key=True),
    Column("service_item", String(200)),
    Column("mode", String(16)),
    Column("lead_unit", String(48)),
    Column("walked_on", Date),
    Column("accuracy", Integer),
    Column("smoothness", Integer),
    Column("proofs", Integer),
    Column("experience", Integer),
    Column("conduct", Integer),
    Column("summary", Text),
    Column("recorded_at", UtcDateTime),
)

WALKTHROUGH_ITEM_FACTS = Table(
    "walkthrough_item_facts", METADATA,
    Column("item_id", String(40), primary_key=True),
    Column("walkthrough_id", String(40), nullable=False),
    Column("list", String(16), nullable=False),
    Column("description", Text),
    Column("owner", String(48)),
    Column("due_at", UtcDateTime),
    Column("state", String(8), nullable=False),
    Column("closed_at", UtcDateTime),
    Column("on_time", Boolean),
    Column("resolution", Text),
    Index("walkthrough_item_facts_walkthrough", "walkthrough_id"),
)

ACTIVITY_FACTS = Table(
    "activity_facts", METADATA,
    Column("activity_id", String(80), primary_key=True),
    Column("kind", String(16)),
    Column("held_on", Date),
    Column("title", String(200)),
    Column("lead_unit", String(48)),
    Column("industry_chain", String(64)),
    Column("registered_at", UtcDateTime),
    Column("plan_due_at", UtcDateTime),
    Column("plan_submitted_at", UtcDateTime),
    Column("plan_on_time", Boolean),
    Column("plan_summary", Text),
    Column("report_due_at", UtcDateTime),
    Column("report_submitted_at", UtcDateTime),
    Column("report_on_time", Boolean),
    Column("policies_delivered", Integer),
    Column("enterprises_served", Integer),
    Column("class_problems", Text),  # JSON list of str
    Column("report_summary", Text),
    Column("service_items", Text),  # JSON, contact phones masked before they are stored
)

# Pre-aggregated per local day and one dimension, kept by the projection as it applies
# events: a rate over a year sums a few thousand of these rows instead of a million facts.
ROLLUP = Table(
    "daily_rollup", METADATA,
    Column("measure", String(24), primary_key=True),
    Column("dim", String(16), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("key", String(80), primary_key=True),
    Column("n", BigInteger, nullable=False, default=0),
    Column("hit", BigInteger, nullable=False, default=0),
)

# Running totals behind the Prometheus counters and histogram (O(1) to scrape).
COUNTERS = Table(
    "metric_counters", METADATA,
    Column("name", String(32), primary_key=True),
    Column("label", String(64), primary_key=True),
    Column("n", BigInteger, nullable=False, default=0),
    Column("total", Float, nullable=False, default=0.0),
)

# table name in the projection -> its Table, in the order rows are written and locked.
PROJECTION_TABLES: dict[str, Table] = {
    "appeal": APPEAL_FACTS,
    "assignment": ASSIGNMENT_FACTS,
    "followup": FOLLOWUP_FACTS,
    "class_problem": CLASS_PROBLEM_FACTS,
    "order": ORDER_FACTS,
    "walkthrough": WALKTHROUGH_FACTS,
    "item": WALKTHROUGH_ITEM_FACTS,
    "activity": ACTIVITY_FACTS,
}
AGGREGATE_TABLES: dict[str, Table] = {"rollup": ROLLUP, "counters": COUNTERS}
REBUILT_TABLES: list[Table] = [*PROJECTION_TABLES.values(), *AGGREGATE_TABLES.values()]
