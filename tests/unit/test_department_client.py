"""department_client's pure parts: reply bodies, validation, CLI arguments, the adapter's
planning and sequencing, the consumer's ack/nack decisions (fake channel, no broker)."""

from __future__ import annotations

import ast
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from department_client import adapter as adapter_mod
from department_client import cli, contract
from department_client.client import DEFER, DepartmentClient, Incoming, SeenIds, TemporaryError, message_id_of
from department_client.example_endpoint import example_answer, make_server, serve_in_thread

PACKAGE = Path(__file__).resolve().parents[2] / "department_client"

ASSIGNMENT = {
    "schema_version": 1, "kind": "assignment", "message_id": "m-1", "sent_at": "2026-11-27T01:31:02+00:00",
    "dept_code": "zjj", "reg_no": "WH-2026-000123", "assignment_id": "a-1", "appeal_id": "ap-1",
    "role": "lead", "units": {"lead": "zjj", "co": ["zrzyj"]}, "title": "施工许可办理进度慢",
    "future_field": "readers ignore unknown fields",
}
ENV = {"APPEALS_DEPT_AMQP_URI": "amqp://guest:guest@127.0.0.1:5672/", "APPEALS_DEPT_CODE": "zjj"}


def incoming(body: dict[str, Any], tag: int = 1, message_id: str | None = None) -> Incoming:
    raw = json.dumps(body, ensure_ascii=False).encode()
    return Incoming(body=body, message_id=message_id or body.get("message_id", "x"), raw=raw,
                    delivery_tag=tag)


# --- the department side never imports the suite -------------------------------------------


def test_package_imports_nothing_of_the_suite() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("appeals_common", "services", "tests")), f"{path.name}: {name}"


# --- reply bodies ---------------------------------------------------------------------------


def test_sign_body_from_the_assignment_message() -> None:
    body = contract.sign_body(ASSIGNMENT, replied_at="2026-11-27T10:05:00+08:00")
    assert body == {"schema_version": 1, "assignment_id": "a-1", "reg_no": "WH-2026-000123",
                    "replied_at": "2026-11-27T10:05:00+08:00"}
    with_operator = contract.sign_body(("a-1", "WH-2026-000123"), "李四")
    assert with_operator["operator"] == "李四"
    # replied_at defaults to now, with an offset
    assert contract.parse_time(with_operator["replied_at"]).utcoffset() is not None


def test_respond_body_and_its_outcomes() -> None:
    body = contract.respond_body(ASSIGNMENT, "solved", "已协调办理", "2026-11-27T10:30:00+08:00",
                                 replied_at="2026-11-27T11:00:00Z")
    assert body["outcome"] == "solved" and body["reply"] == "已协调办理"
    assert body["contacted_at"] == "2026-11-27T10:30:00+08:00"
    assert body["replied_at"] == "2026-11-27T11:00:00+00:00"  # Z is normalised to +00:00
    assert set(contract.OUTCOMES) == {"solved", "explained", "not_solvable"}
    for outcome in contract.OUTCOMES:
        contract.respond_body(ASSIGNMENT, outcome, "x", "2026-11-27T10:30:00+08:00")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"outcome": "done"}, "outcome"),
    ({"outcome": "SOLVED"}, "outcome"),
    ({"reply": ""}, "reply"),
    ({"reply": "字" * 5001}, "reply"),
    ({"contacted_at": "2026-11-27T10:30:00"}, "contacted_at"),  # no offset: refused, never guessed
    ({"contacted_at": "yesterday"}, "contacted_at"),
])
def test_respond_body_refuses(kwargs: dict[str, Any], field: str) -> None:
    args = {"outcome": "solved", "reply": "ok", "contacted_at": "2026-11-27T10:30:00+08:00", **kwargs}
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.respond_body(ASSIGNMENT, **args)
    assert field in err.value.errors


def test_return_and_extend_bodies() -> None:
    body = contract.return_body(ASSIGNMENT, "wrong_unit", "属于市场监管职责", "scjgj")
    assert (body["reason_code"], body["suggested_unit"]) == ("wrong_unit", "scjgj")
    assert "suggested_unit" not in contract.return_body(ASSIGNMENT, "other", "原因")
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.return_body(ASSIGNMENT, "x" * 33, "", "Not A Code")
    assert set(err.value.errors) == {"reason_code", "reason", "suggested_unit"}

    body = contract.extend_body(ASSIGNMENT, "2026-12-10T18:00:00+08:00", "需要会商")
    assert body["requested_until"] == "2026-12-10T18:00:00+08:00"
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.extend_body(ASSIGNMENT, "2026-12-10", "需要会商")
    assert "requested_until" in err.value.errors


