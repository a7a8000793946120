"""What a department (承办单位) needs on the enterprise appeals bus, coded only against the
documented contract (docs/asyncapi.yaml) - never against the suite's own packages.

* `department_client.client.DepartmentClient`: consume `dispatch.<code>`, publish replies;
* `department_client.cli` (`appeals-dept`): the same from a shell;
* `department_client.adapter`: the reference adapter - bus <-> the department's HTTP endpoint;
* `department_client.example_endpoint`: a demo endpoint that signs and answers everything.

Needs only `pika` and `requests` (requirements.txt). Delivery is at least once: deduplicate
by `message_id`.
"""

from department_client.client import DEFER, DepartmentClient, Incoming, TemporaryError
from department_client.contract import (
    ACTIONS,
    OUTCOMES,
    ReplyValidationError,
    build_reply,
    extend_body,
    respond_body,
    return_body,
    sign_body,
)

__all__ = [
    "ACTIONS", "DEFER", "OUTCOMES", "DepartmentClient", "Incoming", "ReplyValidationError", "TemporaryError",
    "build_reply", "extend_body", "respond_body", "return_body", "sign_body",
]
