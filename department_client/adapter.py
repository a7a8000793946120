"""The reference adapter a department deploys between the appeals bus and its own system.

    APPEALS_DEPT_AMQP_URI=amqp://zjj:secret@broker:5672/ APPEALS_DEPT_CODE=zjj \\
    APPEALS_DEPT_ENDPOINT=http://dept-system/appeals/inbox python -m department_client.adapter

It consumes `dispatch.<code>` and POSTs every message - assignments, reply_results and
any kind the suite adds later - unchanged as JSON to the department's endpoint, with the
headers `X-Appeals-Message-Id`, `X-Appeals-Kind`, `X-Appeals-Dept`, `X-Appeals-Redelivered`
(and `Authorization: Bearer $APPEALS_DEPT_ENDPOINT_TOKEN` when set). The endpoint answers
2xx, optionally with replies to publish:

    {"actions": [{"action": "sign", "operator": "李四"},
                 {"action": "respond", "outcome": "solved", "reply": "…",
                  "contacted_at": "2026-11-27T10:30:00+08:00"}]}

Each action takes the fields of its reply (docs/asyncapi.yaml: sign | respond | return |
extend, plus optional `operator`, `replied_at`); `assignment_id` and `reg_no` default to
the message's. All actions are checked before any is published. Several actions are
published in order, each after the reply_result of the one before arrived (dispatch
handles replies concurrently, so a `respond` sent right behind its `sign` could overtake
it) or after `chain_timeout` seconds; the message is acked after the last one.

Failures: endpoint unreachable, timeout, 408/429/5xx -> retried by urllib3 (`retries`
times, with backoff), then the message goes back to the queue and is tried again after a
growing delay, without limit: nothing is lost while the endpoint is down. Any other 4xx
or an invalid answer -> retried `max_attempts` times, then logged at ERROR level (message
id, kind, reg_no and the error, phones and the contact's name masked - never the body)
and dropped. Delivery is at least once: the endpoint must deduplicate by
`X-Appeals-Message-Id`; reply ids are derived from the message id and the action's
position (uuid5), so the replies to a redelivered message repeat the same message ids and
the suite ignores the repeats.

`--auto` (APPEALS_DEPT_AUTO_SIGN=1) signs every assignment, also without an endpoint;
`--with-example-endpoint` runs department_client.example_endpoint in-process (demo).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from pika import exceptions as amqp_errors
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from department_client import contract
from department_client.client import DEFER, DepartmentClient, Incoming, TemporaryError, loggable

log = logging.getLogger("department_client.adapter")

REPLY_ID_NAMESPACE = uuid.UUID("0f6d5c1e-8a53-4c1f-9a57-4d2f0b8e9a61")
ACTION_REF_FIELDS = ("assignment_id", "reg_no")


class EndpointUnavailable(TemporaryError):
    """The endpoint could not take the message now; it goes back to the queue."""


class EndpointRefused(Exception):
    """The endpoint answered 4xx: it will not take this message as it is."""


class InvalidActions(Exception):
    """The endpoint's answer is not `{"actions": [...]}` with valid replies."""


def classify_status(status: int) -> str:
    """"ok", "temporary" (try again later) or "refused" for an HTTP status from the endpoint."""
    if 200 <= status < 300:
        return "ok"
    if status in (408, 425, 429) or status >= 500 or status < 200:
        return "temporary"
    return "refused"


def parse_actions(payload: Any) -> list[dict[str, Any]]:
    """The action list of an endpoint's JSON answer (None or {} = no actions)."""
    if payload is None:
        return []
    if not isinstance(payload, dict):
        raise InvalidActions("the answer must be a JSON object")
    actions = payload.get("actions", [])
    if actions is None:
        return []
    if not isinstance(actions, list):
        raise InvalidActions("'actions' must be a list")
    for index, action in enumerate(actions):
        if not isinstance(action, dict) or action.get("action") not in contract.ACTIONS:
            raise InvalidActions(f"actions[{index}] must be an object with 'action' one of "
                                 f"{', '.join(contract.ACTIONS)}")
    return [dict(action) for action in actions]


