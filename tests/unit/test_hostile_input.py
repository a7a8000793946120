"""Hostile input (DESIGN §9): nesting, control and bidi characters, 500 bodies, /health,
page bounds. No broker, no database."""

from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.wrappers import Request

from appeals_common.auth import issue_token
from appeals_common.http import (
    MAX_REQUEST_BYTES,
    FieldErrors,
    HttpError,
    NotFound,
    api,
    page_args,
    read_json,
)
from appeals_common.input_guard import (
    MAX_JSON_DEPTH,
    JsonRefused,
    escape_hidden,
    hidden_character_error,
    json_depth,
    json_depth_exceeds,
    parse_json,
)
from appeals_common.schemas import (
    REPLY_SCHEMAS,
    ActivitySchema,
    ExtensionDecisionSchema,
    FollowupSchema,
    InboundAppealSchema,
    ItemClosureSchema,
    OnSpotAppealSchema,
    OverrideSchema,
    PatrolPlanSchema,
    PatrolReportSchema,
    ReclassifySchema,
    ReturnDecisionSchema,
    SearchSchema,
    StaffAppealSchema,
    StrictSchema,
    UnreachableClosureSchema,
    WalkthroughSchema,
    WithdrawSchema,
    errors_by_field,
)
from appeals_common.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's deprecation notice, through nameko
    from appeals_common.service_base import BaseService
    from services.supervision import class_problem_usecases

SECRET = "s" * 40

# --- (1) nesting ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ("{}", 1), ('{"a": [1, {"b": []}]}', 4),
    ('["[[[[", "{{{{"]', 1),                 # brackets inside strings do not count
    (r'["\"[[[[", "\\", [[]]]', 3),          # nor after escaped quotes and backslashes
    ('{"k[": {"}": [["]"]]}}', 4),           # in keys neither
    ('"[[[[', 0),                             # an unterminated string runs to the end
    ("[" * 100 + "]" * 100, 100),
])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert json_depth(text) == depth
    assert json_depth_exceeds(text, depth) is False
    if depth:
        assert json_depth_exceeds(text, depth - 1) is True


def test_the_limit_is_32_levels_and_the_33rd_is_refused():
    assert MAX_JSON_DEPTH == 32
    assert parse_json("[" * 32 + "]" * 32) is not None
    assert parse_json(json.dumps({"a": [{"b": "[" * 1000}]}))["a"][0]["b"] == "[" * 1000
    for deep in ("[" * 33 + "]" * 33, '{"a":' * 33 + "1" + "}" * 33):
        with pytest.raises(JsonRefused, match=r"more than 32 levels deep \(the limit is 32\)"):
            parse_json(deep)


