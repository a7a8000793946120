"""`appeals up`'s Supervisor (the real one) restarts a child that exits and one that hangs
(SIGSTOP), and stops its children on SIGTERM. The children are tiny stand-ins (an
http.server answering /health, 503 "degraded" every other time), so no broker is needed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STANDIN = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
count = 0
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        degraded = count % 2 == 0
        body = json.dumps({"status": "degraded" if degraded else "ok"}).encode()
        self.send_response(503 if degraded else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

DRIVER = r'''
import sys
from pathlib import Path
from appeals_common.launcher import SuiteProcesses, Supervisor

class StandIns(SuiteProcesses):
    def command(self, service):
        return [sys.executable, "-c", STANDIN, str(self.settings.http_port(service))]

suite = StandIns(log_dir=Path(sys.argv[1]), services=("intake", "dispatch"))
suite.start_all(timeout=20)
sys.exit(Supervisor(suite, probe_interval=0.5, probe_timeout=0.5, failures=3, base_delay=0.5,
                    max_delay=4, reset_after=30, grace=1, start_grace=5, tick=0.1).run())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not alive either
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Driver:
    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "supervisor.log"
        env = {**os.environ, "APPEALS_DEV_MODE": "1",
               "APPEALS_INTAKE_HTTP_PORT": str(free_port()),
               "APPEALS_DISPATCH_HTTP_PORT": str(free_port()),
               "PYTHONPATH": str(REPO)}
        code = f"STANDIN = {STANDIN!r}\n{DRIVER}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", code, str(tmp / "logs")],
                                         cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def pids(self, service: str) -> list[int]:
        return [int(p) for p in re.findall(rf"(?:started|supervising) {service} \(pid (\d+)", self.text())]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            assert self.proc.poll() is None, f"supervisor exited:\n{self.text()}"
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = Driver(tmp_path_factory.mktemp("supervisor"))
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def child_pid(driver: Driver, service: str) -> int:
    return driver.pids(service)[-1]


def test_restarts_a_service_that_exits(driver: Driver) -> None:
    driver.wait_for(lambda: driver.pids("dispatch"), 20, "both stand-ins")
    time.sleep(1.5)  # a few probes, 503 "degraded" ones included: no restart for those
    assert "restart attempt" not in driver.text()
    pid = child_pid(driver, "intake")
    os.kill(pid, signal.SIGKILL)
    driver.wait_for(lambda: len(driver.pids("intake")) == 2, 10, "intake restarted")
    text = driver.text()
    assert "intake exited with -9; restart attempt 1 in 0.5s (restarts so far: 1)" in text
    assert driver.pids("intake")[-1] != pid and alive(driver.pids("intake")[-1])
    assert "dispatch exited" not in text and "dispatch hung" not in text  # left alone


def test_restarts_a_service_that_hangs(driver: Driver) -> None:
    pid = child_pid(driver, "dispatch")
    os.kill(pid, signal.SIGSTOP)
    driver.wait_for(lambda: len(driver.pids("dispatch")) == 2, 20, "dispatch restarted")
    text = driver.text()
    assert f"dispatch (pid {pid}) did not answer /health 3 times in a row" in text
    assert "dispatch hung (no answer to /health 3x); restart attempt 1" in text
    assert not alive(pid)
    assert alive(driver.pids("dispatch")[-1])


def test_sigterm_stops_the_children(driver: Driver) -> None:
    children = [driver.pids("intake")[-1], driver.pids("dispatch")[-1]]
    os.kill(children[0], signal.SIGSTOP)  # a stopped child is stopped too
    driver.proc.send_signal(signal.SIGTERM)
    assert driver.proc.wait(timeout=20) == 0, driver.text()
    assert "stopping the suite; restarts: {'intake': 1, 'dispatch': 1}" in driver.text()
    for pid in children:
        assert not alive(pid), pid
