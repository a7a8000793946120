"""Dispatch's own tables: its copy of each appeal and the per-unit assignments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from appeals_common.db import UtcDateTime, reliability_tables


class Base(DeclarativeBase):
    metadata = MetaData()


class DispatchAppeal(Base):
    __tablename__ = "appeals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reg_no: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    industry_chain: Mapped[str | None] = mapped_column(String(64))
    urgency: Mapped[str] = mapped_column(String(16))
    enterprise: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(24))
    rule: Mapped[str | None] = mapped_column(String(64))
    # Units that returned it (accepted by the bureau): routing skips them.
    returned_units: Mapped[str] = mapped_column(Text, default="[]")
    # 会商: after repeated returns the bureau chooses the units itself.
    needs_joint_decision: Mapped[bool] = mapped_column(Boolean, default=False)


class Assignment(Base):
    __tablename__ = "assignments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appeal_id: Mapped[str] = mapped_column(String(36), index=True)
    reg_no: Mapped[str] = mapped_column(String(32), index=True)
    dept_code: Mapped[str] = mapped_column(String(48), index=True)
    role: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sign_by: Mapped[datetime] = mapped_column(UtcDateTime)
    return_by: Mapped[datetime] = mapped_column(UtcDateTime)
    respond_by: Mapped[datetime] = mapped_column(UtcDateTime)
    latest_respond_by: Mapped[datetime] = mapped_column(UtcDateTime)
    deadlines_provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    # Who set respond_by when the policy no longer does: "extension" or "key_order".
    respond_by_source: Mapped[str | None] = mapped_column(String(16))
    signed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(24))
    reply: Mapped[str | None] = mapped_column(Text)
    return_reason_code: Mapped[str | None] = mapped_column(String(32))
    return_reason: Mapped[str | None] = mapped_column(Text)
    suggested_unit: Mapped[str | None] = mapped_column(String(48))


class Extension(Base):
    """延期申请: a unit asks for a later respond-by; the bureau approves or denies."""

    __tablename__ = "extensions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    assignment_id: Mapped[str] = mapped_column(String(36), index=True)
    reg_no: Mapped[str] = mapped_column(String(32))
    dept_code: Mapped[str] = mapped_column(String(48))
    requested_until: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)  # requested/approved/denied
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decision_reason: Mapped[str | None] = mapped_column(Text)


class KeyOrder(Base):
    """《重点督办单》 issued to a unit about one of its assignments, and its written feedback."""

    __tablename__ = "key_orders"

    order_no: Mapped[str] = mapped_column(String(80), primary_key=True)
    appeal_id: Mapped[str] = mapped_column(String(36), index=True)
    reg_no: Mapped[str] = mapped_column(String(32))
    assignment_id: Mapped[str] = mapped_column(String(36), index=True)
    dept_code: Mapped[str] = mapped_column(String(48))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    feedback_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    feedback: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


OUTBOX, INBOX = reliability_tables(Base.metadata)
