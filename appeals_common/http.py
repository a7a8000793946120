"""HTTP helpers for the services' nameko @http entrypoints: JSON in and out, auth,
errors that say what is wrong."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.wrappers import Request, Response

from appeals_common.auth import AuthError, Principal, authenticate, require
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
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"request body is not JSON: {exc}") from None


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
        elif raw.isdigit() and 1 <= int(raw) <= top:
            values[name] = int(raw)
        else:
            errors[name] = [f"an integer from 1 to {top}"]
    if errors:
        raise FieldErrors(errors)
    return Page(values["page"], values["page_size"])


def api(*roles: str) -> Callable:
    """Wrap an @http method: authenticate with one of `roles`, map errors to JSON.

    The wrapped method receives (self, request, principal, **url_args).
    """

    def decorate(func: Callable) -> Callable:
        @wraps(func)
        def wrapper(self: Any, request: Request, **kwargs: Any) -> Response:
            try:
                principal: Principal = authenticate(request.headers.get("Authorization"),
                                                    self.runtime.settings.jwt_secret)
                if roles:
                    require(principal, *roles)
                result = func(self, request, principal, **kwargs)
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
            if isinstance(result, Response):
                return result
            status, payload = result if isinstance(result, tuple) else (200, result)
            return json_response(status, payload)

        return wrapper

    return decorate


def metrics_response() -> Response:
    return Response(generate_latest(), status=200, content_type=CONTENT_TYPE_LATEST)