def reply_message_id(dept_code: str, incoming_message_id: str, index: int, action: str) -> str:
    """Stable per (message, position, action): a redelivered message's replies repeat their ids."""
    return str(uuid.uuid5(REPLY_ID_NAMESPACE, f"{dept_code}:{incoming_message_id}:{index}:{action}"))


@dataclass
class PlannedReply:
    action: str
    body: dict[str, Any]
    message_id: str
    # The answered message's trace context, carried on the reply (W3C traceparent).
    trace_headers: dict[str, str] = field(default_factory=dict)


def plan_replies(dept_code: str, message: Incoming, actions: Sequence[Mapping[str, Any]],
                 operator: str | None = None) -> list[PlannedReply]:
    """Reply bodies for the actions, all checked first (InvalidActions names every problem)."""
    planned, problems = [], []
    for index, spec in enumerate(actions):
        fields = {k: v for k, v in spec.items() if k != "action" and k not in ACTION_REF_FIELDS}
        ref = (spec.get("assignment_id", message.assignment_id), spec.get("reg_no", message.reg_no))
        fields.setdefault("operator", operator)
        try:
            body = contract.build_reply(spec["action"], ref, **fields)
        except (contract.ReplyValidationError, ValueError, TypeError) as exc:
            problems.append(f"actions[{index}] ({spec.get('action')}): {exc}")
            continue
        planned.append(PlannedReply(spec["action"], body,
                                    reply_message_id(dept_code, message.message_id, index, spec["action"]),
                                    contract.trace_headers_of(message)))
    if problems:
        raise InvalidActions("; ".join(problems))
    return planned


