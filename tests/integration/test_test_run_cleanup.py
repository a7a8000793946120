"""A test run that is terminated (SIGTERM: CI's timeout) or killed (SIGKILL) leaves no
service process behind: the first runs the fixtures' teardown, the second is caught by
the services themselves (launcher: SIGTERM when their parent dies). The services are
stand-ins (a sleeping interpreter), started by the real SuiteProcesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RUN = r'''
import os, sys, time
from pathlib import Path
import pytest
from appeals_common.launcher import SuiteProcesses

class StandIns(SuiteProcesses):
    def command(self, service):
        return [sys.executable, "-c", "import time; time.sleep(600)"]

@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    procs = StandIns(log_dir=tmp_path_factory.mktemp("logs"), services=("intake", "dispatch"))
    for service in procs.services:
        procs.start(service)
    Path(os.environ["PIDS_FILE"]).write_text(" ".join(str(p.pid) for p in procs.procs.values()))
    yield procs
    procs.stop_all()

def test_long(suite):
    time.sleep(600)
'''


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) is gone too.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_no_service_outlives_its_test_run(tmp_path, sig):
    (tmp_path / "test_run.py").write_text(RUN)
    pids_file = tmp_path / "pids"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:pytest_nameko",
         "-p", "tests.stop_on_signal", str(tmp_path / "test_run.py")],
        cwd=tmp_path, env={**os.environ, "PIDS_FILE": str(pids_file),
                           "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not pids_file.exists() or not pids_file.read_text().strip():
        assert time.monotonic() < deadline and run.poll() is None, run.stdout.read().decode()
        time.sleep(0.1)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(alive(pid) for pid in pids)
    run.send_signal(sig)
    run.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)], run.stdout.read().decode()[-2000:]
