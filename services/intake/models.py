"""Intake's own tables: the appeal register, its timeline, reg_no counters."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from appeals_common.db import UtcDateTime, reliability_tables


class Base(DeclarativeBase):
    metadata = MetaData()


class Appeal(Base):
    __tablename__ = "appeals"
    __table_args__ = (UniqueConstraint("source_system", "external_id", name="uq_appeal_source_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reg_no: Mapped[str] = mapped_column(String(32), unique=True)
    source_system: Mapped[str] = mapped_column(String(48))
    external_id: Mapped[str | None] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32), index=True)
    enterprise_name: Mapped[str] = mapped_column(String(200), index=True)
    uscc: Mapped[str] = mapped_column(String(18), index=True)
    contact_name: Mapped[str] = mapped_column(String(50))
    contact_phone: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    industry_chain: Mapped[str | None] = mapped_column(String(64))
    urgency: Mapped[str] = mapped_column(String(16))
    activity_id: Mapped[str | None] = mapped_column(String(64))
    attachments: Mapped[str] = mapped_column(Text, default="[]")
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    registered_by: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24), index=True)
    # occurred_at of the event that set `state`: events from several services may
    # arrive out of order, the latest one wins.
    state_at: Mapped[datetime] = mapped_column(UtcDateTime)
    units: Mapped[str] = mapped_column(Text, default="[]")
    category_rule: Mapped[str] = mapped_column(String(80), default="given")
    chain_rule: Mapped[str] = mapped_column(String(80), default="given")
    # A likely repeat of an earlier appeal of the same enterprise: flagged, never merged.
    possible_duplicate_of: Mapped[str | None] = mapped_column(String(32))
    duplicate_score: Mapped[float | None] = mapped_column(Float)
    answer: Mapped[str | None] = mapped_column(Text)  # 当场办结: what the enterprise was told
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)


class TimelineEntry(Base):
    """Append-only: who did what to an appeal, when and why."""

    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    appeal_id: Mapped[str] = mapped_column(String(36), index=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    producer: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")


class Activity(Base):
    """A sit-in, patrol, door visit or clinic session appeals can be taken at."""

    __tablename__ = "activities"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    held_on: Mapped[date] = mapped_column(Date)
    title: Mapped[str] = mapped_column(String(200))
    lead_unit: Mapped[str] = mapped_column(String(48))
    industry_chain: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RegNoCounter(Base):
    __tablename__ = "reg_no_counters"

    prefix: Mapped[str] = mapped_column(String(8), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


OUTBOX, INBOX = reliability_tables(Base.metadata)
