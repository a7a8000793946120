"""Reference data operators edit: departments, source systems, routing rules.

Loaded and validated at start; a bad file stops the service with a message naming the
file and the entry, rather than failing later on a live appeal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
# Queue names the suite itself uses under `dispatch.`; a department may not take them.
RESERVED_DEPT_CODES = frozenset({"events", "replies", "dlq"})


class RegistryError(ValueError):
    """A reference data file is missing or malformed."""


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    kind: str


@dataclass(frozen=True)
class SourceSystem:
    name: str
    label: str


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from None


def _entries(path: Path, key: str) -> list[dict[str, Any]]:
    doc = _load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise RegistryError(f"{path}: expected a top-level '{key}:' list")
    for i, entry in enumerate(doc[key]):
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: {key}[{i}] must be a mapping")
    return doc[key]


def _code(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not CODE_RE.match(value):
        raise RegistryError(
            f"{path}: {where}: {value!r} is not a code (lowercase letters, digits, '_' or '-')"
        )
    return value


def load_departments(config_dir: Path) -> dict[str, Department]:
    path = config_dir / "departments.yaml"
    result: dict[str, Department] = {}
    for i, entry in enumerate(_entries(path, "departments")):
        code = _code(path, f"departments[{i}].code", entry.get("code"))
        if code in RESERVED_DEPT_CODES:
            raise RegistryError(f"{path}: departments[{i}].code {code!r} is reserved")
        if code in result:
            raise RegistryError(f"{path}: departments[{i}].code {code!r} is listed twice")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"{path}: departments[{i}].name is required")
        result[code] = Department(code=code, name=name, kind=str(entry.get("kind", "department")))
    return result


def load_source_systems(config_dir: Path) -> dict[str, SourceSystem]:
    path = config_dir / "source_systems.yaml"
    result: dict[str, SourceSystem] = {}
    for i, entry in enumerate(_entries(path, "source_systems")):
        name = _code(path, f"source_systems[{i}].name", entry.get("name"))
        if name in result:
            raise RegistryError(f"{path}: source_systems[{i}].name {name!r} is listed twice")
        result[name] = SourceSystem(name=name, label=str(entry.get("label", name)))
    return result


def load_routing_rules(config_dir: Path, departments: dict[str, Department]) -> list[dict[str, Any]]:
    """Raw routing rules, checked against the department registry."""
    path = config_dir / "routing.yaml"
    rules = _entries(path, "rules")
    allowed = {"name", "category", "industry_chain", "channel", "keywords", "lead", "co"}
    for i, rule in enumerate(rules):
        unknown = set(rule) - allowed
        if unknown:
            raise RegistryError(f"{path}: rules[{i}] has unknown keys {sorted(unknown)}")
        if not isinstance(rule.get("name"), str):
            raise RegistryError(f"{path}: rules[{i}].name is required")
        for unit in [rule.get("lead"), *rule.get("co", [])]:
            if unit not in departments:
                raise RegistryError(
                    f"{path}: rules[{i}] ({rule.get('name')}) names unknown department {unit!r}"
                )
    if not rules or any(k in rules[-1] for k in ("category", "industry_chain", "channel", "keywords")):
        raise RegistryError(f"{path}: the last rule must be a catch-all with no conditions")
    return rules


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    parent: str | None
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class IndustryChain:
    code: str
    name: str
    lead: str
    units: tuple[str, ...]
    keywords: tuple[str, ...]


def _keywords(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(k, str) and k.strip() for k in value):
        raise RegistryError(f"{path}: {where}.keywords must be a list of words")
    return tuple(value)


def load_categories(config_dir: Path) -> dict[str, Category]:
    """The taxonomy, flattened, deepest entries first within each branch (so keyword
    matching tries specific categories before their parents)."""
    path = config_dir / "categories.yaml"
    result: dict[str, Category] = {}

    def walk(entries: Any, parent: str | None, where: str) -> None:
        if not isinstance(entries, list):
            raise RegistryError(f"{path}: {where} must be a list")
        for i, entry in enumerate(entries):
            at = f"{where}[{i}]"
            if not isinstance(entry, dict):
                raise RegistryError(f"{path}: {at} must be a mapping")
            unknown = set(entry) - {"code", "name", "keywords", "children"}
            if unknown:
                raise RegistryError(f"{path}: {at} has unknown keys {sorted(unknown)}")
            code = entry.get("code")
            if not isinstance(code, str) or not re.fullmatch(r"\d{2}(\d{2}){0,2}", code):
                raise RegistryError(f"{path}: {at}.code must be 2, 4 or 6 digits, got {code!r}")
            if parent and not code.startswith(parent):
                raise RegistryError(f"{path}: {at}.code {code} must start with its parent's {parent}")
            if code in result:
                raise RegistryError(f"{path}: {at}.code {code} is listed twice")
            if not isinstance(entry.get("name"), str):
                raise RegistryError(f"{path}: {at}.name is required")
            walk(entry.get("children") or [], code, f"{at}.children")
            result[code] = Category(code, entry["name"], parent,
                                    _keywords(path, at, entry.get("keywords")))

    walk(_entries(path, "categories"), None, "categories")
    return result


def load_industry_chains(config_dir: Path, departments: dict[str, Department]
                         ) -> dict[str, IndustryChain]:
    path = config_dir / "industry_chains.yaml"
    result: dict[str, IndustryChain] = {}
    for i, entry in enumerate(_entries(path, "industry_chains")):
        at = f"industry_chains[{i}]"
        code = _code(path, f"{at}.code", entry.get("code"))
        if code in result:
            raise RegistryError(f"{path}: {at}.code {code!r} is listed twice")
        units = entry.get("units") or []
        for unit in [entry.get("lead"), *units]:
            if unit not in departments:
                raise RegistryError(f"{path}: {at} ({code}) names unknown department {unit!r}")
        result[code] = IndustryChain(code, str(entry.get("name", code)), entry["lead"],
                                     tuple(units), _keywords(path, at, entry.get("keywords")))
    return result
