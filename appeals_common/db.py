"""Engines, the outbox and inbox tables, and the unit of work (DESIGN §6).

A state change and the messages it causes commit in one transaction: the unit of work
writes messages to the outbox table, the relay publishes them after commit. Consumers
record processed message ids in the inbox table in the same transaction as their effects.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from appeals_common import tracing
from appeals_common.envelope import EVENTS_EXCHANGE, Event
from appeals_common.identity import INBOX_KEY_MAX, bounded_key

log = logging.getLogger("appeals.db")

JSON_CONTENT_TYPE = "application/json"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """An aware datetime on every database: stored in UTC, read back with tzinfo=UTC.

    SQLite keeps no offset, so without this a stored deadline would come back naive and
    could not be compared with the aware times the domain uses.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given for a timestamp column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def reliability_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and inbox tables, created in a service's own metadata."""
    outbox = Table(
        "outbox", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("message_id", String(64), nullable=False, unique=True),
        Column("exchange", String(128), nullable=False),
        Column("routing_key", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False, default="{}"),
        Column("content_type", String(64), nullable=False, default=JSON_CONTENT_TYPE),
        Column("created_at", UtcDateTime, nullable=False),
        Column("available_at", UtcDateTime, nullable=False),
        Column("claimed_by", String(64)),
        Column("claimed_until", UtcDateTime),
        Column("published_at", UtcDateTime),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text),
    )
    Index("ix_outbox_pending", outbox.c.id,
          postgresql_where=outbox.c.published_at.is_(None),
          sqlite_where=outbox.c.published_at.is_(None))
    inbox = Table(
        "inbox", metadata,
        Column("consumer", String(64), primary_key=True),
        Column("message_id", String(INBOX_KEY_MAX), primary_key=True),
        Column("processed_at", UtcDateTime, nullable=False),
    )
    return outbox, inbox


def normalize_url(url: str) -> str:
    """Plain postgresql:// means psycopg2 here: patched by eventlet it yields to other green
    threads while waiting on the server (SQLAlchemy 2.1 would otherwise pick psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


INBOX_INSERT = text(
    "INSERT INTO inbox (consumer, message_id, processed_at) "
    "VALUES (:consumer, :message_id, :processed_at) ON CONFLICT DO NOTHING"
).bindparams(bindparam("processed_at", type_=UtcDateTime))


APPEAL_TRACE_INSERT = text(
    "INSERT INTO appeal_traces (appeal_id, traceparent, recorded_at) "
    "VALUES (:appeal_id, :traceparent, :recorded_at) ON CONFLICT DO NOTHING"
).bindparams(bindparam("recorded_at", type_=UtcDateTime))
APPEAL_TRACE_SELECT = text("SELECT traceparent FROM appeal_traces WHERE appeal_id = :appeal_id")


def appeal_trace_table(metadata: MetaData) -> Table:
    """Each appeal's trace as this service first saw it (appeals_common.tracing)."""
    if "appeal_traces" in metadata.tables:
        return metadata.tables["appeal_traces"]
    return Table(
        "appeal_traces", metadata,
        Column("appeal_id", String(64), primary_key=True),
        Column("traceparent", String(64), nullable=False),
        Column("recorded_at", UtcDateTime, nullable=False),
    )


class AppealTraces:
    """Which trace each appeal belongs to, remembered once per appeal (insert if absent,
    so the first wins and a value never changes: safe to cache in the process)."""

    CACHE_SIZE = 20_000

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def cached(self, appeal_id: str) -> str | None:
        return self._cache.get(appeal_id)

    def lookup(self, session: Session, appeal_id: str) -> str | None:
        found = self._cache.get(appeal_id)
        if found is None:
            found = session.execute(APPEAL_TRACE_SELECT, {"appeal_id": appeal_id}).scalar()
            if found is not None:
                self._keep(appeal_id, found)
        return found

    def remember(self, session: Session | Any, appeal_id: str, traceparent: str) -> None:
        session.execute(APPEAL_TRACE_INSERT, {"appeal_id": appeal_id, "traceparent": traceparent,
                                              "recorded_at": utcnow()})
        self._keep(appeal_id, traceparent)

    def _keep(self, appeal_id: str, traceparent: str) -> None:
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))  # the oldest: dicts keep insertion order
        self._cache[appeal_id] = traceparent


def ensure_database(url: str) -> None:
    """Create a PostgreSQL database if it is missing (SQLite creates files itself)."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return
    if parsed.get_backend_name() != "postgresql":
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()


def make_engine(url: str, pool_size: int = 20) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # hide_parameters: a database error's text names no SQL parameters (names, phones)
        # in logs or dead-letter headers (DESIGN §9).
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers run beside the writer; NORMAL sync is durable with WAL.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # Pre-ping: a pooled connection whose backend was killed (failover, restart,
    # pg_terminate_backend) is replaced at checkout instead of failing the first request
    # or health check after it. It costs one tiny round trip per checkout (measured in
    # tests/integration/test_reliability.py; well under a millisecond on a local server),
    # small beside the transaction it guards.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
                         pool_timeout=60, pool_pre_ping=True, hide_parameters=True)


def is_unreachable(exc: BaseException) -> bool:
    """An error that says the database cannot be reached (down, restarting, connection
    dropped, pool exhausted), as opposed to something wrong with the work."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError
                      | SQLAlchemyTimeoutError)


