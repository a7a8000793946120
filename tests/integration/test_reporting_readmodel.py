"""Reporting's read model on PostgreSQL: the hand-worked scenario's figures, a rebuild that
reproduces the live model exactly, consumers running concurrently (and beside a rebuild)
without losing an update, an archive from before `seq`, and the CLI."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from typing import Any

import pytest
from sqlalchemy import select, text

from appeals_common.envelope import Event
from services.reporting import readmodel, usecases
from services.reporting.models import AGGREGATE_TABLES, EVENT_ARCHIVE, PROJECTION_TABLES
from tests.conftest import PG_BASE, RUN_ID
from tests.unit.test_report_scenario import (
    TZ,
    Reporting,
    build,
    check_all,
    check_exports,
    check_q4_rates,
)

pytestmark = pytest.mark.integration

EVENTS = build().events  # one build: the same ids in every database, so models compare


def snapshot(r: Reporting) -> dict[str, list[tuple]]:
    """Every projection row, and every non-zero aggregate, in key order."""
    out = {}
    with r.store.engine.connect() as conn:
        for name, table in {**PROJECTION_TABLES, **AGGREGATE_TABLES}.items():
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            if name in AGGREGATE_TABLES:
                rows = [row for row in rows if row[-2] or row[-1]]
            out[name] = [tuple(row) for row in rows]
    return out


def deliver_concurrently(r: Reporting, events: list[Event], workers: int = 8) -> None:
    """Like the service with several workers: an event whose appeal is not there yet (it
    overtook the event creating it) fails and is tried again later."""
    pending: queue.Queue[Event] = queue.Queue()
    for event in events:
        pending.put(event)
    remaining = [len(events)]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
            try:
                event = pending.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                r.deliver([event])
            except LookupError:
                pending.put(event)  # the consumer's retry
                continue
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            with lock:
                remaining[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


@pytest.fixture(scope="module")
def sequential(databases) -> Reporting:
    r = Reporting(databases.url("rep_seq"))
    r.deliver(EVENTS)
    return r


def test_scenario_figures_on_postgresql(sequential):
    check_all(sequential)
    check_exports(sequential)


def test_redelivered_events_change_nothing(sequential):
    before = snapshot(sequential)
    sequential.deliver(EVENTS[:20])  # the inbox knows them
    assert snapshot(sequential) == before


def test_rebuild_reproduces_the_live_read_model(databases, sequential):
    r = Reporting(databases.url("rep_rebuild"))
    r.deliver(EVENTS)
    live = snapshot(r)
    assert live == snapshot(sequential)
    result = usecases.rebuild(r.runtime, r.ctx)
    assert (result["events"], result["skipped"]) == (len(EVENTS), 0)
    assert snapshot(r) == live
    # Small batches and a memory bound that forces rows out and back in between them.
    readmodel.rebuild(r.store.engine, TZ, batch=7, max_rows=5)
    assert snapshot(r) == live


def test_concurrent_consumers_lose_no_update(databases, sequential):
    r = Reporting(databases.url("rep_conc"))
    deliver_concurrently(r, EVENTS)
    assert snapshot(r) == snapshot(sequential)
    # The archive order is the order events were applied in: replaying it agrees.
    readmodel.rebuild(r.store.engine, TZ)
    assert snapshot(r) == snapshot(sequential)


def test_rebuild_beside_live_consumers(databases, sequential):
    r = Reporting(databases.url("rep_beside"))
    half = len(EVENTS) // 2
    r.deliver(EVENTS[:half])
    rebuilds: list[Any] = []

    def rebuild_twice() -> None:
        for _ in range(2):
            rebuilds.append(readmodel.rebuild(r.store.engine, TZ, batch=10))

    rebuilder = threading.Thread(target=rebuild_twice)
    rebuilder.start()
    deliver_concurrently(r, EVENTS[half:], workers=4)
    rebuilder.join(timeout=120)
    assert len(rebuilds) == 2 and all(res.skipped == 0 for res in rebuilds)
    assert snapshot(r) == snapshot(sequential)
    check_q4_rates(r)


def test_an_archive_from_before_seq_is_numbered_and_replayed(databases):
    url = databases.url("rep_old")
    r = Reporting(url)
    with r.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE event_archive"))
        conn.execute(text(
            "CREATE TABLE event_archive (event_id VARCHAR(64) PRIMARY KEY, event_type "
            "VARCHAR(64) NOT NULL, occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, producer "
            "VARCHAR(32) NOT NULL, appeal_id VARCHAR(36), body TEXT NOT NULL)"))
        conn.execute(text("CREATE INDEX ix_event_archive_appeal_id ON event_archive (appeal_id)"))
        for event in reversed(EVENTS):  # stored in no particular order
            conn.execute(text("INSERT INTO event_archive VALUES (:i, :t, :o, :p, :a, :b)"), {
                "i": event.event_id, "t": event.event_type, "o": event.occurred_at,
                "p": event.producer, "a": event.appeal_id, "b": event.to_json().decode()})
        conn.execute(text("DELETE FROM reporting_meta"))
    result = readmodel.ensure_current(r.store.engine, TZ)
    assert result is not None and (result.events, result.skipped) == (len(EVENTS), 0)
    with r.store.engine.connect() as conn:
        seqs = conn.execute(select(EVENT_ARCHIVE.c.event_id).order_by(EVENT_ARCHIVE.c.seq)
                            ).scalars().all()
    # Numbered in the order the events happened (ties broken by event id).
    assert seqs == [e.event_id for e in sorted(EVENTS, key=lambda e: (e.occurred_at,
                                                                       e.event_id))]
    check_q4_rates(r)
    assert readmodel.ensure_current(r.store.engine, TZ) is None  # current: nothing to do


def test_cli_rebuild(databases):
    pattern = f"{PG_BASE}/t{RUN_ID}_cli_{{service}}"
    databases.created.append(f"t{RUN_ID}_cli_reporting")
    r = Reporting(pattern.replace("{service}", "reporting"))
    r.deliver(EVENTS)
    before = snapshot(r)
    env = {**os.environ, "APPEALS_DATABASE_URL": pattern}
    out = subprocess.run([sys.executable, "-m", "appeals_common.cli", "reporting", "rebuild"],
                         env=env, capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(out.stdout)
    assert (report["events"], report["skipped"]) == (len(EVENTS), 0)
    assert report["events_per_s"] > 0
    assert snapshot(r) == before
