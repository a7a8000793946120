"""Bearer tokens with a role (DESIGN §9): signed JWTs every service can verify alone."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from appeals_common.reference import ROLES

ISSUER = "appeals-suite"
# `appeals token` issues tokens for a working day; services refuse any whose lifetime
# (exp - iat) exceeds APPEALS_TOKEN_MAX_HOURS (default 12).
DEFAULT_TOKEN_TTL = timedelta(hours=8)
# Hosts' clocks differ a little: a token is good this long past its `exp` (and before `iat`).
CLOCK_SKEW_SECONDS = 60


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    dept_code: str | None = None

    @property
    def is_bureau(self) -> bool:
        return self.role in ("bureau_admin", "bureau_staff")


def issue_token(secret: str, subject: str, role: str, dept_code: str | None = None,
                ttl: timedelta = DEFAULT_TOKEN_TTL) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if (role == "department") != bool(dept_code):
        raise ValueError("a department token needs dept_code, and only a department token")
    now = datetime.now(UTC)
    claims = {"sub": subject, "role": role, "iss": ISSUER, "iat": now, "exp": now + ttl}
    if dept_code:
        claims["dept"] = dept_code
    return jwt.encode(claims, secret, algorithm="HS256")


def authenticate(authorization: str | None, secret: str,
                 max_lifetime: timedelta | None = None) -> Principal:
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError(401, "missing bearer token")
    token = authorization.removeprefix("Bearer ").strip()
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER,
                            leeway=CLOCK_SKEW_SECONDS,
                            options={"require": ["sub", "role", "exp", "iat"]})
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None
    _check_lifetime(claims, max_lifetime)
    if claims["role"] not in ROLES:
        raise AuthError(401, "token has an unknown role")
    dept_code = _department_of(claims)
    return Principal(subject=claims["sub"], role=claims["role"], dept_code=dept_code)


@functools.cache
def known_departments() -> frozenset[str]:
    """The department codes of the registry (config/departments.yaml), read once per process."""
    from appeals_common.registries import load_departments
    from appeals_common.settings import load_settings

    return frozenset(load_departments(load_settings().config_dir))


def _department_of(claims: dict) -> str | None:
    """A department token must name a known department: without one, every view filtered
    by department would show every department's share. Other roles carry none."""
    if claims["role"] != "department":
        return None
    dept = claims.get("dept")
    if not isinstance(dept, str) or not dept:
        raise AuthError(403, "department token names no department (claim 'dept')")
    if dept not in known_departments():
        raise AuthError(403, f"department token names an unknown department {dept[:48]!r}")
    return dept


def _check_lifetime(claims: dict, max_lifetime: timedelta | None) -> None:
    """Refuse a token whose `exp` lies further out than the longest allowed lifetime. PyJWT
    has already refused an `iat` in the future (beyond the skew), so exp - iat bounds how
    far ahead of now `exp` may be, without reading the clock here."""
    if max_lifetime is None:
        from appeals_common.settings import token_max_hours

        max_lifetime = timedelta(hours=token_max_hours())
    try:
        lifetime = float(claims["exp"]) - float(claims["iat"])
    except (TypeError, ValueError):
        raise AuthError(401, "invalid token: exp and iat must be numbers") from None
    if lifetime > max_lifetime.total_seconds():
        raise AuthError(401, "token lifetime longer than allowed")


def require(principal: Principal, *roles: str) -> Principal:
    if principal.role not in roles:
        raise AuthError(403, f"role {principal.role} may not do this; needs one of {', '.join(roles)}")
    return principal