class EndpointForwarder:
    """POSTs a message to the department's endpoint and returns the actions it answered."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0, retries: int = 3,
                 backoff_factor: float = 0.5, session: requests.Session | None = None) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        if session is None:
            retry = Retry(total=retries, connect=retries, read=retries, status=retries,
                          backoff_factor=backoff_factor, status_forcelist=(429, 502, 503, 504),
                          allowed_methods=None,  # POST too: the endpoint deduplicates by message id
                          raise_on_status=False, respect_retry_after_header=True)
            adapter = HTTPAdapter(max_retries=retry)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)

    def headers(self, message: Incoming, dept_code: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
                   "User-Agent": "appeals-dept-adapter/1", "X-Appeals-Message-Id": message.message_id,
                   "X-Appeals-Kind": str(message.kind or ""), "X-Appeals-Dept": dept_code,
                   "X-Appeals-Redelivered": "true" if message.redelivered else "false"}
        headers.update(contract.trace_headers_of(message))  # the endpoint may continue the trace
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def post(self, message: Incoming, dept_code: str) -> list[dict[str, Any]]:
        try:
            response = self.session.post(self.url, data=message.raw, headers=self.headers(message, dept_code),
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise EndpointUnavailable(f"{self.url}: {exc}") from exc
        verdict = classify_status(response.status_code)
        if verdict == "temporary":
            raise EndpointUnavailable(f"{self.url} answered {response.status_code}")
        if verdict == "refused":
            raise EndpointRefused(f"{self.url} answered {response.status_code}: {response.text[:500]}")
        if not response.content.strip():
            return []
        try:
            payload = response.json()
        except ValueError:
            log.warning("endpoint answered %s with a body that is not JSON; no actions taken",
                        response.status_code)
            return []
        return parse_actions(payload)


@dataclass
class _Chain:
    message: Incoming
    replies: list[PlannedReply]
    next_index: int = 0
    waiting_for: str | None = None
    since: float = field(default_factory=time.monotonic)


class Adapter:
    """Bus -> endpoint -> bus, for one department. `run()` blocks until `stop()`."""

    def __init__(self, client: DepartmentClient, endpoint: str | EndpointForwarder | None = None, *,
                 auto_sign: bool = False, operator: str | None = None, chain_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if endpoint is None and not auto_sign:
            raise ValueError("nothing to do: give an endpoint, auto-sign, or both")
        self.client = client
        self.forwarder = EndpointForwarder(endpoint) if isinstance(endpoint, str) else endpoint
        self.auto_sign = auto_sign
        self.operator = operator
        self.chain_timeout = chain_timeout
        self.clock = clock
        self._waiting: dict[str, _Chain] = {}  # reply message_id -> chain waiting for its result

    @property
    def dept_code(self) -> str:
        return self.client.dept_code

    def run(self, stop_after: int | None = None, *, select: Callable[[Incoming], bool] | None = None,
            idle_timeout: float | None = None) -> int:
        log.info("adapter for %s: %s -> %s%s", self.dept_code, self.client.queue,
                 self.forwarder.url if self.forwarder else "(no endpoint)",
                 ", auto-sign" if self.auto_sign else "")
        try:
            return self.client.listen(self.handle, stop_after, select=select, tick=self.tick,
                                      idle_timeout=idle_timeout, reconnect=True)
        finally:
            self._waiting.clear()

    def stop(self) -> None:
        self.client.stop()

    def actions_for(self, message: Incoming) -> list[dict[str, Any]]:
        actions = self.forwarder.post(message, self.dept_code) if self.forwarder else []
        signs = any(action["action"] == "sign" for action in actions)
        if self.auto_sign and message.kind == "assignment" and not signs:
            actions.insert(0, {"action": "sign"})
        return actions

    def handle(self, message: Incoming) -> Any:
        if message.kind == "reply_result":
            self._on_reply_result(message)
        if not message.known_kind:
            log.info("message %s of kind %r (unknown to this adapter) passed on as it is",
                     message.message_id, message.kind)
        planned = plan_replies(self.dept_code, message, self.actions_for(message), self.operator)
        if not planned:
            return None
        chain = _Chain(message, planned, since=self.clock())
        self._advance(chain)
        return DEFER if chain.next_index < len(planned) else None

    def _publish(self, reply: PlannedReply) -> None:
        try:
            self.client.publish_reply(reply.action, reply.body, reply.message_id, reply.trace_headers)
        except (amqp_errors.UnroutableError, amqp_errors.NackError) as exc:
            raise TemporaryError(f"the broker did not take {reply.action} {reply.message_id}: {exc!r}"
                                 ) from exc

    def _advance(self, chain: _Chain) -> None:
        """Publish the chain's next reply; wait for its result unless it was the last."""
        self._publish(chain.replies[chain.next_index])
        if chain.waiting_for is not None:
            self._waiting.pop(chain.waiting_for, None)
        chain.waiting_for = chain.replies[chain.next_index].message_id
        chain.next_index += 1
        chain.since = self.clock()
        if chain.next_index < len(chain.replies):
            self._waiting[chain.waiting_for] = chain
        elif chain.next_index > 1:  # a deferred message: all its replies are out
            self.client.settle(chain.message)

    def _on_reply_result(self, message: Incoming) -> None:
        chain = self._waiting.get(message.body.get("reply_message_id") or "")
        if chain is None:
            return
        if message.body.get("status") != "accepted":
            log.warning("%s reply %s refused: %s; publishing the next one all the same",
                        message.body.get("action"), chain.waiting_for,
                        loggable(message.body.get("errors"), chain.message))
        else:
            log.info("%s reply %s accepted; publishing the next one", message.body.get("action"),
                     chain.waiting_for)
        self._continue(chain)

    def _continue(self, chain: _Chain) -> None:
        if not self.client.holds(chain.message):  # it went back to the queue meanwhile
            self._waiting.pop(chain.waiting_for or "", None)
            return
        self._advance(chain)

    def tick(self) -> None:
        now = self.clock()
        for chain in list(self._waiting.values()):
            if now - chain.since < self.chain_timeout:
                continue
            log.warning("no reply_result for %s within %.0fs; publishing the next reply",
                        chain.waiting_for, self.chain_timeout)
            try:
                self._continue(chain)
            except (amqp_errors.AMQPConnectionError, amqp_errors.ChannelClosed,
                    amqp_errors.ChannelWrongStateError):
                raise
            except Exception:
                log.exception("could not publish the next reply of %s; trying again later",
                              chain.message.message_id)
                chain.since = now


