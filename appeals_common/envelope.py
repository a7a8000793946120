"""The envelope every internal domain event travels in (DESIGN §5)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from appeals_common.schemas import SCHEMA_VERSION

EVENTS_EXCHANGE = "appeals.events"

# Every internal event type and what it means; listed in docs/asyncapi.yaml too.
EVENT_TYPES: dict[str, str] = {
    "appeal.registered": "intake registered an appeal (挂号)",
    "appeal.resolved_on_spot": "answered at registration (当场办结)",
    "appeal.reclassified": "staff corrected category/chain",
    "appeal.withdrawn": "withdrawn with a reason (撤回)",
    "appeal.dispatched": "dispatch chose lead and co-units (交办)",
    "activity.registered": "staff registered a sit-in, patrol, door visit or clinic session",
    "assignment.signed": "a unit accepted its assignment (签收)",
    "assignment.returned": "a unit returned its assignment (退单)",
    "assignment.return_decided": "the bureau accepted or rejected a return",
    "extension.requested": "a unit asked for more time (延期申请)",
    "extension.decided": "the bureau approved or denied an extension",
    "extension.closed": "an undecided extension request lapsed or was cancelled",
    "deadline.recomputed": "provisional deadlines counted again on the official calendar",
    "assignment.reassigned": "a unit's assignment was taken back (override, return, withdrawal)",
    "appeal.joint_decision_required": "returned too often: the bureau decides the units (会商)",
    "assignment.contributed": "a co-unit recorded its contribution (陪诊)",
    "appeal.responded": "the lead unit replied with an outcome (部门响应)",
    "appeal.reminded": "a reminder was sent before a deadline (催办)",
    "appeal.overdue": "a deadline passed",
    "appeal.supervised": "a supervision notice was sent (督办)",
    "supervision_order.issued": "a key supervision order was issued (重点督办单)",
    "supervision_order.answered": "the unit gave its written feedback on a key supervision order",
    "followup.recorded": "the bureau recorded a follow-up with the enterprise (回访)",
    "appeal.reopened": "an unsatisfied appeal is handled again (重办)",
    "appeal.closed": "the appeal is closed out (销号)",
    "class_problem.suggested": "similar appeals proposed as one class problem (类题破解)",
    "class_problem.confirmed": "the bureau confirmed a class with lead entity, units, deadline",
    "class_problem.resolved": "the lead entity reported the measures taken",
    "class_problem.closed": "the class is closed out, with whether to promote its measures",
    "class_problem.dismissed": "the bureau did not take up a suggested class",
    "class_problem.annotated": "a linked appeal is annotated with its class's outcome",
    "walkthrough.recorded": "staff walked a service process (我陪群众走流程) and listed findings",
    "walkthrough_item.closed": "a problem/demand/optimization list item was closed out (销号)",
    "activity.plan_submitted": "a chain patrol's lead unit filed its plan (活动方案)",
    "activity.report_submitted": "a chain patrol's report with its 附件3 service item list",
}


class EnvelopeSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = fields.String(required=True)
    event_type = fields.String(required=True, validate=validate.Length(min=3, max=64))
    schema_version = fields.Integer(required=True)
    occurred_at = fields.AwareDateTime(required=True, format="iso")
    producer = fields.String(required=True)
    appeal_id = fields.String(allow_none=True, load_default=None)
    correlation_id = fields.String(allow_none=True, load_default=None)
    data = fields.Dict(required=True)


_ENVELOPE = EnvelopeSchema()


@dataclass(frozen=True)
class Event:
    event_type: str
    producer: str
    occurred_at: datetime
    data: dict[str, Any]
    appeal_id: str | None = None
    correlation_id: str | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _ENVELOPE.dump(self.__dict__)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str).encode()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        loaded = _ENVELOPE.load(raw)
        return cls(**loaded)

    @classmethod
    def from_json(cls, body: bytes) -> Event:
        return cls.from_dict(json.loads(body))
