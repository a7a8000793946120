"""`appeals`: the operator's command line (topology, dead letters, tokens, services)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from appeals_common.settings import SERVICES, load_settings

DEFAULT_TOKEN_HOURS = 8.0


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
        # Every dead letter the id names, in every queue searched (a message that failed
        # in two consumers sits in both their DLQs): one JSON object a line.
        found = 0
        for queue in queues:
            for item in deadletters.peek(uri, queue):
                if item.selected_by(args.message_id):
                    print(json.dumps(deadletters.detail(item), ensure_ascii=False))
                    found += 1
        if not found:
            print(f"no dead letter with message_id or dead-letter id {args.message_id}",
                  file=sys.stderr)
            return 1
        return 0
    replayed = 0
    for queue in queues:
        replayed += deadletters.replay(uri, queue, message_id=args.message_id)
    print(f"replayed {replayed} message(s)")
    return 0 if replayed or not args.message_id else 1


def cmd_token(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from appeals_common.auth import issue_token
    from appeals_common.settings import DEV_MODE_ENV, SettingsError, jwt_secret_problem

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"appeals token: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.hours <= settings.token_max_hours:
        print(f"appeals token: --hours must be more than 0 and at most "
              f"{settings.token_max_hours:g} (APPEALS_TOKEN_MAX_HOURS): services refuse a "
              "token that lives longer", file=sys.stderr)
        return 2
    problem = jwt_secret_problem(settings.jwt_secret)
    if problem and not settings.dev_mode:
        print(f"appeals token: APPEALS_JWT_SECRET {problem}: services refuse to start with it, "
              f"so no token is issued ({DEV_MODE_ENV}=1 on a development machine)", file=sys.stderr)
        return 2
    if problem:
        print(f"appeals token: development mode: APPEALS_JWT_SECRET {problem}", file=sys.stderr)
    print(issue_token(settings.jwt_secret, args.subject, args.role, args.dept,
                      ttl=timedelta(hours=args.hours)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from appeals_common.runner import run_service

    run_service(args.service)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pathlib import Path

    from appeals_common.launcher import SuiteProcesses, Supervisor
    from appeals_common.settings import SettingsError, check_service_start

    try:
        settings = load_settings()
        check_service_start(settings)  # before anything is touched (the launcher warns)
    except SettingsError as exc:
        print(f"appeals up: {exc}", file=sys.stderr)
        return 2
    cmd_topology(argparse.Namespace(action="apply"))
    suite = SuiteProcesses(log_dir=Path(args.log_dir))
    suite.start_all(timeout=args.timeout)
    for service in SERVICES:
        print(f"{service:12} http://127.0.0.1:{settings.http_port(service)}  "
              f"(log: {Path(args.log_dir) / (service + '.log')})")
    print("suite is up; a service that exits or hangs is restarted; Ctrl-C stops it")
    sys.stdout.flush()
    return Supervisor(suite).run()


def cmd_provision(args: argparse.Namespace) -> int:
    """RabbitMQ users and permissions from the registries, and the services' PostgreSQL
    roles. Passwords go only to the credentials file, never to the terminal."""
    from pathlib import Path

    from appeals_common import provisioning as prov
    from appeals_common.registries import RegistryError

    settings = load_settings()
    credentials = Path(args.credentials_file) if args.credentials_file else prov.DEFAULT_CREDENTIALS_FILE

    def passwords_for(users: list[str]) -> prov.Passwords:
        if args.passwords_env:
            return prov.passwords_from_env(users)
        resolved = prov.resolve_passwords(users, args.passwords_file, credentials)
        if resolved.generated:
            print(f"generated passwords for {len(resolved.generated)} user(s) into "
                  f"{resolved.source} (mode 0600)", file=sys.stderr)
        return resolved

    try:
        if args.action == "database":
            db_grants = prov.database_grants(args.prefix)
            passwords = passwords_for([g.role for g in db_grants]).passwords
            if args.print_sql:
                print(prov.database_sql(db_grants, passwords), end="")
                return 0
            db_report = prov.apply_databases(db_grants, passwords,
                                             args.admin_url or prov.DEFAULT_DATABASE_ADMIN_URL)
            for line in db_report.lines():
                print(line)
            return 0
        vhost = args.vhost or prov.vhost_from_uri(settings.amqp_uri)
        grants = prov.select_grants(
            prov.grants_from_config(settings.config_dir, args.user_prefix,
                                    args.topology_user or prov.DEFAULT_TOPOLOGY_USER),
            args.users)
        passwords = None
        source = None
        if not getattr(args, "no_passwords", False):
            resolved = passwords_for([g.name for g in grants])
            passwords, source = resolved.passwords, resolved.source
        if args.action == "definitions":
            print(json.dumps(prov.build_definitions(grants, vhost, passwords), ensure_ascii=False, indent=2))
            return 0
        report = prov.apply_grants(grants, vhost, passwords or {}, args.backend,
                                   args.management_url or prov.DEFAULT_MANAGEMENT_URL,
                                   remove_guest=args.remove_guest)
    except (prov.ProvisioningError, RegistryError) as exc:
        print(f"appeals provision: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    print(f"passwords: {source}")
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
    p.add_argument("--hours", type=float, default=DEFAULT_TOKEN_HOURS,
                   help=f"lifetime (default {DEFAULT_TOKEN_HOURS:g}; at most "
                        "APPEALS_TOKEN_MAX_HOURS, default 12)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("run", help="run one service in the foreground")
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("up", help="apply the topology and run all four services locally")
    p.add_argument("--log-dir", default="var/log")
    p.add_argument("--timeout", type=float, default=90)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("provision", help="RabbitMQ users and permissions from the registries; "
                       "the services' PostgreSQL roles")
    pv = p.add_subparsers(dest="action", required=True)
    secrets_source = argparse.ArgumentParser(add_help=False)
    source = secrets_source.add_mutually_exclusive_group()
    source.add_argument("--passwords-file", help="YAML or JSON mapping user name -> password, or "
                        "a directory with one file per user (a mounted Secret) (default: reuse or "
                        "generate them in the credentials file)")
    source.add_argument("--passwords-env", action="store_true",
                        help="take each password from APPEALS_PASSWORD_<USER> (svc-intake -> "
                        "APPEALS_PASSWORD_SVC_INTAKE)")
    secrets_source.add_argument("--credentials-file", help="where generated passwords are kept, "
                                "mode 0600 (default: var/credentials.json)")
    common = argparse.ArgumentParser(add_help=False, parents=[secrets_source])
    common.add_argument("--vhost", help="default: the vhost of APPEALS_AMQP_URI")
    common.add_argument("--user-prefix", default="", help="put before every user name")
    common.add_argument("--topology-user", "--suite-user", dest="topology_user",
                        help="the user that declares the topology, with full rights on the vhost "
                        "(default: $APPEALS_TOPOLOGY_USER or appeals-topology)")
    common.add_argument("--users", help="only these users: comma-separated shell patterns, "
                        "e.g. 'appeals-topology,svc-*,dept-zjj' (default: all)")
    q = pv.add_parser("apply", parents=[common],
                      help="create or update the users and set their permissions (idempotent)")
    q.add_argument("--backend", choices=["auto", "management", "rabbitmqctl"], default="auto",
                   help="default: the management API, else rabbitmqctl on this machine")
    q.add_argument("--management-url", help="admin access to the management API "
                   "(default: $APPEALS_MANAGEMENT_URL or http://guest:guest@127.0.0.1:15672)")
    guest = q.add_mutually_exclusive_group()
    guest.add_argument("--remove-guest", dest="remove_guest", action="store_const", const=True,
                       help="delete the guest user (default when the management API is on "
                       "another host than localhost)")
    guest.add_argument("--keep-guest", dest="remove_guest", action="store_const", const=False,
                       help="keep the guest user (default on this machine and with rabbitmqctl)")
    q = pv.add_parser("definitions", parents=[common],
                      help="print a RabbitMQ definitions JSON to import (users, permissions; "
                      "never guest)")
    q.add_argument("--no-passwords", action="store_true",
                   help="users without a password (an example that leaks nothing)")
    q = pv.add_parser("database", parents=[secrets_source],
                      help="PostgreSQL: role appeals_<service> owning database appeals_<service>, "
                      "for each service (idempotent; passwords as for the broker users)")
    q.add_argument("--admin-url", default=None,
                   help="a superuser's URL (default: $APPEALS_DATABASE_ADMIN_URL or "
                   "postgresql://postgres@127.0.0.1:5432/postgres)")
    q.add_argument("--prefix", default="", help="put before every role and database name")
    q.add_argument("--print-sql", action="store_true",
                   help="print the psql script instead (passwords as SCRAM verifiers)")
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
