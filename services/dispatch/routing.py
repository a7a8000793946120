"""科学分办: choose the lead unit and co-units for an appeal. Pure rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    name: str
    lead: str
    co: tuple[str, ...] = ()
    category: str | None = None
    industry_chain: str | None = None
    channel: str | None = None
    keywords: tuple[str, ...] = ()

    def matches(self, appeal: dict[str, Any]) -> bool:
        for attr in ("category", "industry_chain", "channel"):
            wanted = getattr(self, attr)
            if wanted is not None and appeal.get(attr) != wanted:
                return False
        if self.keywords:
            text = f"{appeal.get('title', '')} {appeal.get('content', '')}"
            if not any(word in text for word in self.keywords):
                return False
        return True


@dataclass(frozen=True)
class RoutingDecision:
    lead: str
    co: tuple[str, ...]
    rule: str

    @property
    def units(self) -> dict[str, Any]:
        return {"lead": self.lead, "co": list(self.co)}


class NoRoute(LookupError):
    pass


class Router:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def from_config(cls, raw_rules: list[dict[str, Any]]) -> Router:
        return cls([
            Rule(name=r["name"], lead=r["lead"], co=tuple(r.get("co") or ()),
                 category=r.get("category"), industry_chain=r.get("industry_chain"),
                 channel=r.get("channel"), keywords=tuple(r.get("keywords") or ()))
            for r in raw_rules
        ])

    def route(self, appeal: dict[str, Any], skip: frozenset[str] = frozenset()) -> RoutingDecision:
        """First matching rule whose lead is not skipped (a unit that returned it)."""
        for rule in self.rules:
            if rule.lead in skip or not rule.matches(appeal):
                continue
            co = tuple(unit for unit in rule.co if unit not in skip and unit != rule.lead)
            return RoutingDecision(rule.lead, co, rule.name)
        raise NoRoute("no routing rule matches and the catch-all unit was skipped")
