"""`appeals`: the operator's command line (topology, dead letters, tokens, services)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from appeals_common.settings import SERVICES, load_settings


def _topology() -> Any:
    from appeals_common.registries import load_departments, load_source_systems
    from appeals_common.topology import build_topology

    settings = load_settings()
    return build_topology(load_departments(settings.config_dir),
                          load_source_systems(settings.config_dir), settings.queue_type,
                          settings.retry_delays_ms)


def cmd_topology(args: argparse.Namespace) -> int:
    from appeals_common.amqp_tools import blocking_channel
    from appeals_common.topology import apply_topology

    topology = _topology()
    if args.action == "show":
        for ex in topology.exchanges:
            print(f"exchange {ex.name} ({ex.type})")
        for q in topology.queues:
            binds = ", ".join(f"{e}:{k}" for e, k in q.bindings)
            print(f"queue {q.name} {binds}".rstrip())
        return 0
    with blocking_channel(load_settings().amqp_uri) as channel:
        apply_topology(channel, topology)
    print(f"applied {len(topology.exchanges)} exchanges and {len(topology.queues)} queues")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from appeals_common import deadletters

    uri = load_settings().amqp_uri
    topology = _topology()
    queues = [args.queue] if getattr(args, "queue", None) else topology.dead_letter_queues()
    if args.action == "list":
        for queue in queues:
            for item in deadletters.peek(uri, queue):
                print(json.dumps(deadletters.summary(item), ensure_ascii=False))
        return 0
    if args.action == "show":
        for queue in queues:
            for item in deadletters.peek(uri, queue):
                if item.message_id == args.message_id:
                    print(json.dumps(deadletters.detail(item), ensure_ascii=False, indent=2))
                    return 0
        print(f"no dead letter with message_id {args.message_id}", file=sys.stderr)
        return 1
    replayed = 0
    for queue in queues:
        replayed += deadletters.replay(uri, queue, message_id=args.message_id)
    print(f"replayed {replayed} message(s)")
    return 0 if replayed or not args.message_id else 1


def cmd_token(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from appeals_common.auth import issue_token

    print(issue_token(load_settings().jwt_secret, args.subject, args.role, args.dept,
                      ttl=timedelta(days=args.days)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from appeals_common.runner import run_service

    run_service(args.service)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pathlib import Path

    from appeals_common.launcher import SuiteProcesses

    cmd_topology(argparse.Namespace(action="apply"))
    suite = SuiteProcesses(log_dir=Path(args.log_dir))
    suite.start_all(timeout=args.timeout)
    settings = load_settings()
    for service in SERVICES:
        print(f"{service:12} http://127.0.0.1:{settings.http_port(service)}  "
              f"(log: {Path(args.log_dir) / (service + '.log')})")
    print("suite is up; Ctrl-C stops it")
    return suite.watch()


def cmd_provision(args: argparse.Namespace) -> int:
    """RabbitMQ users and permissions from the registries. Passwords go only to the
    credentials file, never to the terminal."""
    from pathlib import Path

    from appeals_common import provisioning as prov
    from appeals_common.registries import RegistryError

    settings = load_settings()
    vhost = args.vhost or prov.vhost_from_uri(settings.amqp_uri)
    credentials = Path(args.credentials_file) if args.credentials_file else prov.DEFAULT_CREDENTIALS_FILE
    try:
        grants = prov.grants_from_config(settings.config_dir, args.user_prefix,
                                         args.suite_user or prov.DEFAULT_SUITE_USER)
        passwords = None
        if not getattr(args, "no_passwords", False):
            resolved = prov.resolve_passwords([g.name for g in grants], args.passwords_file, credentials)
            passwords = resolved.passwords
            if resolved.generated:
                print(f"generated passwords for {len(resolved.generated)} user(s) into "
                      f"{resolved.source} (mode 0600)", file=sys.stderr)
        if args.action == "definitions":
            print(json.dumps(prov.build_definitions(grants, vhost, passwords), ensure_ascii=False, indent=2))
            return 0
        report = prov.apply_grants(grants, vhost, passwords or {}, args.backend,
                                   args.management_url or prov.DEFAULT_MANAGEMENT_URL)
    except (prov.ProvisioningError, RegistryError) as exc:
        print(f"appeals provision: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    print(f"passwords: {credentials if args.passwords_file is None else args.passwords_file}")
    return 0


def cmd_reporting(args: argparse.Namespace) -> int:
    """Rebuild reporting's read model from its event archive, straight on its database.

    Not through the service's RPC: this works with the service stopped (after an upgrade,
    or with the broker down) and has no RPC timeout to outlast on a large archive. It is
    safe beside running replicas: the rebuild takes the lock every consumer shares, so
    events arriving meanwhile wait and are applied to the rebuilt tables.
    """
    from zoneinfo import ZoneInfo

    from appeals_common.db import Store
    from services.reporting import readmodel
    from services.reporting.models import METADATA

    settings = load_settings()
    store = Store(settings.database_url_for("reporting"), METADATA, producer="reporting",
                  pool_size=1)
    try:
        store.create_schema()
        readmodel.upgrade_archive(store.engine)
        result = readmodel.rebuild(store.engine, ZoneInfo(settings.timezone), batch=args.batch)
    finally:
        store.dispose()
    assert result is not None
    print(json.dumps(result.view()))
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    """Count provisional deadlines again on the calendar as loaded now, straight on the
    dispatch and supervision databases (like `reporting rebuild`: works with the services
    stopped; their relays publish the messages once they run)."""
    from appeals_common.db import Store
    from appeals_common.deadlines import DeadlinePolicy
    from appeals_common.metrics import load_calendar
    from appeals_common.nameko_ext import ServiceRuntime
    from appeals_common.registries import load_categories
    from services.dispatch import recompute as dispatch_recompute
    from services.dispatch.models import Base as DispatchBase
    from services.supervision import recompute as supervision_recompute
    from services.supervision.models import Base as SupervisionBase

    settings = load_settings()
    calendar = load_calendar(settings.config_dir, settings.timezone)
    policy = DeadlinePolicy.from_file(settings.config_dir / "deadlines.yaml",
                                      set(load_categories(settings.config_dir)))
    apply = not args.dry_run
    jobs = {
        "dispatch": (DispatchBase.metadata,
                     lambda rt: dispatch_recompute.recompute(rt, calendar, policy, apply)),
        "supervision": (SupervisionBase.metadata,
                        lambda rt: supervision_recompute.recompute(rt, calendar, apply)),
    }
    report: dict[str, Any] = {"dry_run": args.dry_run}
    for service, (metadata, job) in jobs.items():
        store = Store(settings.database_url_for(service), metadata, producer=service,
                      pool_size=1)
        try:
            store.create_schema()
            report[service] = job(ServiceRuntime(service, settings, store,
                                                 settings.clock())).view()
        finally:
            store.dispose()
    print(json.dumps(report))
    return 0


def cmd_clock(args: argparse.Namespace) -> int:
    """Print the offset (seconds) and moment of CI's year-end run: `<offset> <moment>`."""
    from datetime import UTC, datetime

    from appeals_common.clock import shift_for_year_end
    from appeals_common.metrics import load_calendar

    settings = load_settings()
    calendar = load_calendar(settings.config_dir, settings.timezone)
    real_now = datetime.now(UTC)
    target = shift_for_year_end(calendar.local_date(real_now), calendar, settings.timezone)
    print(f"{(target - real_now).total_seconds():.0f} {target.isoformat()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appeals", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("topology", help="declare exchanges, queues and bindings")
    p.add_argument("action", choices=["apply", "show"])
    p.set_defaults(func=cmd_topology)

    p = sub.add_parser("dead-letters", help="list, show and replay dead-lettered messages")
    dl = p.add_subparsers(dest="action", required=True)
    q = dl.add_parser("list")
    q.add_argument("--queue", help="one dead-letter queue (default: all)")
    q = dl.add_parser("show")
    q.add_argument("message_id")
    q.add_argument("--queue")
    q = dl.add_parser("replay", help="send dead letters back to the queue they failed in")
    q.add_argument("--queue")
    q.add_argument("--message-id", help="only this message (default: all)")
    p.set_defaults(func=cmd_dead_letters)

    p = sub.add_parser("token", help="issue a bearer token")
    p.add_argument("--role", required=True,
                   choices=["bureau_admin", "bureau_staff", "department", "viewer"])
    p.add_argument("--subject", required=True)
    p.add_argument("--dept", help="department code, for role department")
    p.add_argument("--days", type=int, default=30)
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("run", help="run one service in the foreground")
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("up", help="apply the topology and run all four services locally")
    p.add_argument("--log-dir", default="var/log")
    p.add_argument("--timeout", type=float, default=90)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("provision", help="RabbitMQ users and permissions from the registries")
    pv = p.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--vhost", help="default: the vhost of APPEALS_AMQP_URI")
    common.add_argument("--passwords-file", help="YAML or JSON mapping user name -> password "
                        "(default: reuse or generate them in the credentials file)")
    common.add_argument("--credentials-file", help="where generated passwords are kept, mode 0600 "
                        "(default: var/credentials.json)")
    common.add_argument("--user-prefix", default="", help="put before every user name")
    common.add_argument("--suite-user", help="the suite's own user, with full rights "
                        "(default: $APPEALS_SUITE_USER or appeals-suite)")
    q = pv.add_parser("apply", parents=[common],
                      help="create or update the users and set their permissions (idempotent)")
    q.add_argument("--backend", choices=["auto", "management", "rabbitmqctl"], default="auto",
                   help="default: the management API, else rabbitmqctl on this machine")
    q.add_argument("--management-url", help="admin access to the management API "
                   "(default: $APPEALS_MANAGEMENT_URL or http://guest:guest@127.0.0.1:15672)")
    q = pv.add_parser("definitions", parents=[common],
                      help="print a RabbitMQ definitions JSON to import (users, permissions)")
    q.add_argument("--no-passwords", action="store_true",
                   help="users without a password (an example that leaks nothing)")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("reporting", help="reporting's read model")
    rp = p.add_subparsers(dest="action", required=True)
    q = rp.add_parser("rebuild", help="drop every projection and replay the event archive "
                      "(prints events, seconds, events/s)")
    q.add_argument("--batch", type=int, default=5000, help="events read per query")
    p.set_defaults(func=cmd_reporting)

    p = sub.add_parser("calendar", help="working-day calendar maintenance")
    cal = p.add_subparsers(dest="action", required=True)
    q = cal.add_parser("recompute", help="count provisional deadlines again once a year's "
                       "official data is loaded; units whose dates change are told (idempotent)")
    q.add_argument("--dry-run", action="store_true", help="only count what would change")
    p.set_defaults(func=cmd_calendar)

    p = sub.add_parser("clock", help="test clock helpers")
    p.add_argument("action", choices=["year-end-shift"],
                   help="print '<offset seconds> <moment>' for a run that starts on 30 December "
                        "before a year without official calendar data")
    p.set_defaults(func=cmd_clock)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
