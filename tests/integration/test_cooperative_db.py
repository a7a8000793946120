"""Under eventlet, psycopg2 must wait cooperatively or one slow query blocks every green
thread of a service. eventlet.monkey_patch() installs psycopg2's wait callback (its
`psycopg` option, on by default), as the services' runner does; shown in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys, time
import eventlet
# All of the standard library either way; only psycopg2 differs. (Naming one option
# alone would patch only that one.)
eventlet.monkey_patch() if sys.argv[2] == "patched" else eventlet.monkey_patch(psycopg=False)
from sqlalchemy import text
from appeals_common.db import make_engine

engine = make_engine(sys.argv[1], pool_size=5)
def sleep_query():
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.4)"))
sleep_query()  # connect outside the timing
start = time.monotonic()
pool = eventlet.GreenPool()
for _ in range(5):
    pool.spawn(sleep_query)
pool.waitall()
print(json.dumps({"elapsed": time.monotonic() - start}))
"""


def _elapsed(url: str, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, url, mode], capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])["elapsed"]


def test_patched_psycopg2_lets_green_threads_run_concurrently(databases):
    url = databases.url("coop")
    from appeals_common.db import ensure_database

    ensure_database(url)
    patched = _elapsed(url, "patched")
    unpatched = _elapsed(url, "unpatched")
    # Five 0.4 s queries: together in ~0.4 s when cooperative, ~2 s one after another.
    assert patched < 1.0, patched
    assert unpatched > 1.8, unpatched
