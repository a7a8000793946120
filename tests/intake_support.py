"""Building intake's context and runtime in-process, for tests of its service layer."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from appeals_common.clock import FixedClock
from appeals_common.db import Store
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.registries import (
    load_categories,
    load_departments,
    load_industry_chains,
    load_source_systems,
)
from appeals_common.settings import Settings
from services.intake.classification import Classifier
from services.intake.models import Base
from services.intake.usecases import IntakeContext

CONFIG = Path(__file__).resolve().parent.parent / "config"


def intake_context() -> IntakeContext:
    departments = load_departments(CONFIG)
    return IntakeContext(
        sources=frozenset(load_source_systems(CONFIG)), departments=frozenset(departments),
        classifier=Classifier(load_categories(CONFIG), load_industry_chains(CONFIG, departments)))


def intake_runtime(url: str, now: datetime) -> ServiceRuntime:
    store = Store(url, Base.metadata, producer="intake")
    store.create_schema()
    return ServiceRuntime("intake", Settings(), store, FixedClock(now))


def staff_appeal(**overrides) -> dict:
    body = {"channel": "sit_in", "title": "施工许可办理慢", "content": "项目施工许可提交两周未批",
            "enterprise": {"name": "昆明某建设有限公司", "uscc": "91110000600037341L",
                           "contact_name": "李四", "contact_phone": "13800138000"}}
    body.update(overrides)
    return body