def test_hundred_thousand_levels_are_refused_without_recursion():
    for body in (b"[" * 100_000 + b"]" * 100_000, b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(JsonRefused, match="32 levels"):
            parse_json(body)


def test_depth_check_is_linear_on_adversarial_text():
    # Many brackets, many quotes that never close, many escapes: no quadratic scan.
    samples = ["[]" * (MAX_REQUEST_BYTES // 2), '"\\"' * (MAX_REQUEST_BYTES // 3),
               '["' + '\\"' * (MAX_REQUEST_BYTES // 2), "[" * MAX_REQUEST_BYTES]
    for text in samples:
        started = time.perf_counter()
        json_depth_exceeds(text)
        assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("body", "message"), [
    (b"\xff\xfe", "is not UTF-8"),
    (b"{", "is not JSON: "),
    (b'{"a": NaN}', "is not JSON: NaN is not a JSON number"),
    (b"[Infinity]", "is not JSON: Infinity is not a JSON number"),
    (b'{"a": ' + b"1" * 5000 + b"}", "is not JSON: a number too long to read"),
])
def test_other_unreadable_bodies_are_refused_not_raised(body, message):
    with pytest.raises(JsonRefused) as refused:
        parse_json(body)
    assert str(refused.value).startswith(message)


def request(body: bytes = b"", query: str = "", token: str | None = None,
            path: str = "/x") -> Request:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Request.from_values(path=path, query_string=query, data=body,
                               content_type="application/json", headers=headers)


def test_read_json_answers_deep_nesting_with_400_naming_the_limit():
    with pytest.raises(HttpError) as err:
        read_json(request(b"[" * 100_000 + b"]" * 100_000))
    assert err.value.status == 400
    assert err.value.message == ("request body nests arrays and objects more than 32 levels "
                                 "deep (the limit is 32)")
    with pytest.raises(HttpError, match="request body is not UTF-8"):
        read_json(request(b"\xff"))
    assert read_json(request(json.dumps({"a": [[1]]}).encode())) == {"a": [[1]]}


# --- (2) hidden characters ---------------------------------------------------------------------

ALLOWED_TEXT = ["中文\n第二行", "tab\tseparated", "windows\r\nline", "👨\u200d👩\u200d👧 family",
                "zero\u200bwidth", "soft\u00adhyphen", "Ünïcödé", "  spaces  ", "العربية", ""]
REFUSED = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
           "\r", "\u061c", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d",
           "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u2028", "\u2029", "\ufff9",
           "\ufffb", "\ud800", "\udfff"]


@pytest.mark.parametrize("text", ALLOWED_TEXT)
def test_printable_text_tabs_and_line_breaks_are_allowed(text):
    assert hidden_character_error(text) is None
    assert escape_hidden(text) == text


@pytest.mark.parametrize("char", REFUSED, ids=lambda c: f"U+{ord(c):04X}")
def test_hidden_characters_are_named_by_code_point_and_position(char):
    error = hidden_character_error(f"ab{char}c")
    assert error is not None
    assert f"(U+{ord(char):04X}" in error and "at character 3" in error
    assert char not in error, "the message names the character, never writes it"
    assert escape_hidden(f"ab{char}c") == f"ab\\u{ord(char):04x}c"


def test_the_kinds_are_told_apart():
    assert hidden_character_error("x\x00").startswith("contains a control character (U+0000)")
    assert "carriage return not followed by a line feed" in hidden_character_error("a\rb")
    assert "bidirectional formatting character (U+202E RIGHT-TO-LEFT OVERRIDE)" in \
        hidden_character_error("\u202e")
    assert "line or paragraph separator" in hidden_character_error("\u2028")
    assert "lone surrogate" in hidden_character_error("\udc00")
    assert hidden_character_error("a\r\n\r\nb") is None


# Every schema that loads what others send (HTTP bodies and queries, RPC, the bus).
INPUT_SCHEMAS: list[type[Schema]] = [
    InboundAppealSchema, StaffAppealSchema, OnSpotAppealSchema, ReclassifySchema,
    WithdrawSchema, ActivitySchema, SearchSchema, *REPLY_SCHEMAS.values(),
    ReturnDecisionSchema, ExtensionDecisionSchema, OverrideSchema, FollowupSchema,
    UnreachableClosureSchema, WalkthroughSchema, ItemClosureSchema, PatrolPlanSchema,
    PatrolReportSchema, class_problem_usecases.ConfirmSchema, class_problem_usecases.ResolveSchema,
    class_problem_usecases.CloseSchema, class_problem_usecases.DismissSchema,
]


def all_strict_schemas() -> list[type[Schema]]:
    found: list[type[Schema]] = []
    todo = [StrictSchema]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in found and sub.__module__.startswith(("appeals_common", "services")):
                found.append(sub)
                todo.append(sub)
    return found


def test_every_input_schema_is_strict():
    assert all(issubclass(cls, StrictSchema) for cls in INPUT_SCHEMAS)
    assert set(INPUT_SCHEMAS) <= set(all_strict_schemas())


StringCase = tuple[str, Callable[[str], Any], Callable[[str], str], fields.Field]


def string_fields(schema: Schema, wrap: Callable[[Any], Any] = lambda v: v,
                  prefix: str = "") -> Iterator[StringCase]:
    """(where, body with the value there, the error key for the value, the field) for
    every string a body of `schema` can carry: nested schemas, lists and dict keys too."""
    for name, field in schema.load_fields.items():
        key = field.data_key or name
        yield from field_cases(field, f"{prefix}{key}",
                               lambda v, key=key, wrap=wrap: wrap({key: v}))


def field_cases(field: fields.Field, where: str, wrap: Callable[[Any], Any]
                ) -> Iterator[StringCase]:
    if isinstance(field, fields.String):
        yield where, wrap, lambda v: where, field
    elif isinstance(field, fields.Nested):
        yield from string_fields(field.schema, wrap, f"{where}.")
    elif isinstance(field, fields.List):
        yield from field_cases(field.inner, f"{where}.0", lambda v: wrap([v]))
    elif isinstance(field, fields.Dict):
        if isinstance(field.key_field, fields.String):
            yield (f"{where}{{key}}", lambda v: wrap({v: 1}),
                   lambda v: f"{where}.{escape_hidden(v)}.key", field.key_field)
        if isinstance(field.value_field, fields.String):
            yield f"{where}{{}}", lambda v: wrap({"k": v}), lambda v: f"{where}.k.value", \
                field.value_field


CASES = [(cls, where, build, key, field) for cls in all_strict_schemas()
         for where, build, key, field in string_fields(cls())]


def load_errors(cls: type[Schema], body: Any) -> dict[str, list[str]]:
    try:
        cls().load(body)
    except ValidationError as exc:
        return errors_by_field(exc)
    return {}


def test_the_cases_cover_every_input_schema_and_nested_and_listed_strings():
    covered = {cls for cls, *_ in CASES}
    assert set(INPUT_SCHEMAS) <= covered
    wheres = {f"{cls.__name__}.{where}" for cls, where, *_ in CASES}
    assert {"InboundAppealSchema.enterprise.contact_name", "StaffAppealSchema.attachments.0.name",
            "PatrolReportSchema.class_problems.0", "PatrolReportSchema.service_items.0.remarks",
            "WalkthroughSchema.scores{key}", "WalkthroughSchema.findings.0.description",
            "OverrideSchema.co.0", "ConfirmSchema.units.0", "RespondReplySchema.reply",
            "SearchSchema.q", "FeedbackReplySchema.order_no"} <= wheres


@pytest.mark.parametrize(("cls", "where", "build", "key", "field"), CASES,
                         ids=[f"{c.__name__}.{w}" for c, w, *_ in CASES])
def test_every_string_field_refuses_nul_and_bidi_and_takes_chinese_lines(cls, where, build,
                                                                         key, field):
    for char in ("\x00", "\u202e"):
        value = f"中文{char}x"
        errors = load_errors(cls, build(value))
        assert any(m.startswith("contains ") and f"(U+{ord(char):04X}" in m
                   for m in errors.get(key(value), [])), (where, errors)
    text = "中文\n第二行"
    errors = load_errors(cls, build(text)).get(key(text), [])
    assert not any(m.startswith("contains ") for m in errors), errors
    only_length = all(isinstance(v, validate.Length) and (v.max is None or v.max >= len(text))
                      for v in field.validators)
    if only_length and type(field) is fields.String:  # free text: no complaint at all
        assert errors == []


def test_a_new_strict_schema_gets_the_rule_without_asking():
    class Fresh(StrictSchema):
        note = fields.String()
        tags = fields.List(fields.String())
        labels = fields.Dict(keys=fields.String(), values=fields.String())
        pair = fields.Tuple((fields.Integer(), fields.String()))

    assert Fresh().load({"note": "好\r\n", "tags": ["a"], "labels": {"k": "v"},
                         "pair": [1, "x"]})
    with pytest.raises(ValidationError) as err:
        Fresh().load({"note": "\x00", "tags": ["ok", "\u2066"], "labels": {"\u202e": "v",
                                                                           "k": "\x07"},
                      "pair": [1, "\x1b"]})
    errors = errors_by_field(err.value)
    assert set(errors) == {"note", "tags.1", "labels.\\u202e.key", "labels.k.value", "pair.1"}
    assert all(m[0].startswith("contains ") for m in errors.values())


def test_lone_carriage_return_is_refused_and_crlf_kept():
    errors = load_errors(WithdrawSchema, {"reason": "line\rover"})
    assert "carriage return" in errors["reason"][0]
    assert WithdrawSchema().load({"reason": "第一行\r\n第二行"})["reason"] == "第一行\r\n第二行"


def test_an_unknown_field_named_with_hidden_characters_is_reported_escaped():
    errors = load_errors(WithdrawSchema, {"reason": "x", "evil\u202efield": 1})
    assert errors == {"evil\\u202efield": ["Unknown field."]}


# --- (3) 500 bodies ----------------------------------------------------------------------------

class FakeService:
    runtime = SimpleNamespace(settings=Settings(jwt_secret=SECRET))

    def __init__(self, failure: Exception | None = None, result: Any = None) -> None:
        self.failure, self.result = failure, result

    @api("bureau_staff")
    def handler(self, request: Request, principal: Any, **url_args: Any) -> Any:
        if self.failure is not None:
            raise self.failure
        return self.result


def staff_token() -> str:
    return issue_token(SECRET, "alice", "bureau_staff")


def test_an_unexpected_exception_is_a_generic_500_with_an_error_id_logged(caplog):
    secret_text = "connection to db.internal:5432 failed for user appeals password=hunter2"
    service = FakeService(RuntimeError(secret_text))
    with caplog.at_level(logging.ERROR, logger="appeals.http"):
        response = service.handler(request(token=staff_token(), path="/appeals/WH-1"))
    assert response.status_code == 500
    body = json.loads(response.get_data())
    assert set(body) == {"error", "error_id"} and body["error"] == "internal error"
    uuid.UUID(body["error_id"])
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)
    (record,) = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert record.exc_info and record.exc_info[1] is service.failure
    assert "/appeals/WH-1" in record.getMessage()


def test_a_result_that_cannot_be_written_is_a_500_too():
    circular: list = []
    circular.append(circular)
    response = FakeService(result=circular).handler(request(token=staff_token()))
    assert response.status_code == 500
    assert set(json.loads(response.get_data())) == {"error", "error_id"}


@pytest.mark.parametrize(("failure", "status"), [
    (NotFound("no appeal WH-2026-000001"), 404),
    (FieldErrors({"page": ["an integer from 1 to 1000000"]}), 422),
    (ValidationError({"reason": ["Missing data for required field."]}), 422),
])
def test_expected_errors_keep_their_status_and_message(failure, status):
    response = FakeService(failure).handler(request(token=staff_token()))
    assert response.status_code == status
    assert "error_id" not in json.loads(response.get_data())


def test_authentication_still_comes_first():
    response = FakeService(RuntimeError("x")).handler(request(query="state=%00"))
    assert response.status_code == 401


@pytest.mark.parametrize(("query", "url_args", "name"), [
    ("state=open%00", {}, "state"),
    ("q=%E2%80%AE", {}, "q"),
    ("", {"reg_no": "WH-2026-\x00"}, "reg_no"),
    ("", {"reg_no": "WH\u2066-2026"}, "reg_no"),
    ("a%00b=1", {}, "a\\u0000b"),
])
def test_hidden_characters_in_path_and_query_parameters_are_422_by_name(query, url_args, name):
    service = FakeService(result={"ok": True})
    response = service.handler(request(query=query, token=staff_token()), **url_args)
    assert response.status_code == 422
    body = json.loads(response.get_data())
    assert body["error"] == "invalid input"
    assert body["errors"][name][0].startswith("contains ")
    ok = service.handler(request(query="q=%E4%B8%AD%E6%96%87%09x", token=staff_token()),
                         reg_no="WH-2026-000001")
    assert ok.status_code == 200


# --- (4) /health -------------------------------------------------------------------------------

def test_health_down_says_unreachable_and_logs_the_detail(caplog):
    class Engine:
        def connect(self):
            raise OSError("could not connect to db.internal:5432 as appeals (password=hunter2)")

    fake = SimpleNamespace(runtime=SimpleNamespace(service="intake",
                                                   store=SimpleNamespace(engine=Engine())))
    with caplog.at_level(logging.WARNING, logger="appeals.metrics"):
        response = BaseService.health(fake, request())
    assert response.status_code == 503
    assert json.loads(response.get_data()) == {"status": "degraded", "service": "intake",
                                                "down": ["database"]}
    assert "db.internal" in caplog.text


# --- (5) bounded pages -------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["0", "1000001", "²", "١٢", "9" * 5000, "-1", "1.5", " 1", ""])
def test_page_args_refuse_what_is_not_a_small_ascii_number(raw):
    with pytest.raises(FieldErrors) as err:
        page_args(request(query=f"page={raw}"))
    assert err.value.errors == {"page": ["an integer from 1 to 1000000"]}


def test_page_args_bound_the_offset():
    page = page_args(request(query="page=1000000&page_size=500"))
    assert page.offset == 999_999 * 500
    with pytest.raises(FieldErrors):
        page_args(request(query="page_size=501"))


@pytest.mark.parametrize("params", [
    {"page": "100001"}, {"page": "0"}, {"page_size": "101"}, {"page_size": "0"},
    {"page": "²"}, {"page": "9" * 5000}, {"page": "1e9"}, {"page_size": "-5"},
])
def test_search_offset_and_limit_are_bounded(params):
    with pytest.raises(ValidationError) as err:
        SearchSchema().load(params)
    assert set(errors_by_field(err.value)) == set(params)


def test_search_bounds_hold_at_the_edges():
    data = SearchSchema().load({"page": "100000", "page_size": "100"})
    assert (data["page"] - 1) * data["page_size"] < 10_000_000


@pytest.mark.parametrize("raw", ["²", "٣", "1" * 5000, "-1", "1.5", " 7"])
def test_whole_numbers_are_ascii_digits_of_sane_length(raw):
    from appeals_common.input_guard import whole_number

    assert whole_number(raw) is None
    assert whole_number("2026") == 2026


@pytest.mark.parametrize("raw", ["²⁰²⁶", "2" * 5000])
def test_year_and_page_parameters_refuse_odd_digits_with_422(raw):
    from appeals_common.http import FieldErrors
    from services.reporting import usecases as reporting

    with pytest.raises(FieldErrors):
        reporting._bounded_int({"limit": raw}, "limit", 100, 1, 1000)
