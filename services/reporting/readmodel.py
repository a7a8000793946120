"""The read model in the database: load the rows a batch of events needs, write back what
the projection changed (Core statements, many rows each), archive events, rebuild.

Concurrency (PostgreSQL). Live consumers run up to APPEALS_MAX_WORKERS events at once;
each first takes a shared advisory "gate" lock and an exclusive advisory lock per
entity it changes (projection.lock_keys), so two events about one appeal are applied
one after the other and a row is never overwritten with a stale copy. A rebuild takes
the gate exclusively: it waits for the events in flight, and new ones wait for it, then
carry on against the rebuilt tables. The archive row is written last, after the locks,
so the archive order (`seq`) is the order events were applied in, and a replay in that
order finds every row where the live consumer found it. On SQLite the database itself
admits one writer at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy import Connection, Engine, Table, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite

from appeals_common.envelope import Event
from services.reporting.models import (
    ACTIVITY_FACTS,
    AGGREGATE_TABLES,
    APPEAL_FACTS,
    ASSIGNMENT_FACTS,
    CLASS_PROBLEM_FACTS,
    EVENT_ARCHIVE,
    FOLLOWUP_FACTS,
    META,
    METADATA,
    ORDER_FACTS,
    PROJECTION_TABLES,
    PROJECTION_VERSION,
    REBUILT_TABLES,
    WALKTHROUGH_FACTS,
    WALKTHROUGH_ITEM_FACTS,
)
from services.reporting.projection import Changes, Projection, Row, lock_keys, needs

log = logging.getLogger("appeals.reporting")

# Advisory lock namespaces (two-int form): the rebuild gate, and one lock per entity.
GATE_NS, ENTITY_NS = 827_001, 827_002
CHUNK = 1000  # keys per IN (...) when loading

# loader -> (table, column the keys are matched on)
LOADERS: dict[str, tuple[Table, str]] = {
    "appeal": (APPEAL_FACTS, "appeal_id"),
    "assignments_of": (ASSIGNMENT_FACTS, "appeal_id"),
    "followups_of": (FOLLOWUP_FACTS, "appeal_id"),
    "class_problem": (CLASS_PROBLEM_FACTS, "class_id"),
    "order": (ORDER_FACTS, "order_no"),
    "walkthrough": (WALKTHROUGH_FACTS, "walkthrough_id"),
    "items_of": (WALKTHROUGH_ITEM_FACTS, "walkthrough_id"),
    "item": (WALKTHROUGH_ITEM_FACTS, "item_id"),
    "activity": (ACTIVITY_FACTS, "activity_id"),
}
_TABLE_NAMES = {table.name: name for name, table in PROJECTION_TABLES.items()}


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


# --- live -------------------------------------------------------------------------------

def project_live(conn: Connection, event: Event, tz: tzinfo) -> None:
    """Apply one event inside the consumer's transaction (its inbox mark is already in)."""
    lock(conn, lock_keys(event))
    projection = Projection(tz)
    load(conn, projection, [event])
    projection.apply(event)
    write(conn, projection.drain())


def archive(conn: Connection, event: Event, body: bytes | str) -> None:
    conn.execute(EVENT_ARCHIVE.insert(), {
        "event_id": event.event_id, "event_type": event.event_type,
        "occurred_at": event.occurred_at, "producer": event.producer,
        "appeal_id": event.appeal_id,
        "body": body.decode("utf-8") if isinstance(body, bytes) else body})


def lock(conn: Connection, keys: Iterable[str]) -> None:
    if not is_postgres(conn):
        return
    ordered = sorted(keys)  # one order for everybody: no deadlocks between consumers
    parts = ["pg_advisory_xact_lock_shared(:gate, 0)"]
    params: dict[str, Any] = {"gate": GATE_NS, "ns": ENTITY_NS}
    for i, key in enumerate(ordered):
        parts.append(f"pg_advisory_xact_lock(:ns, hashtext(:k{i}))")
        params[f"k{i}"] = key
    conn.execute(text("SELECT " + ", ".join(parts)), params)


