"""Supervision's own tables: its view of each appeal's clock and the follow-ups."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Integer, MetaData, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from appeals_common.db import UtcDateTime, reliability_tables


class Base(DeclarativeBase):
    metadata = MetaData()


class SupervisedAppeal(Base):
    __tablename__ = "appeals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reg_no: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    state_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lead_dept: Mapped[str | None] = mapped_column(String(48))
    lead_assignment_id: Mapped[str | None] = mapped_column(String(36))
    respond_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(24))
    followup_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # What 类题破解 compares: the words and the classification.
    registered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(64))
    industry_chain: Mapped[str | None] = mapped_column(String(64))


class ClassProblem(Base):
    """类题破解: similar appeals of one chain or field, solved as one class."""

    __tablename__ = "class_problems"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # suggested / confirmed / resolved / closed, or dismissed
    state: Mapped[str] = mapped_column(String(16), index=True)
    industry_chain: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(64))
    keywords: Mapped[str] = mapped_column(Text, default="[]")
    score: Mapped[float] = mapped_column()
    suggested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lead_entity: Mapped[str | None] = mapped_column(String(48))
    units: Mapped[str] = mapped_column(Text, default="[]")
    deadline: Mapped[datetime | None] = mapped_column(UtcDateTime)
    measures: Mapped[str | None] = mapped_column(Text)
    promote: Mapped[bool | None] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ClassIdCounter(Base):
    """Numbers classes per year; its row lock also makes detection runs take turns, so two
    replicas never suggest the same cluster twice."""

    __tablename__ = "class_id_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class ClassProblemMember(Base):
    __tablename__ = "class_problem_members"

    class_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    appeal_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
    reg_no: Mapped[str] = mapped_column(String(32))


class Followup(Base):
    """回访 records; append-only."""

    __tablename__ = "followups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    appeal_id: Mapped[str] = mapped_column(String(36), index=True)
    grade: Mapped[str] = mapped_column(String(24))
    resolved: Mapped[bool] = mapped_column(Boolean)
    comments: Mapped[str] = mapped_column(Text)
    contact_attempts: Mapped[int] = mapped_column(Integer)
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Clock(Base):
    """A deadline a unit must meet (sign-by, respond-by) and the notices sent about it."""

    __tablename__ = "clocks"

    # duty id + kind; a duty is an assignment, or a class problem, activity, list item or
    # key order (then appeal_id and reg_no hold that thing's id).
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    appeal_id: Mapped[str] = mapped_column(String(80), index=True)
    reg_no: Mapped[str] = mapped_column(String(80))
    assignment_id: Mapped[str] = mapped_column(String(80), index=True)
    dept_code: Mapped[str] = mapped_column(String(48))
    kind: Mapped[str] = mapped_column(String(16))  # see clocks.CLOCK_KINDS
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # open / met / cancelled
    met_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminder_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    notice_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    order_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A deadline supervision counted itself (key order, patrol plan/report, yearly patrol):
    # from when and how many working days, and whether a year without official data was
    # counted over, so `appeals calendar recompute` can count it again.
    basis_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    basis_days: Mapped[int | None] = mapped_column(Integer)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class KeyOrder(Base):
    """《重点督办单》: issued after an unsatisfied follow-up or 5 working days overdue;
    the unit owes written feedback (a `feedback` reply) by feedback_by."""

    __tablename__ = "key_orders"

    order_no: Mapped[str] = mapped_column(String(80), primary_key=True)
    appeal_id: Mapped[str | None] = mapped_column(String(40), index=True)
    reg_no: Mapped[str] = mapped_column(String(48))
    assignment_id: Mapped[str] = mapped_column(String(48))
    dept_code: Mapped[str] = mapped_column(String(48), index=True)
    cause: Mapped[str] = mapped_column(String(24))  # unsatisfied_followup / overdue_<deadline>
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    feedback_by: Mapped[datetime] = mapped_column(UtcDateTime)
    feedback: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Walkthrough(Base):
    """我陪群众走流程: staff walked one service process in one of the 四变 modes."""

    __tablename__ = "walkthroughs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service_item: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))
    lead_unit: Mapped[str] = mapped_column(String(48))
    walked_on: Mapped[date] = mapped_column(Date, index=True)
    scores: Mapped[str] = mapped_column(Text)  # JSON {five-check code: 1..5}
    summary: Mapped[str] = mapped_column(Text, default="")
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ListItem(Base):
    """One entry of the problem / demand / optimization list, closed out (销号) on its own."""

    __tablename__ = "list_items"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    walkthrough_id: Mapped[str] = mapped_column(String(40), index=True)
    list: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(48), index=True)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(8), index=True)  # open / closed
    resolution: Mapped[str | None] = mapped_column(Text)
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Activity(Base):
    """A sit-in or chain patrol from the 附件1 schedule, and what its lead unit reported."""

    __tablename__ = "activities"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    kind: Mapped[str] = mapped_column(String(24), index=True)
    held_on: Mapped[date] = mapped_column(Date, index=True)
    title: Mapped[str] = mapped_column(String(200))
    lead_unit: Mapped[str] = mapped_column(String(48))
    industry_chain: Mapped[str | None] = mapped_column(String(64))
    plan_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    plan_submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    plan: Mapped[str | None] = mapped_column(Text)
    report_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    report_submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    report: Mapped[str | None] = mapped_column(Text)  # JSON of the report with its 附件3 rows


OUTBOX, INBOX = reliability_tables(Base.metadata)
