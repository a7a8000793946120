"""psycopg2 under eventlet: cooperative waits, except in a short critical section.

Normally a database wait yields to other green threads (like eventlet's own callback).
While a green thread holds a hot row lock (the reg_no counter), yielding would let every
other runnable green thread run before it gets the CPU back, stretching the lock from
a millisecond to tens; inside `hold_hub()` its few remaining waits block instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventlet import corolocal, hubs, patcher
from psycopg2 import OperationalError, extensions

_select = patcher.original("select")
_local = corolocal.local()


def wait_callback(conn: Any, timeout: float | None = None) -> None:
    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise OperationalError(f"bad result from poll: {state!r}")
        reading = state == extensions.POLL_READ
        fd = conn.fileno()
        if getattr(_local, "hold", False):
            _select.select([fd] if reading else [], [] if reading else [fd], [])
        else:
            hubs.trampoline(fd, read=reading, write=not reading)


def install() -> None:
    extensions.set_wait_callback(wait_callback)


@contextmanager
def hold_hub() -> Iterator[None]:
    previous = getattr(_local, "hold", False)
    _local.hold = True
    try:
        yield
    finally:
        _local.hold = previous
