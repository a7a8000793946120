"""reg_no is unique and gap-free per year under concurrent registration."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from appeals_common.clock import FixedClock
from appeals_common.db import Store
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.settings import Settings
from services.intake import usecases
from services.intake.models import Appeal, Base
from tests.intake_support import intake_context

CTX = intake_context()


def _appeal(i: int) -> dict:
    return {"channel": "sit_in", "external_id": f"ext-{i}", "title": f"诉求 {i}",
            "content": "内容", "urgency": "normal", "attachments": [],
            "enterprise": {"name": "某公司", "uscc": "91110000600037341L", "contact_name": "李四",
                           "contact_phone": "13800138000"}}


def test_concurrent_registration_from_two_replicas_is_gap_free(databases):
    url = databases.url("regno")
    stores = [Store(url, Base.metadata, producer="intake") for _ in range(2)]
    stores[0].create_schema()
    clock = FixedClock(datetime(2026, 6, 15, 2, 0, tzinfo=UTC))
    runtimes = [ServiceRuntime("intake", Settings(), s, clock) for s in stores]
    errors: list[Exception] = []

    def work(replica: int) -> None:
        for i in range(replica, 120, 2):
            try:
                with runtimes[replica].unit_of_work() as uow:
                    usecases.register(runtimes[replica], CTX, uow, _appeal(i), source_system="staff",
                                      actor="t")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with stores[0].read() as session:
        numbers = sorted(a.reg_no for a in session.query(Appeal))
    assert numbers == [f"WH-2026-{n:06d}" for n in range(1, 121)]
    for s in stores:
        s.dispose()


def test_rolled_back_registration_leaves_no_gap(databases):
    store = Store(databases.url("regno_rb"), Base.metadata, producer="intake")
    store.create_schema()
    runtime = ServiceRuntime("intake", Settings(), store,
                             FixedClock(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)))
    with runtime.unit_of_work() as uow:
        first = usecases.register(runtime, CTX, uow, _appeal(1), source_system="staff", actor="t")
    try:
        with runtime.unit_of_work() as uow:
            usecases.register(runtime, CTX, uow, _appeal(2), source_system="staff", actor="t")
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    with runtime.unit_of_work() as uow:
        third = usecases.register(runtime, CTX, uow, _appeal(3), source_system="staff", actor="t")
    # 17:00 UTC on Dec 31 is already 2027 in Asia/Shanghai: numbering restarts.
    assert first.appeal.reg_no == "WH-2027-000001"
    assert third.appeal.reg_no == "WH-2027-000002"
    store.dispose()