def test_build_reply_is_strict_like_the_suite() -> None:
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.build_reply("sign", ASSIGNMENT, outcome="solved")
    assert "outcome" in err.value.errors
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.build_reply("respond", ASSIGNMENT)
    assert set(err.value.errors) == {"outcome", "reply", "contacted_at"}
    with pytest.raises(ValueError, match="unknown action"):
        contract.build_reply("approve", ASSIGNMENT)
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.sign_body(ASSIGNMENT, operator="x" * 51)
    assert "operator" in err.value.errors


def test_assignment_reference_forms() -> None:
    assert contract.assignment_ref(ASSIGNMENT) == ("a-1", "WH-2026-000123")
    assert contract.assignment_ref(["a-1", "R"]) == ("a-1", "R")
    assert contract.assignment_ref(incoming(ASSIGNMENT)) == ("a-1", "WH-2026-000123")
    with pytest.raises(contract.ReplyValidationError) as err:
        contract.assignment_ref({"reg_no": "R" * 33})
    assert set(err.value.errors) == {"assignment_id", "reg_no"}
    with pytest.raises(TypeError):
        contract.assignment_ref(42)


def test_names_on_the_bus() -> None:
    assert contract.dispatch_queue("zjj") == "dispatch.zjj"
    assert contract.reply_routing_key("zjj", "return") == "dept.zjj.return"
    for bad in ("ZJJ", "", "replies", "events", "dlq", "a.b", "x" * 49):
        with pytest.raises(ValueError):
            contract.check_dept_code(bad)
    with pytest.raises(ValueError):
        contract.reply_routing_key("zjj", "approve")


# --- CLI arguments --------------------------------------------------------------------------


def test_cli_takes_broker_and_department_from_the_environment() -> None:
    _, args = cli.parse_args(["sign", "a-1", "WH-2026-000123"], env=ENV)
    assert (args.amqp_uri, args.dept, args.command) == (ENV["APPEALS_DEPT_AMQP_URI"], "zjj", "sign")
    _, args = cli.parse_args(["--dept", "jrb", "--amqp-uri", "amqp://x/", "list", "--limit", "5"], env=ENV)
    assert (args.amqp_uri, args.dept, args.limit) == ("amqp://x/", "jrb", 5)
    _, args = cli.parse_args(["listen", "--count", "3", "--idle-timeout", "2.5"], env=ENV)
    assert (args.count, args.idle_timeout) == (3, 2.5)


@pytest.mark.parametrize("argv", [
    ["sign", "a-1", "R"],                                               # no broker, no dept in env
    ["--amqp-uri", "amqp://x/", "sign", "a-1", "R"],                     # no dept
    ["--amqp-uri", "amqp://x/", "--dept", "Bad.Code", "sign", "a-1", "R"],
    ["--amqp-uri", "amqp://x/", "--dept", "zjj"],                        # no command
])
def test_cli_refuses_incomplete_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(argv, env={})
    assert exit_.value.code == 2


def test_cli_reply_bodies() -> None:
    _, args = cli.parse_args(["respond", "a-1", "R-1", "--outcome", "explained", "--reply", "已说明",
                              "--contacted-at", "2026-11-27T10:30:00+08:00", "--operator", "李四"], env=ENV)
    assert cli.reply_body_from_args(args) | {"replied_at": None} == {
        "schema_version": 1, "assignment_id": "a-1", "reg_no": "R-1", "replied_at": None, "operator": "李四",
        "outcome": "explained", "reply": "已说明", "contacted_at": "2026-11-27T10:30:00+08:00"}
    _, args = cli.parse_args(["return", "a-1", "R-1", "--reason-code", "wrong_unit", "--reason", "不归我们",
                              "--suggested-unit", "scjgj", "--replied-at", "2026-11-27T09:00:00+08:00"],
                             env=ENV)
    assert cli.reply_body_from_args(args) == {
        "schema_version": 1, "assignment_id": "a-1", "reg_no": "R-1",
        "replied_at": "2026-11-27T09:00:00+08:00",
        "reason_code": "wrong_unit", "reason": "不归我们", "suggested_unit": "scjgj"}
    _, args = cli.parse_args(["extend", "a-1", "R-1", "--until", "2026-12-10T18:00:00+08:00",
                              "--reason", "会商", "--message-id", "same-id"], env=ENV)
    body = cli.reply_body_from_args(args)
    assert (body["requested_until"], body["reason"], args.message_id) == (
        "2026-12-10T18:00:00+08:00", "会商", "same-id")
    _, args = cli.parse_args(["sign", "a-1", "R-1"], env={**ENV, "APPEALS_DEPT_OPERATOR": "值班员"})
    assert cli.reply_body_from_args(args)["operator"] == "值班员"