def unreachable_reason(engine: Engine) -> str | None:
    """None when the database answers a trivial query now, else what went wrong."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not now"
        return repr(exc)
    return None


class UnitOfWork:
    """One transaction: domain changes, outgoing messages and the inbox mark together."""

    def __init__(self, session: Session, outbox: Table, inbox: Table, producer: str,
                 now: datetime, critical: ExitStack | None = None,
                 traces: AppealTraces | None = None) -> None:
        self.session = session
        self._traces = traces
        self._critical = critical
        self._outbox = outbox
        self._inbox = inbox
        self.producer = producer
        self.now = now
        self.messages: list[dict[str, Any]] = []
        self._events_emitted = 0

    def enter_critical_section(self) -> None:
        """From here to commit, database waits do not yield to other green threads
        (see appeals_common.green): call it right before taking a hot row lock."""
        if self._critical is not None and self.session.get_bind().dialect.name == "postgresql":
            from appeals_common import green

            self._critical.enter_context(green.hold_hub())

    def first_time(self, consumer: str, message_id: str) -> bool:
        """Mark a message processed; False when it already was (a redelivery)."""
        # Plain SQL both PostgreSQL and SQLite understand: this runs for every message
        # consumed, and building the statement with the ORM cost more than running it.
        result = self.session.execute(INBOX_INSERT, {
            "consumer": consumer, "message_id": bounded_key(message_id),
            "processed_at": utcnow()})
        return result.rowcount == 1

    def send(self, exchange: str, routing_key: str, body: dict[str, Any] | bytes,
             *, message_id: str | None = None, headers: dict[str, Any] | None = None,
             content_type: str = JSON_CONTENT_TYPE) -> str:
        message_id = message_id or str(uuid.uuid4())
        payload = body if isinstance(body, bytes) else json.dumps(
            body, ensure_ascii=False, default=str).encode()
        now = utcnow()
        # The trace of the work that sends it travels with the message, through the relay.
        headers = tracing.inject(dict(headers or {}))
        self.messages.append(dict(
            message_id=message_id, exchange=exchange, routing_key=routing_key, body=payload,
            headers=json.dumps(headers, ensure_ascii=False, default=str),
            content_type=content_type, created_at=now, available_at=now, attempts=0,
        ))
        return message_id

    def emit(self, event_type: str, data: dict[str, Any], *, appeal_id: str | None = None,
             correlation_id: str | None = None) -> Event:
        # Events of one transaction are stamped a microsecond apart, in the order they
        # were emitted, so every consumer can put them back in that order.
        occurred_at = self.now + timedelta(microseconds=self._events_emitted)
        self._events_emitted += 1
        evt = Event(event_type=event_type, producer=self.producer, occurred_at=occurred_at,
                    data=data, appeal_id=appeal_id, correlation_id=correlation_id)
        reg_no = data.get("reg_no")
        tracing.annotate(reg_no=reg_no if isinstance(reg_no, str) else None)
        appeal_trace = self._appeal_trace(appeal_id)
        if appeal_trace is None:
            self.send(EVENTS_EXCHANGE, event_type, evt.to_json(), message_id=evt.event_id)
        else:  # work from elsewhere (a timer, a person) acting on the appeal joins its trace
            with tracing.in_appeal_trace(appeal_trace, f"{event_type} send",
                                         {"appeals.event_type": event_type}):
                self.send(EVENTS_EXCHANGE, event_type, evt.to_json(), message_id=evt.event_id)
        return evt

    def _appeal_trace(self, appeal_id: str | None) -> str | None:
        """The appeal's own trace when the current work is not already in it; the first
        work to act on an appeal (its registration, here) makes its trace the appeal's."""
        current = tracing.current_traceparent()
        if appeal_id is None or self._traces is None or current is None:
            return None
        known = self._traces.lookup(self.session, appeal_id)
        if known is None:
            self._traces.remember(self.session, appeal_id, current)
            return None
        return None if tracing.same_trace(known, current) else known

    def flush_messages(self) -> None:
        if self.messages:
            self.session.execute(self._outbox.insert(), self.messages)


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """Columns a newer release added to an existing table: ALTER TABLE … ADD COLUMN.

    Only additive changes, and every added column is nullable or has a server default,
    so rows written by the older release stay valid. Returns "table.column" added."""
    added = []
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} " \
                  f"{column.type.compile(engine.dialect)}"
            if column.server_default is not None:
                default = column.server_default.arg
                ddl += f" DEFAULT {default.compile(engine) if hasattr(default, 'compile') else default}"
            with engine.begin() as conn:
                conn.execute(text(ddl))
            log.warning("schema upgraded: added %s.%s", table.name, column.name)
            added.append(f"{table.name}.{column.name}")
    return added


