"""Supervision's own tables: its view of each appeal's clock and the follow-ups."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, MetaData, String, Text
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

    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # assignment id + kind
    appeal_id: Mapped[str] = mapped_column(String(36), index=True)
    reg_no: Mapped[str] = mapped_column(String(32))
    assignment_id: Mapped[str] = mapped_column(String(36), index=True)
    dept_code: Mapped[str] = mapped_column(String(48))
    kind: Mapped[str] = mapped_column(String(16))  # sign / respond
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # open / met / cancelled
    met_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminder_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    notice_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    order_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


OUTBOX, INBOX = reliability_tables(Base.metadata)
