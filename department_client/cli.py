"""`appeals-dept`: a department's command line on the appeals bus.

    export APPEALS_DEPT_AMQP_URI=amqp://zjj:secret@broker:5672/  APPEALS_DEPT_CODE=zjj
    appeals-dept list                        # waiting messages, left in the queue
    appeals-dept listen [--count N]          # consume: one JSON line per message (acked)
    appeals-dept sign ASSIGNMENT_ID REG_NO [--operator 李四]
    appeals-dept respond ASSIGNMENT_ID REG_NO --outcome solved --reply '已办结' \\
        --contacted-at 2026-11-27T10:30:00+08:00
    appeals-dept return ASSIGNMENT_ID REG_NO --reason-code wrong_unit --reason '…' [--suggested-unit scjgj]
    appeals-dept extend ASSIGNMENT_ID REG_NO --until 2026-12-10T18:00:00+08:00 --reason '…'

A reply prints `{"message_id", "routing_key", "body"}`; its outcome comes back as a
`reply_result` (see `listen`) whose `reply_message_id` is that message_id. When unsure
whether a reply went out, publish it again with `--message-id` set to the same id: the
suite processes a message_id once. Exit status: 0 done, 1 broker error, 2 bad arguments.
Also `python -m department_client`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pika import exceptions as amqp_errors

from department_client import contract
from department_client.client import DepartmentClient, Incoming

ENV_AMQP_URI = "APPEALS_DEPT_AMQP_URI"
ENV_DEPT = "APPEALS_DEPT_CODE"
ENV_OPERATOR = "APPEALS_DEPT_OPERATOR"


def _time(value: str) -> str:
    try:
        return contract.iso_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dept(value: str) -> str:
    try:
        return contract.check_dept_code(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="appeals-dept", description="A department (承办单位) on the enterprise appeals bus.",
        epilog="Delivery is at least once: a message may arrive twice with the same message_id.")
    parser.add_argument("--amqp-uri", default=env.get(ENV_AMQP_URI),
                        help=f"broker URI with this department's user (env {ENV_AMQP_URI})")
    parser.add_argument("--dept", type=_dept, default=env.get(ENV_DEPT),
                        help=f"this department's code, e.g. zjj (env {ENV_DEPT})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listen = commands.add_parser("listen", help="consume dispatch.<dept>: print each message as a JSON line")
    listen.add_argument("--count", type=_positive, help="stop after this many messages")
    listen.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a message")

    show = commands.add_parser("list", help="show waiting messages without consuming them")
    show.add_argument("--limit", type=_positive, default=20)

    def reply_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("assignment_id", metavar="ASSIGNMENT_ID")
        sub.add_argument("reg_no", metavar="REG_NO")
        sub.add_argument("--operator", default=env.get(ENV_OPERATOR),
                         help=f"who replies, for the record (env {ENV_OPERATOR})")
        sub.add_argument("--replied-at", type=_time, help="ISO 8601 with offset (default: now)")
        sub.add_argument("--message-id", help="reuse a message_id to republish the same reply")
        return sub

    reply_command("sign", "签收: accept an assignment")
    respond = reply_command("respond", "部门响应: answer with an outcome")
    respond.add_argument("--outcome", required=True, choices=contract.OUTCOMES)
    respond.add_argument("--reply", required=True, help="the answer given to the enterprise")
    respond.add_argument("--contacted-at", required=True, type=_time,
                         help="when the enterprise was contacted, ISO 8601 with offset")
    ret = reply_command("return", "退单: return an assignment (before its return_by)")
    ret.add_argument("--reason-code", required=True, help="e.g. wrong_unit, not_our_duty, other")
    ret.add_argument("--reason", required=True)
    ret.add_argument("--suggested-unit", type=_dept, help="the department that should handle it")
    extend = reply_command("extend", "延期申请: ask for a later respond_by")
    extend.add_argument("--until", required=True, type=_time, dest="requested_until",
                        help="the respond-by wanted, ISO 8601 with offset")
    extend.add_argument("--reason", required=True)
    return parser


def reply_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The action-specific fields of a reply command."""
    if args.command == "respond":
        return {"outcome": args.outcome, "reply": args.reply, "contacted_at": args.contacted_at}
    if args.command == "return":
        return {"reason_code": args.reason_code, "reason": args.reason, "suggested_unit": args.suggested_unit}
    if args.command == "extend":
        return {"requested_until": args.requested_until, "reason": args.reason}
    return {}


def reply_body_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return contract.build_reply(args.command, (args.assignment_id, args.reg_no),
                                replied_at=args.replied_at, operator=args.operator, **reply_fields(args))


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
               ) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser(env)
    args = parser.parse_args(argv)
    if not args.amqp_uri:
        parser.error(f"no broker: give --amqp-uri or set {ENV_AMQP_URI}")
    if not args.dept:
        parser.error(f"no department: give --dept or set {ENV_DEPT}")
    return parser, args


def _print_line(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # our own one-line error says it; pika's tracebacks only with -v
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    body = None
    if args.command in contract.ACTIONS:
        try:
            body = reply_body_from_args(args)
        except contract.ReplyValidationError as exc:
            parser.error(str(exc))

    client = DepartmentClient(args.amqp_uri, args.dept, client_name="appeals-dept")
    try:
        if body is not None:
            message_id = client.publish_reply(args.command, body, args.message_id)
            _print_line({"message_id": message_id,
                         "routing_key": contract.reply_routing_key(args.dept, args.command), "body": body})
        elif args.command == "list":
            for message in client.fetch(args.limit):
                raw = message.raw.decode("utf-8", "replace")
                _print_line(message.body if message.body else {"_raw": raw})
        elif args.command == "listen":
            signal.signal(signal.SIGTERM, lambda *_: client.stop())

            def show(message: Incoming) -> None:
                _print_line(message.body)

            with contextlib.suppress(KeyboardInterrupt):
                client.listen(show, stop_after=args.count, idle_timeout=args.idle_timeout, reconnect=True)
    except (amqp_errors.AMQPError, OSError) as exc:
        print(f"appeals-dept: broker error: {exc!r}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
