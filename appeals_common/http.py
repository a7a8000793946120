"""HTTP helpers for the services' nameko @http entrypoints: JSON in and out, auth,
errors that say what is wrong."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any

from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.wrappers import Request, Response

from appeals_common.auth import AuthError, Principal, authenticate, require
from appeals_common.input_guard import JsonRefused, escape_hidden, hidden_character_error, parse_json
from appeals_common.schemas import errors_by_field

log = logging.getLogger("appeals.http")

MAX_REQUEST_BYTES = 256 * 1024


class HttpError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class NotFound(HttpError):
    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class FieldErrors(HttpError):
    """Input that passed its schema but breaks a rule needing stored data, by field."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(422, "invalid input", errors)
        self.errors = errors

    def __str__(self) -> str:
        return json.dumps(self.errors, ensure_ascii=False)


class Conflict(HttpError):
    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(409, message, errors)


def json_response(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False, default=str), status=status,
                    mimetype="application/json")


MAX_PAGE_SIZE = 500


def read_json(request: Request) -> Any:
    if request.content_length and request.content_length > MAX_REQUEST_BYTES:
        raise HttpError(413, f"request body larger than {MAX_REQUEST_BYTES} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > MAX_REQUEST_BYTES:
        raise HttpError(413, f"request body larger than {MAX_REQUEST_BYTES} bytes")
    try:
        return parse_json(raw)  # no deeper than MAX_JSON_DEPTH, checked before parsing
    except JsonRefused as exc:
        raise HttpError(400, f"request body {exc}") from None


@dataclass(frozen=True)
class Page:
    """`?page=&page_size=` of a list endpoint: a client pages on until a page comes back
    shorter than page_size."""

    page: int = 1
    size: int = MAX_PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


def page_args(request: Request) -> Page:
    errors: dict[str, list[str]] = {}
    values = {}
    for name, default, top in (("page", 1, 1_000_000), ("page_size", MAX_PAGE_SIZE, MAX_PAGE_SIZE)):
        raw = request.args.get(name)
        if raw is None:
            values[name] = default
        # ASCII digits only ("²".isdigit() is true), and few enough for int().
        elif raw.isascii() and raw.isdigit() and len(raw) <= len(str(top)) \
                and 1 <= int(raw) <= top:
            values[name] = int(raw)
        else:
            errors[name] = [f"an integer from 1 to {top}"]
    if errors:
        raise FieldErrors(errors)
    return Page(values["page"], values["page_size"])


def check_url_text(request: Request, url_args: dict[str, Any]) -> None:
    """Path and query parameters go to the database and into logs as they are: refuse
    control and other hidden characters in them (as the schemas do in bodies), by name."""
    errors: dict[str, list[str]] = {}
    params = [(name, value) for name, value in url_args.items() if isinstance(value, str)]
    params += list(request.args.items(multi=True))
    for name, value in params:
        error = hidden_character_error(name) or hidden_character_error(value)
        if error:
            errors.setdefault(escape_hidden(name), []).append(error)
    if errors:
        raise FieldErrors(errors)


def internal_error(request: Request, func: Callable) -> Response:
    """An unexpected exception: logged in full under a new error id, answered with that
    id only - no exception text, no traceback reaches the client."""
    error_id = str(uuid.uuid4())
    log.exception("internal error %s in %s %s (%s)", error_id, request.method,
                  escape_hidden(request.path), func.__qualname__)
    return json_response(500, {"error": "internal error", "error_id": error_id})


def api(*roles: str) -> Callable:
    """Wrap an @http method: authenticate with one of `roles`, map errors to JSON.

    The wrapped method receives (self, request, principal, **url_args). An exception it
    does not expect is a 500 `{"error": "internal error", "error_id": ...}`, logged with
    the same id.
    """

    def decorate(func: Callable) -> Callable:
        @wraps(func)
        def wrapper(self: Any, request: Request, **kwargs: Any) -> Response:
            try:
                settings = self.runtime.settings
                principal: Principal = authenticate(
                    request.headers.get("Authorization"), settings.jwt_secret,
                    max_lifetime=timedelta(hours=settings.token_max_hours))
                if roles:
                    require(principal, *roles)
                check_url_text(request, kwargs)
                result = func(self, request, principal, **kwargs)
                if isinstance(result, Response):
                    return result
                status, payload = result if isinstance(result, tuple) else (200, result)
                return json_response(status, payload)
            except AuthError as exc:
                return json_response(exc.status, {"error": exc.message})
            except ValidationError as exc:
                return json_response(422, {"error": "invalid input",
                                           "errors": errors_by_field(exc)})
            except HttpError as exc:
                body: dict[str, Any] = {"error": exc.message}
                if exc.errors:
                    body["errors"] = exc.errors
                return json_response(exc.status, body)
            except Exception:  # nameko would answer with the exception's text
                return internal_error(request, func)

        return wrapper

    return decorate


def metrics_response() -> Response:
    return Response(generate_latest(), status=200, content_type=CONTENT_TYPE_LATEST)