# --- loading and writing -----------------------------------------------------------------

def load(conn: Connection, projection: Projection, events: Sequence[Event]) -> None:
    wanted = [pair for event in events for pair in needs(event)]
    for loader, keys in projection.to_load(wanted).items():
        table, column = LOADERS[loader]
        found: list[Row] = []
        ordered = sorted(keys)
        for i in range(0, len(ordered), CHUNK):
            found += [dict(r._mapping) for r in conn.execute(
                select(table).where(table.c[column].in_(ordered[i:i + CHUNK])))]
        projection.loaded(loader, keys, {_TABLE_NAMES[table.name]: found})


def _insert(conn: Connection) -> Any:
    return postgresql.insert if is_postgres(conn) else sqlite.insert


def write(conn: Connection, changes: Changes) -> None:
    """Upsert changed rows, then add the aggregate deltas, each in key order."""
    for name, table in PROJECTION_TABLES.items():
        rows = changes.rows.get(name)
        if rows:
            upsert(conn, table, rows)
    for name, table in AGGREGATE_TABLES.items():
        cells = changes.deltas.get(name)
        if cells:
            add(conn, table, cells)


def upsert(conn: Connection, table: Table, rows: list[Row]) -> None:
    pk = [c.name for c in table.primary_key.columns]
    ordered = sorted(rows, key=lambda r: tuple(r[k] for k in pk))
    others = [c.name for c in table.columns if not c.primary_key]
    _upsert(conn, table, ordered, pk, {name: f"EXCLUDED.{name}" for name in others})


def add(conn: Connection, table: Table, cells: dict[tuple, list[float]]) -> None:
    """Add deltas to running totals (rows created at zero when missing)."""
    keys = [c.name for c in table.primary_key.columns]
    values = [c.name for c in table.columns if not c.primary_key]
    integral = {c.name for c in table.columns if not c.primary_key
                and c.type.python_type is int}
    rows = []
    for key in sorted(cells, key=lambda k: tuple(map(str, k))):
        row = dict(zip(keys, key, strict=True))
        for name, value in zip(values, cells[key], strict=True):
            row[name] = int(value) if name in integral else value
        rows.append(row)
    _upsert(conn, table, rows, keys,
            {name: f"{table.name}.{name} + EXCLUDED.{name}" for name in values})


def _upsert(conn: Connection, table: Table, rows: list[Row], keys: list[str],
            updates: dict[str, str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET column = expression, for many rows.

    On PostgreSQL through psycopg2's execute_values, a thousand rows a statement:
    SQLAlchemy would send an upsert's executemany row by row (a round trip each) and
    compiling a many-row VALUES costs more than running it. SQLite, in process, takes
    the plain executemany."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    if is_postgres(conn):
        from psycopg2.extras import execute_values

        sql = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES %s "
               f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
               + ", ".join(f"{name} = {expr}" for name, expr in updates.items()))
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            execute_values(cursor, sql, [tuple(row[n] for n in names) for row in rows],
                           page_size=1000)
        finally:
            cursor.close()
        return
    stmt = sqlite.insert(table)
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_={
        name: text(expr.replace("EXCLUDED.", "excluded.")) for name, expr in updates.items()}),
        rows)


# --- rebuild ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RebuildResult:
    events: int
    skipped: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return round(self.events / self.seconds, 1) if self.seconds else 0.0

    def view(self) -> dict[str, Any]:
        return {"events": self.events, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "events_per_s": self.events_per_s}


def archived_event(row: Any) -> Event:
    """An archived event, without validating it again (it was when it came in)."""
    doc = json.loads(row.body)
    return Event(event_type=row.event_type, producer=row.producer, occurred_at=row.occurred_at,
                 data=doc.get("data") or {}, appeal_id=row.appeal_id,
                 correlation_id=doc.get("correlation_id"), event_id=row.event_id,
                 schema_version=doc.get("schema_version", 1))


