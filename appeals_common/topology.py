"""RabbitMQ topology the suite owns (DESIGN §5, §6), and a command to apply it.

Departments and source systems never declare anything: every exchange, queue and
binding they use is declared here from the registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appeals_common.envelope import EVENTS_EXCHANGE
from appeals_common.registries import Department, SourceSystem

INBOUND_EXCHANGE = "appeals.inbound"
RECEIPTS_EXCHANGE = "appeals.receipts"
DISPATCH_EXCHANGE = "appeals.dispatch"
REPLIES_EXCHANGE = "appeals.replies"
REJECTED_QUEUE = "appeals.inbound.rejected"



def retry_exchange(delay_ms: int) -> str:
    """A delay queue (and its fanout exchange): a failing message waits here, then the
    broker dead-letters it back to the queue it came from (its routing key is that
    queue's name)."""
    return f"appeals.retry.{delay_ms}ms"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def dept_queue(dept_code: str) -> str:
    return f"dispatch.{dept_code}"


def receipts_queue(source_system: str) -> str:
    return f"receipts.{source_system}"


# The queues the services consume, with their bindings. Each gets a dead-letter queue.
SERVICE_QUEUES: dict[str, list[tuple[str, str]]] = {
    "intake.inbound": [(INBOUND_EXCHANGE, "appeal.submit.*")],
    # Intake keeps the register's state and timeline from the other services' events;
    # its own it applies as it makes them.
    "intake.events": [(EVENTS_EXCHANGE, key) for key in (
        "appeal.dispatched", "assignment.*", "extension.*", "appeal.responded",
        "appeal.reminded", "appeal.overdue", "appeal.supervised", "supervision_order.*",
        "followup.*", "appeal.reopened", "appeal.closed", "class_problem.*",
        "deadline.recomputed")],
    "dispatch.events": [
        (EVENTS_EXCHANGE, "appeal.registered"),
        (EVENTS_EXCHANGE, "appeal.resolved_on_spot"),
        (EVENTS_EXCHANGE, "appeal.reclassified"),
        (EVENTS_EXCHANGE, "appeal.reopened"),
        (EVENTS_EXCHANGE, "appeal.withdrawn"),
        (EVENTS_EXCHANGE, "appeal.closed"),
        # Key supervision orders, so a unit's written feedback can be checked against them.
        (EVENTS_EXCHANGE, "supervision_order.issued"),
        # A key order timed again on the official calendar moves its respond-by here too.
        (EVENTS_EXCHANGE, "deadline.recomputed"),
    ],
    "dispatch.replies": [(REPLIES_EXCHANGE, "dept.*.*")],
    "supervision.events": [(EVENTS_EXCHANGE, "#")],
    "reporting.events": [(EVENTS_EXCHANGE, "#")],
}


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str = "topic"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Topology:
    exchanges: list[ExchangeSpec]
    queues: list[QueueSpec]

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def dead_letter_queues(self) -> list[str]:
        return [q.name for q in self.queues if q.name.endswith(".dlq")]


def build_topology(
    departments: dict[str, Department],
    source_systems: dict[str, SourceSystem],
    queue_type: str = "classic",
    retry_delays_ms: tuple[int, ...] = (1000, 5000, 30000),
) -> Topology:
    base_args: dict[str, Any] = {"x-queue-type": queue_type}
    exchanges = [
        ExchangeSpec(name)
        for name in (INBOUND_EXCHANGE, RECEIPTS_EXCHANGE, DISPATCH_EXCHANGE, REPLIES_EXCHANGE,
                     EVENTS_EXCHANGE)
    ]
    exchanges += [ExchangeSpec(retry_exchange(d), "fanout") for d in retry_delays_ms]

    queues: list[QueueSpec] = []
    for name, bindings in SERVICE_QUEUES.items():
        queues.append(QueueSpec(name, dict(base_args), tuple(bindings)))
        queues.append(QueueSpec(dead_letter_queue(name), dict(base_args)))
    queues.append(QueueSpec(REJECTED_QUEUE, dict(base_args)))
    for code in departments:
        queues.append(QueueSpec(dept_queue(code), dict(base_args),
                                ((DISPATCH_EXCHANGE, f"dept.{code}"),)))
    for name in source_systems:
        queues.append(QueueSpec(receipts_queue(name), dict(base_args),
                                ((RECEIPTS_EXCHANGE, f"receipt.{name}"),)))
    for delay in retry_delays_ms:
        args = dict(base_args)
        # Expired messages go to the default exchange under their own routing key,
        # which is the name of the queue they failed in.
        args.update({"x-message-ttl": delay, "x-dead-letter-exchange": ""})
        queues.append(QueueSpec(retry_exchange(delay), args, ((retry_exchange(delay), ""),)))
    return Topology(exchanges, queues)


def apply_topology(channel: Any, topology: Topology) -> None:
    """Declare everything idempotently on a pika channel."""
    for exchange in topology.exchanges:
        channel.exchange_declare(exchange.name, exchange_type=exchange.type, durable=True)
    for queue in topology.queues:
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        for exchange_name, routing_key in queue.bindings:
            channel.queue_bind(queue.name, exchange_name, routing_key=routing_key)
