"""Deadline policy (DESIGN §7) on the working-day calendar; pure functions.

Configurable per category (a named profile) and for urgent appeals, from
config/deadlines.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from appeals_common.calendar import Deadline, WorkingCalendar


class PolicyError(ValueError):
    """The deadline policy file is malformed."""


@dataclass(frozen=True)
class AssignmentDeadlines:
    sign_by: datetime
    return_by: datetime
    respond_by: datetime
    latest_respond_by: datetime  # an extension may not go past this
    # Years without official calendar data that any of the four dates was counted over.
    provisional_years: frozenset[int] = frozenset()

    @property
    def provisional(self) -> bool:
        return bool(self.provisional_years)


@dataclass(frozen=True)
class CountedDeadline:
    """A deadline counted in working days from a moment (negative: before it), kept with
    the deadline so that it can be counted again once official calendar data arrives."""

    start: datetime
    working_days: int

    def on(self, calendar: WorkingCalendar) -> Deadline:
        if self.working_days > 0:
            return calendar.add_working_days(self.start, self.working_days)
        return calendar.working_day_before(self.start, -self.working_days)


@dataclass(frozen=True)
class Limits:
    sign_working_days: int = 1
    return_working_days: int = 2
    respond_working_days: int = 5
    max_respond_working_days: int = 15


@dataclass(frozen=True)
class DeadlinePolicy:
    default: Limits = Limits()
    profiles: dict[str, Limits] | None = None
    categories: dict[str, str] | None = None  # category code -> profile name
    urgent_sign_hours: int = 2

    def limits_for(self, category: str | None) -> Limits:
        profile = (self.categories or {}).get(category or "")
        return (self.profiles or {}).get(profile, self.default) if profile else self.default

    def for_assignment(self, calendar: WorkingCalendar, assigned_at: datetime, urgency: str,
                       category: str | None = None) -> AssignmentDeadlines:
        limits = self.limits_for(category)
        respond = calendar.add_working_days(assigned_at, limits.respond_working_days)
        latest = calendar.add_working_days(assigned_at, limits.max_respond_working_days)
        returns = calendar.add_working_days(assigned_at, limits.return_working_days)
        years = respond.provisional_years | latest.provisional_years | returns.provisional_years
        if urgency == "urgent":
            # Urgent appeals are signed within hours, whatever the calendar says.
            sign_by = assigned_at + timedelta(hours=self.urgent_sign_hours)
        else:
            sign = calendar.add_working_days(assigned_at, limits.sign_working_days)
            sign_by, years = sign.at, years | sign.provisional_years
        return AssignmentDeadlines(
            sign_by=sign_by, return_by=returns.at, respond_by=respond.at,
            latest_respond_by=latest.at, provisional_years=years,
        )

    @classmethod
    def from_file(cls, path: Path, known_categories: set[str] | None = None) -> DeadlinePolicy:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"{path}: file not found") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise PolicyError(f"{path}: expected a mapping")
        unknown = set(doc) - {"default", "profiles", "categories", "urgent"}
        if unknown:
            raise PolicyError(f"{path}: unknown keys {sorted(unknown)}")
        default = _limits(path, "default", doc.get("default") or {}, Limits())
        profiles = {name: _limits(path, f"profiles.{name}", raw or {}, default)
                    for name, raw in (doc.get("profiles") or {}).items()}
        categories = {str(code): str(profile)
                      for code, profile in (doc.get("categories") or {}).items()}
        for code, profile in categories.items():
            if profile not in profiles:
                raise PolicyError(f"{path}: categories.{code} names unknown profile {profile!r}")
            if known_categories is not None and code not in known_categories:
                raise PolicyError(f"{path}: categories.{code} is not a category code")
        urgent = doc.get("urgent") or {}
        if set(urgent) - {"sign_hours"}:
            raise PolicyError(f"{path}: urgent takes only sign_hours")
        hours = urgent.get("sign_hours", 2)
        if not isinstance(hours, int) or not 1 <= hours <= 72:
            raise PolicyError(f"{path}: urgent.sign_hours must be 1..72, got {hours!r}")
        return cls(default, profiles, categories, hours)


def _limits(path: Path, where: str, raw: Any, base: Limits) -> Limits:
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: {where} must be a mapping")
    names = {f.name for f in fields(Limits)}
    unknown = set(raw) - names
    if unknown:
        raise PolicyError(f"{path}: {where} has unknown keys {sorted(unknown)}")
    for key, value in raw.items():
        if not isinstance(value, int) or not 1 <= value <= 60:
            raise PolicyError(f"{path}: {where}.{key} must be a whole number of days 1..60")
    limits = replace(base, **raw)
    if limits.max_respond_working_days < limits.respond_working_days:
        raise PolicyError(f"{path}: {where}: max_respond_working_days is below "
                          "respond_working_days")
    return limits
