"""Reporting's own tables: every event consumed (append-only) and projections from it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from appeals_common.db import UtcDateTime, reliability_tables


class Base(DeclarativeBase):
    metadata = MetaData()


class ArchivedEvent(Base):
    """The archive projections are rebuilt from; never updated."""

    __tablename__ = "event_archive"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    producer: Mapped[str] = mapped_column(String(32))
    appeal_id: Mapped[str | None] = mapped_column(String(36), index=True)
    body: Mapped[str] = mapped_column(Text)


class AppealFact(Base):
    """One row per appeal: the read model reports and metrics are computed from."""

    __tablename__ = "appeal_facts"

    appeal_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reg_no: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(32), index=True)
    category: Mapped[str | None] = mapped_column(String(64))
    industry_chain: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24), index=True)
    state_at: Mapped[datetime] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    lead_dept: Mapped[str | None] = mapped_column(String(48), index=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(24))
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_on_time: Mapped[bool | None] = mapped_column()
    last_grade: Mapped[str | None] = mapped_column(String(24))


OUTBOX, INBOX = reliability_tables(Base.metadata)