@pytest.mark.parametrize("extra", [
    ["--outcome", "done", "--reply", "x", "--contacted-at", "2026-11-27T10:30:00+08:00"],
    ["--outcome", "solved", "--reply", "x", "--contacted-at", "2026-11-27T10:30:00"],
    ["--outcome", "solved", "--reply", "x"],
])
def test_cli_refuses_bad_respond_arguments(extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(["respond", "a-1", "R-1", *extra], env=ENV)
    assert exit_.value.code == 2


def test_cli_checks_a_reply_before_connecting(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEALS_DEPT_AMQP_URI", "amqp://guest:guest@127.0.0.1:1/")  # nothing listens
    monkeypatch.setenv("APPEALS_DEPT_CODE", "zjj")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["return", "a-1", "R-1", "--reason-code", "other", "--reason", "x" * 1001])
    assert exit_.value.code == 2
    assert "reason" in capsys.readouterr().err


# --- the consumer's decisions (fake channel) -------------------------------------------------


class FakeChannel:
    is_open = True

    def __init__(self) -> None:
        self.acks: list[int] = []
        self.nacks: list[tuple[int, bool]] = []

    def basic_ack(self, tag: int) -> None:
        self.acks.append(tag)

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.nacks.append((tag, requeue))


class FakeConnection:
    is_open = True

    def sleep(self, seconds: float) -> None:
        pass


@pytest.fixture
def consumer() -> tuple[DepartmentClient, FakeChannel, list]:
    given_up: list = []
    client = DepartmentClient("amqp://unused/", "zjj", max_attempts=3, retry_delay=0.0,
                              on_give_up=lambda message, error: given_up.append((message.message_id, error)))
    client._conn = FakeConnection()
    return client, FakeChannel(), given_up


def test_acks_only_after_the_handler_returned(consumer) -> None:
    client, channel, _ = consumer
    seen: list[str] = []
    client._dispatch(channel, lambda m: seen.append(m.message_id), incoming(ASSIGNMENT, tag=7))
    assert seen == ["m-1"] and channel.acks == [7] and channel.nacks == []
    assert "m-1" in client.seen


def test_a_failing_handler_is_retried_then_given_up_loudly(consumer) -> None:
    client, channel, given_up = consumer

    def broken(message: Incoming) -> None:
        raise RuntimeError("boom")

    for tag in (1, 2, 3):
        client._dispatch(channel, broken, incoming(ASSIGNMENT, tag=tag))
    assert channel.nacks == [(1, True), (2, True), (3, False)]
    assert [mid for mid, _ in given_up] == ["m-1"] and "boom" in str(given_up[0][1])
    assert channel.acks == [] and "m-1" not in client.seen


def test_a_temporary_failure_is_requeued_without_limit(consumer) -> None:
    client, channel, given_up = consumer

    def down(message: Incoming) -> None:
        raise TemporaryError("endpoint down")

    for tag in range(1, 11):
        client._dispatch(channel, down, incoming(ASSIGNMENT, tag=tag))
    assert channel.nacks == [(tag, True) for tag in range(1, 11)] and given_up == []


def test_a_deferred_message_is_acked_when_settled(consumer) -> None:
    client, channel, _ = consumer
    client._consume = channel
    message = incoming(ASSIGNMENT, tag=4)
    client._dispatch(channel, lambda m: DEFER, message)
    assert channel.acks == [] and client.holds(message)
    assert client.settle(message) and channel.acks == [4] and "m-1" in client.seen
    assert not client.settle(message)


class Method:
    def __init__(self, tag: int) -> None:
        self.delivery_tag, self.routing_key, self.redelivered = tag, "dept.zjj", False


class Props:
    def __init__(self, message_id: str | None) -> None:
        self.message_id, self.headers = message_id, {}


class ConsumingChannel(FakeChannel):
    def __init__(self, deliveries: list[tuple[str | None, bytes]]) -> None:
        super().__init__()
        self.deliveries = deliveries
        self.cancelled = self.closed = False

    def basic_qos(self, prefetch_count: int) -> None:
        pass

    def consume(self, queue: str, inactivity_timeout: float):
        for tag, (message_id, raw) in enumerate(self.deliveries, start=1):
            yield Method(tag), Props(message_id), raw
        while True:
            yield None, None, None

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        self.closed = True


def test_listen_skips_repeats_holds_unselected_and_gives_up_on_garbage(consumer) -> None:
    client, _, given_up = consumer
    mine = json.dumps({**ASSIGNMENT, "reg_no": "MINE"}).encode()
    other = json.dumps({**ASSIGNMENT, "message_id": "m-9", "reg_no": "OTHER"}).encode()
    no_amqp_id = json.dumps({**ASSIGNMENT, "message_id": "m-3", "reg_no": "MINE"}).encode()
    channel = ConsumingChannel([("m-1", mine), ("m-9", other), ("m-1", mine),  # a redelivery
                                ("m-2", b"\xff not json"), (None, no_amqp_id)])
    client._conn.channel = lambda: channel
    handled: list[str] = []
    count = client.listen(lambda m: handled.append(m.message_id), idle_timeout=0,
                          select=lambda m: m.reg_no in ("MINE", None))
    assert handled == ["m-1", "m-3"] and count == 2  # m-3 had no AMQP id: the body's is used
    assert channel.acks == [1, 3, 5]                  # m-1, its repeat (skipped), m-3
    assert (4, False) in channel.nacks and [mid for mid, _ in given_up] == ["m-2"]
    assert (2, True) in channel.nacks, "the message not selected goes back to the queue"
    assert channel.cancelled and channel.closed


def test_seen_ids_and_message_ids() -> None:
    seen = SeenIds(maxlen=2)
    for mid in ("a", "b", "c"):
        seen.add(mid)
    assert "a" not in seen and "b" in seen and "c" in seen and len(seen) == 2

    class Props:
        message_id = "amqp-id"

    assert message_id_of(Props(), b"{}", {"message_id": "body-id"}) == "amqp-id"
    assert message_id_of(None, b"{}", {"message_id": "body-id"}) == "body-id"
    assert message_id_of(None, b"{}", {}).startswith("sha256:")


# --- the adapter ----------------------------------------------------------------------------


def test_endpoint_status_classes() -> None:
    assert [adapter_mod.classify_status(s) for s in (200, 204, 400, 404, 408, 429, 500, 503)] == [
        "ok", "ok", "refused", "refused", "temporary", "temporary", "temporary", "temporary"]


def test_parse_actions() -> None:
    assert adapter_mod.parse_actions(None) == [] and adapter_mod.parse_actions({}) == []
    assert adapter_mod.parse_actions({"actions": [{"action": "sign"}]}) == [{"action": "sign"}]
    for bad in ([], {"actions": {}}, {"actions": [{"action": "approve"}]}, {"actions": ["sign"]}):
        with pytest.raises(adapter_mod.InvalidActions):
            adapter_mod.parse_actions(bad)


def test_plan_replies_defaults_to_the_message_and_has_stable_ids() -> None:
    message = incoming(ASSIGNMENT)
    actions = [{"action": "sign"},
               {"action": "respond", "outcome": "solved", "reply": "好",
                "contacted_at": "2026-11-27T10:00:00+08:00", "operator": "王五"},
               {"action": "extend", "assignment_id": "a-2", "reg_no": "R-2",
                "requested_until": "2026-12-10T18:00:00+08:00", "reason": "会商"}]
    planned = adapter_mod.plan_replies("zjj", message, actions, operator="值班员")
    assert [p.action for p in planned] == ["sign", "respond", "extend"]
    assert planned[0].body["operator"] == "值班员" and planned[1].body["operator"] == "王五"
    assert (planned[0].body["assignment_id"], planned[2].body["assignment_id"]) == ("a-1", "a-2")
    again = adapter_mod.plan_replies("zjj", message, actions, operator="值班员")
    assert [p.message_id for p in again] == [p.message_id for p in planned]
    assert len({p.message_id for p in planned}) == 3

    with pytest.raises(adapter_mod.InvalidActions) as err:
        adapter_mod.plan_replies("zjj", message, [{"action": "sign"}, {"action": "respond", "outcome": "ok"},
                                                  {"action": "sign", "colour": "red"}])
    text = str(err.value)
    assert "actions[1]" in text and "actions[2]" in text and "actions[0]" not in text


class FakeClient:
    dept_code = "zjj"
    queue = "dispatch.zjj"

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []
        self.trace_headers: list[dict[str, str]] = []
        self.deferred: set[int] = set()
        self.settled: list[str] = []

    def publish_reply(self, action: str, body: dict, message_id: str | None = None,
                      trace_headers: dict[str, str] | None = None) -> str:
        self.published.append((action, message_id))
        self.trace_headers.append(dict(trace_headers or {}))
        return message_id

    def holds(self, message: Incoming) -> bool:
        return message.delivery_tag in self.deferred

    def settle(self, message: Incoming) -> bool:
        self.deferred.discard(message.delivery_tag)
        self.settled.append(message.message_id)
        return True


class StubForwarder:
    url = "http://stub/"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.posted: list[str] = []

    def post(self, message: Incoming, dept_code: str) -> list[dict]:
        self.posted.append(message.message_id)
        return adapter_mod.parse_actions(self.answer(message.body))


def test_adapter_sends_dependent_actions_one_after_the_other() -> None:
    now = [0.0]
    client = FakeClient()
    forwarder = StubForwarder(example_answer)
    adapter = adapter_mod.Adapter(client, forwarder, chain_timeout=30, clock=lambda: now[0])
    message = incoming(ASSIGNMENT, tag=1)
    assert adapter.handle(message) is DEFER
    client.deferred.add(1)
    assert [a for a, _ in client.published] == ["sign"]
    sign_id = client.published[0][1]

    # An unrelated reply_result changes nothing; the sign's own result releases the respond.
    unrelated = {"kind": "reply_result", "message_id": "r-0", "reply_message_id": "other"}
    adapter.handle(incoming(unrelated, tag=2))
    assert len(client.published) == 1
    result = {"kind": "reply_result", "message_id": "r-1", "reply_message_id": sign_id, "status": "accepted",
              "action": "sign", "reg_no": ASSIGNMENT["reg_no"], "assignment_id": "a-1"}
    assert adapter.handle(incoming(result, tag=3)) is None
    assert [a for a, _ in client.published] == ["sign", "respond"]
    assert client.settled == ["m-1"] and forwarder.posted == ["m-1", "r-0", "r-1"]


def test_adapter_goes_on_after_the_chain_timeout() -> None:
    now = [0.0]
    client = FakeClient()
    adapter = adapter_mod.Adapter(client, StubForwarder(example_answer), chain_timeout=30,
                                  clock=lambda: now[0])
    message = incoming(ASSIGNMENT, tag=1)
    assert adapter.handle(message) is DEFER
    client.deferred.add(1)
    now[0] = 10
    adapter.tick()
    assert len(client.published) == 1
    now[0] = 31  # e.g. the sign was a repeat the suite ignored: no reply_result comes
    adapter.tick()
    assert [a for a, _ in client.published] == ["sign", "respond"] and client.settled == ["m-1"]


def test_auto_sign_without_an_endpoint() -> None:
    client = FakeClient()
    adapter = adapter_mod.Adapter(client, None, auto_sign=True)
    assert adapter.handle(incoming(ASSIGNMENT)) is None
    assert [a for a, _ in client.published] == ["sign"]
    assert adapter.handle(incoming({"kind": "reminder", "message_id": "m-2", "reg_no": "R"})) is None
    assert adapter.handle(incoming({"kind": "brand_new_kind", "message_id": "m-3"})) is None
    assert len(client.published) == 1
    with pytest.raises(ValueError):
        adapter_mod.Adapter(client, None)


def test_adapter_command_line_reads_the_environment() -> None:
    args = adapter_mod.build_parser({**ENV, "APPEALS_DEPT_ENDPOINT": "http://dept/inbox",
                                     "APPEALS_DEPT_AUTO_SIGN": "true", "APPEALS_DEPT_HTTP_TIMEOUT": "2.5",
                                     "APPEALS_DEPT_PREFETCH": "7"}).parse_args([])
    assert (args.dept, args.endpoint, args.auto, args.timeout, args.prefetch, args.retries) == (
        "zjj", "http://dept/inbox", True, 2.5, 7, 3)
    args = adapter_mod.build_parser({}).parse_args(["--with-example-endpoint", "--chain-timeout", "5"])
    assert (args.with_example_endpoint, args.auto, args.chain_timeout) == (True, False, 5.0)


# --- the forwarder against real local HTTP --------------------------------------------------


def test_forwarder_posts_with_headers_and_endpoint_deduplicates() -> None:
    server, url = serve_in_thread()
    try:
        forwarder = adapter_mod.EndpointForwarder(url, token="s3cret", timeout=5, retries=0)
        message = incoming(ASSIGNMENT)
        first = forwarder.post(message, "zjj")
        assert [a["action"] for a in first] == ["sign", "respond"]
        assert forwarder.post(message, "zjj") == first  # a repeat gets the first answer again
        assert [m["message_id"] for m in server.received] == ["m-1"]
        assert adapter_mod.plan_replies("zjj", message, first)[1].body["outcome"] == "explained"
        assert forwarder.post(incoming({"kind": "reply_result", "message_id": "r-1"}), "zjj") == []
        assert requests.get(url.rsplit("/", 2)[0] + "/health", timeout=5).status_code == 200
        headers = forwarder.headers(message, "zjj")
        assert headers["X-Appeals-Message-Id"] == "m-1" and headers["Authorization"] == "Bearer s3cret"
    finally:
        server.shutdown()
        server.server_close()


def test_forwarder_reports_an_unreachable_endpoint_as_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    forwarder = adapter_mod.EndpointForwarder(f"http://127.0.0.1:{port}/inbox", timeout=2, retries=0)
    with pytest.raises(adapter_mod.EndpointUnavailable):
        forwarder.post(incoming(ASSIGNMENT), "zjj")
    assert issubclass(adapter_mod.EndpointUnavailable, TemporaryError)


def test_example_endpoint_refuses_non_json() -> None:
    server = make_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = requests.post(server.url, data=b"\xff not json", timeout=5)
        assert response.status_code == 400
        forwarder = adapter_mod.EndpointForwarder(server.url, timeout=5, retries=0)
        bad = Incoming(body={}, message_id="bad", raw=b"[1, 2]")
        with pytest.raises(adapter_mod.EndpointRefused):
            forwarder.post(bad, "zjj")
    finally:
        server.shutdown()
        server.server_close()


def test_return_reason_codes_are_the_suites():
    """The department side keeps the same fixed list of 退单 reasons as the suite."""
    from appeals_common.reference import RETURN_REASONS
    from department_client.contract import RETURN_REASON_CODES

    assert set(RETURN_REASON_CODES) == set(RETURN_REASONS)


def test_deadlines_changed_is_a_known_kind_with_its_dates():
    from datetime import datetime

    from department_client.client import Incoming
    from department_client.contract import KNOWN_KINDS

    body = {"schema_version": 1, "kind": "deadlines_changed", "message_id": "m",
            "dept_code": "zjj", "reg_no": "WH-2027-000001", "assignment_id": "a",
            "duty": "assignment", "reason": "calendar",
            "deadlines": {"respond_by": "2027-01-08T23:59:59+08:00", "colour": "red"},
            "previous": {"respond_by": "2027-01-07T23:59:59+08:00"},
            "deadlines_provisional": False}
    message = Incoming(body=body, message_id="m")
    assert "deadlines_changed" in KNOWN_KINDS and message.known_kind
    assert message.changed_deadlines == {
        "respond_by": datetime.fromisoformat("2027-01-08T23:59:59+08:00")}
    with pytest.raises(ValueError, match="not a deadlines_changed"):
        _ = Incoming(body={"kind": "reminder"}, message_id="x").changed_deadlines


def test_adapter_replies_carry_the_trace_of_the_message_they_answer() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    client = FakeClient()
    forwarder = StubForwarder(lambda _: {"actions": [{"action": "sign"}]})
    adapter = adapter_mod.Adapter(client, forwarder, chain_timeout=30, clock=lambda: 0.0)
    message = incoming(ASSIGNMENT, tag=1)
    message.headers = {"traceparent": traceparent.encode(), "x-other": "kept out"}
    adapter.handle(message)
    assert client.trace_headers == [{"traceparent": traceparent}]
    forwarded = adapter_mod.EndpointForwarder("http://dept.example/hook").headers(message, "zjj")
    assert forwarded["traceparent"] == traceparent
    assert contract.trace_headers_of(incoming(ASSIGNMENT)) == {}
