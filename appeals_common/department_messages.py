"""Messages to a department's queue (`appeals.dispatch` / `dept.<code>`): one shape for
every service that writes to departments (dispatch, supervision)."""

from __future__ import annotations

import uuid
from typing import Any

from appeals_common.db import UnitOfWork
from appeals_common.schemas import SCHEMA_VERSION
from appeals_common.topology import DISPATCH_EXCHANGE


def send_to_department(uow: UnitOfWork, dept_code: str, kind: str, reg_no: str,
                       assignment_id: str | None, body: dict[str, Any]) -> str:
    message_id = str(uuid.uuid4())
    uow.send(DISPATCH_EXCHANGE, f"dept.{dept_code}", {
        "schema_version": SCHEMA_VERSION, "kind": kind, "message_id": message_id,
        "sent_at": uow.now.isoformat(), "dept_code": dept_code, "reg_no": reg_no,
        "assignment_id": assignment_id, **body,
    }, message_id=message_id)
    return message_id