class Store:
    """A service's database: its engine, sessions and the reliability tables."""

    def __init__(self, url: str, metadata: MetaData, producer: str, pool_size: int = 20) -> None:
        self.url = url
        self.metadata = metadata
        self.producer = producer
        self.outbox = metadata.tables["outbox"]
        self.inbox = metadata.tables["inbox"]
        appeal_trace_table(metadata)
        self.traces = AppealTraces()
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.on_commit: list[Callable[[], None]] = []

    def create_schema(self) -> None:
        ensure_database(self.url)
        self.metadata.create_all(self.engine)
        add_missing_columns(self.engine, self.metadata)

    @contextmanager
    def unit_of_work(self, now: datetime) -> Iterator[UnitOfWork]:
        with ExitStack() as critical, self.sessions() as session, session.begin():
            uow = UnitOfWork(session, self.outbox, self.inbox, self.producer, now, critical,
                             self.traces)
            yield uow
            uow.flush_messages()
            noted = tracing.take_noted_appeal_trace()
            if noted is not None and self.traces.cached(noted[0]) is None:
                self.traces.remember(session, *noted)
        if uow.messages:
            for callback in self.on_commit:
                callback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def outbox_backlog(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(self.outbox)
                .where(self.outbox.c.published_at.is_(None))
            ).scalar_one()


    def dispose(self) -> None:
        self.engine.dispose()


class OutboxRelay:
    """Claims pending outbox rows under a lease, publishes them, marks them published.

    The lease makes two replicas safe: a row is claimed by one relay at a time
    (SKIP LOCKED on PostgreSQL), and a relay killed mid-batch leaves a lease that
    expires, so another relay publishes the rows again. Consumers dedupe by message_id.
    """

    def __init__(self, store: Store, publish_batch: Callable[[list[dict[str, Any]]], set[str]],
                 batch_size: int = 200, lease: timedelta = timedelta(seconds=15)) -> None:
        self.store = store
        self.publish_batch = publish_batch  # returns the message_ids the broker returned unroutable
        self.batch_size = batch_size
        self.lease = lease
        self.relay_id = uuid.uuid4().hex[:16]

    def _claim(self) -> list[dict[str, Any]]:
        """One statement: lease the oldest pending rows nobody else holds."""
        outbox = self.store.outbox
        now = utcnow()
        pending = (
            select(outbox.c.id)
            .where(outbox.c.published_at.is_(None), outbox.c.available_at <= now,
                   (outbox.c.claimed_until.is_(None)) | (outbox.c.claimed_until < now))
            .order_by(outbox.c.id).limit(self.batch_size)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self.store.engine.begin() as conn:
            rows = conn.execute(
                update(outbox).where(outbox.c.id.in_(pending))
                .values(claimed_by=self.relay_id, claimed_until=now + self.lease)
                .returning(*outbox.c)
            ).mappings().all()
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])

    def purge_published(self, older_than: timedelta, batch: int = 5000) -> int:
        """Delete rows published before ``now - older_than``, a batch per statement so a
        big backlog never holds long locks. Unpublished rows are never touched."""
        outbox = self.store.outbox
        cutoff = utcnow() - older_than
        purged = 0
        while True:
            oldest = (select(outbox.c.id)
                      .where(outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)
                      .order_by(outbox.c.id).limit(batch).scalar_subquery())
            with self.store.engine.begin() as conn:
                count = conn.execute(delete(outbox).where(outbox.c.id.in_(oldest))).rowcount
            purged += count
            if count < batch:
                return purged

    def relay_once(self) -> int:
        """Publish one batch; returns how many rows were claimed."""
        rows = self._claim()
        if not rows:
            return 0
        outbox = self.store.outbox
        try:
            returned = self.publish_batch(rows)
        except Exception as exc:
            # Give the rows back at once; the next pass (or another replica) retries.
            with self.store.engine.begin() as conn:
                conn.execute(update(outbox).where(outbox.c.id.in_([r["id"] for r in rows]))
                             .values(claimed_until=None, claimed_by=None,
                                     attempts=outbox.c.attempts + 1, last_error=repr(exc)))
            raise
        now = utcnow()
        done = [r["id"] for r in rows if r["message_id"] not in returned]
        bounced = [r for r in rows if r["message_id"] in returned]
        with self.store.engine.begin() as conn:
            if done:
                conn.execute(update(outbox).where(outbox.c.id.in_(done))
                             .values(published_at=now, claimed_until=None))
            for row in bounced:
                # No queue is bound for it (e.g. a department not provisioned yet):
                # keep it and try again later rather than let the broker drop it.
                delay = min(300, 5 * 2 ** min(row["attempts"], 6))
                log.warning("outbox message %s to %s/%s was unroutable; retrying in %ss",
                            row["message_id"], row["exchange"], row["routing_key"], delay)
                conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                    claimed_until=None, claimed_by=None, attempts=row["attempts"] + 1,
                    available_at=now + timedelta(seconds=delay),
                    last_error="unroutable: no queue bound"))
        return len(rows)