# --- running it ----------------------------------------------------------------------

ENV = {
    "amqp_uri": "APPEALS_DEPT_AMQP_URI", "dept": "APPEALS_DEPT_CODE", "endpoint": "APPEALS_DEPT_ENDPOINT",
    "token": "APPEALS_DEPT_ENDPOINT_TOKEN", "auto": "APPEALS_DEPT_AUTO_SIGN",
    "operator": "APPEALS_DEPT_OPERATOR", "example": "APPEALS_DEPT_EXAMPLE_ENDPOINT",
    "timeout": "APPEALS_DEPT_HTTP_TIMEOUT", "retries": "APPEALS_DEPT_HTTP_RETRIES",
    "max_attempts": "APPEALS_DEPT_MAX_ATTEMPTS", "chain_timeout": "APPEALS_DEPT_CHAIN_TIMEOUT",
    "prefetch": "APPEALS_DEPT_PREFETCH", "log_level": "APPEALS_DEPT_LOG_LEVEL",
}


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m department_client.adapter",
        description="Forward a department's appeals messages to its HTTP endpoint.")

    def option(flag: str, key: str, help_text: str, **kw: Any) -> None:
        name = ENV[key]
        default = env.get(name)
        if kw.get("action") == "store_true":
            default = _flag(default)
        elif default is None:
            default = kw.pop("fallback", None)
        else:
            kw.pop("fallback", None)
            default = kw.get("type", str)(default)
        parser.add_argument(flag, default=default, help=f"{help_text} (env {name})".lstrip(" "), **kw)

    option("--amqp-uri", "amqp_uri", "broker URI with this department's user")
    option("--dept", "dept", "this department's code")
    option("--endpoint", "endpoint", "URL the messages are POSTed to")
    option("--auto", "auto", "sign every assignment", action="store_true")
    option("--operator", "operator", "who replies, for the record")
    option("--with-example-endpoint", "example", "run the example endpoint in-process and use it",
           action="store_true")
    option("--timeout", "timeout", "seconds per HTTP attempt", type=float, fallback=10.0)
    option("--retries", "retries", "HTTP retries per delivery", type=int, fallback=3)
    option("--max-attempts", "max_attempts", "deliveries before a refused/invalid message is dropped",
           type=int, fallback=5)
    option("--chain-timeout", "chain_timeout", "seconds to wait for a reply_result before the next action",
           type=float, fallback=30.0)
    option("--prefetch", "prefetch", "unacked messages at a time", type=int, fallback=20)
    option("--log-level", "log_level", "DEBUG, INFO, WARNING, ERROR", fallback="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # our own warnings say it in one line
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    if not args.amqp_uri or not args.dept:
        parser.error(f"give --amqp-uri/--dept or set {ENV['amqp_uri']} and {ENV['dept']}")
    try:
        contract.check_dept_code(args.dept)
    except ValueError as exc:
        parser.error(str(exc))
    server = None
    if args.with_example_endpoint:
        from department_client.example_endpoint import serve_in_thread

        server, args.endpoint = serve_in_thread(operator=args.operator or "示例部门系统")
        log.info("example endpoint at %s", args.endpoint)
    if not args.endpoint and not args.auto:
        parser.error(f"give --endpoint (env {ENV['endpoint']}), --auto or --with-example-endpoint")

    client = DepartmentClient(args.amqp_uri, args.dept, prefetch=args.prefetch,
                              max_attempts=args.max_attempts, client_name="appeals-dept-adapter")
    forwarder = (EndpointForwarder(args.endpoint, token=os.environ.get(ENV["token"]), timeout=args.timeout,
                                   retries=args.retries) if args.endpoint else None)
    adapter = Adapter(client, forwarder, auto_sign=args.auto, operator=args.operator,
                      chain_timeout=args.chain_timeout)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: adapter.stop())
    try:
        adapter.run()
    finally:
        client.close()
        if server is not None:
            server.shutdown()
    log.info("adapter for %s stopped", args.dept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