def rebuild(engine: Engine, tz: tzinfo, *, batch: int = 5000, max_rows: int = 250_000,
            only_if_outdated: bool = False) -> RebuildResult | None:
    """Drop every projection, replay the archive in the order it was applied, in one
    transaction. Memory is bounded: past `max_rows` rows in memory they are written
    and forgotten. Returns None when `only_if_outdated` and the model is current."""
    started = time.perf_counter()
    a = EVENT_ARCHIVE.c
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:gate, 0)"), {"gate": GATE_NS})
        if only_if_outdated and projection_version(conn) == PROJECTION_VERSION:
            return None
        METADATA.drop_all(conn, tables=REBUILT_TABLES)
        METADATA.create_all(conn, tables=REBUILT_TABLES)
        projection = Projection(tz, complete=True)
        last, events, skipped = 0, 0, 0
        columns = (a.seq, a.event_id, a.event_type, a.occurred_at, a.producer, a.appeal_id,
                   a.body)
        while True:
            rows = conn.execute(select(*columns).where(a.seq > last).order_by(a.seq)
                                .limit(batch)).all()
            if not rows:
                break
            last = rows[-1].seq
            batch_events = [archived_event(row) for row in rows]
            load(conn, projection, batch_events)
            for event in batch_events:
                try:
                    projection.apply(event)
                except (LookupError, KeyError, TypeError, ValueError) as exc:
                    skipped += 1
                    log.warning("rebuild skipped %s %s: %r", event.event_type, event.event_id,
                                exc)
            events += len(rows)
            if projection.size() > max_rows:
                write(conn, projection.drain())
                projection.evict()
        write(conn, projection.drain())
        set_projection_version(conn, PROJECTION_VERSION)
    return RebuildResult(events, skipped, time.perf_counter() - started)


def projection_version(conn: Connection) -> int | None:
    value = conn.execute(select(META.c.value).where(META.c.key == "projection_version")
                         ).scalar_one_or_none()
    return int(value) if value is not None else None


def set_projection_version(conn: Connection, version: int) -> None:
    stmt = _insert(conn)(META).values(key="projection_version", value=str(version))
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                            set_={"value": stmt.excluded.value}))


def upgrade_archive(engine: Engine) -> bool:
    """An archive from before `seq` existed gets it, in the order events happened.
    Returns True when it did something."""
    if "seq" in {c["name"] for c in inspect(engine).get_columns("event_archive")}:
        return False
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:gate, 0)"), {"gate": GATE_NS})
        if "seq" in {c["name"] for c in inspect(conn).get_columns("event_archive")}:
            return False  # another replica did it while we waited
        conn.execute(text("CREATE TABLE event_archive_v1 AS SELECT event_id, event_type, "
                          "occurred_at, producer, appeal_id, body FROM event_archive"))
        conn.execute(text("DROP TABLE event_archive"))
        EVENT_ARCHIVE.create(conn)
        conn.execute(text("INSERT INTO event_archive (event_id, event_type, occurred_at, "
                          "producer, appeal_id, body) SELECT event_id, event_type, occurred_at, "
                          "producer, appeal_id, body FROM event_archive_v1 "
                          "ORDER BY occurred_at, event_id"))
        conn.execute(text("DROP TABLE event_archive_v1"))
    log.warning("event_archive upgraded: events numbered in the order they happened")
    return True


def ensure_current(engine: Engine, tz: tzinfo) -> RebuildResult | None:
    """On start: bring an older archive up to date and rebuild a read model written by an
    older projection (PROJECTION_VERSION), so a new release never reads stale tables."""
    upgrade_archive(engine)
    with engine.connect() as conn:
        current = projection_version(conn) == PROJECTION_VERSION
    if current:
        return None
    result = rebuild(engine, tz, only_if_outdated=True)
    if result is not None:
        log.warning("read model rebuilt for projection version %s: %s", PROJECTION_VERSION,
                    result.view())
    return result
