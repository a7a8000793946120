"""Who is speaking on the bus (DESIGN §9).

The sender of a message is the AMQP `user_id` property, which RabbitMQ checks against
the user of the connection that published it: nobody can set another user's. A source
system publishes as `src-<name>` and may only submit under `appeal.submit.<name>`; a
department publishes as `dept-<code>` and may only reply under `dept.<code>.<action>`
(the broker's topic permissions, appeals_common/provisioning.py). The suite checks the two
agree, so a misconfigured grant or a message without `user_id` changes nothing.

Headers are the publisher's to choose and prove nothing; the suite's own retry headers
are honoured only on a message whose `user_id` is one of the suite's own users (it came
back through the suite's retry path or an operator's replay).
"""

from __future__ import annotations

import hashlib
import urllib.parse

DEFAULT_AMQP_USER = "guest"  # what a URI without credentials logs in as


def source_user(name: str, prefix: str = "") -> str:
    return f"{prefix}src-{name}"


def dept_user(code: str, prefix: str = "") -> str:
    return f"{prefix}dept-{code}"


def amqp_username(amqp_uri: str) -> str:
    """The user a connection to ``amqp_uri`` logs in as."""
    username = urllib.parse.urlsplit(amqp_uri).username
    return urllib.parse.unquote(username) if username else DEFAULT_AMQP_USER


def sender_mismatch(user_id: str | None, expected: str, claim: str) -> str | None:
    """Why a message claiming ``claim`` (a routing key) from ``user_id`` is refused, or
    None when the broker-validated sender is the one the claim needs."""
    if not user_id:
        return (f"no user_id: set the AMQP user_id property to the user you connect as "
                f"({expected!r} for {claim!r}); the broker checks it")
    if user_id != expected:
        return f"{claim!r} must be published by {expected!r}, not by {user_id!r}"
    return None


INBOX_KEY_MAX = 64  # the inbox table's message_id column


def bounded_key(key: str) -> str:
    """``key`` if it fits the inbox column, else its hash: no message is refused for the
    length of its id."""
    if len(key) <= INBOX_KEY_MAX:
        return key
    return "h:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:INBOX_KEY_MAX - 2]


def inbox_key(sender: str | None, message_id: str) -> str:
    """What a consumer's inbox remembers a message by: its sender and its id, so that one
    sender cannot suppress another's message by reusing its message_id."""
    return bounded_key(f"{sender or '-'}:{message_id}")
