"""Run the four services as local processes: `appeals up`, the tests and the benchmark.

Each service is its own OS process (`appeals run <name>`), as in production; this only
starts them, waits until each answers /health, and restarts or kills one on request.
`appeals up` adds a `Supervisor`: it restarts a service that exits or stops answering
/health, with a bounded exponential backoff. The tests use `SuiteProcesses` alone, so a
service they kill on purpose stays down until they restart it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appeals_common.settings import SERVICES, check_service_start, load_settings


class SuiteProcesses:
    def __init__(self, env: dict[str, str] | None = None, log_dir: Path | None = None,
                 services: tuple[str, ...] = SERVICES) -> None:
        self.env = {**os.environ, **(env or {})}
        self.settings = load_settings(self.env)
        self.log_dir = log_dir or Path("var/log")
        self.services = services
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, service: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{service}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.procs[service] = subprocess.Popen(
                self.command(service), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_stop_with_parent(os.getpid()))
        finally:
            log.close()  # the child has its own copy

    def command(self, service: str) -> list[str]:
        return [sys.executable, "-m", "appeals_common.cli", "run", service]

    def start_all(self, timeout: float = 60) -> None:
        # Each service checks again as it starts; checking here fails before any starts.
        # Raises SettingsError for a weak APPEALS_JWT_SECRET outside APPEALS_DEV_MODE.
        for warning in check_service_start(self.settings):
            print(f"warning: {warning}", file=sys.stderr)
        for service in self.services:
            self.start(service)
        self.wait_healthy(timeout=timeout)

    def wait_healthy(self, services: tuple[str, ...] | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for service in services or self.services:
            url = f"http://127.0.0.1:{self.settings.http_port(service)}/health"
            while True:
                proc = self.procs[service]
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}; see "
                                       f"{self.log_dir / (service + '.log')}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} not healthy at {url} after {timeout}s")
                time.sleep(0.2)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[service]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def restart(self, service: str, timeout: float = 60) -> None:
        self.start(service)
        self.wait_healthy((service,), timeout=timeout)

    def stop_all(self, timeout: float = 15) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) child must see it
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stop_with_parent(parent_pid: int) -> Callable[[], None]:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL (Linux), so
    a killed `appeals up` or test run leaves no service running on its own. (Linux ties
    this to the thread that started the child: start services from a thread that lives as
    long as they should.)"""
    def arrange() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return  # not Linux: the parent's own stop must do
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return arrange


PR_SET_PDEATHSIG = 1


def log_stderr(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {message}", file=sys.stderr,
          flush=True)


@dataclass
class _Watched:
    started_at: float = 0.0
    healthy_since: float | None = None
    failures: int = 0          # consecutive /health probes without an answer
    attempt: int = 0           # restarts since it was last healthy for `reset_after`
    restarts: int = 0          # restarts in total (logged)
    restart_at: float | None = None  # set while it waits out its backoff
    next_probe: float = 0.0


class Supervisor:
    """Keep every service of a SuiteProcesses running until Ctrl-C or SIGTERM.

    A service that exits, or that does not answer GET /health `failures` times in a row
    (no answer, connection refused or a timeout of `probe_timeout`; any HTTP answer, a
    503 "degraded" one too, means alive), is restarted after 1 s, 2 s, 4 s… up to
    `max_delay`; the delay starts again at `base_delay` once it has been healthy for
    `reset_after` seconds. A hung one gets SIGTERM, then SIGKILL after `grace` seconds.
    Probe failures do not count until the service has answered once or `start_grace`
    seconds have passed since it started.
    """

    def __init__(self, suite: SuiteProcesses, *, probe_interval: float = 5.0,
                 probe_timeout: float = 2.0, failures: int = 3, base_delay: float = 1.0,
                 max_delay: float = 60.0, reset_after: float = 120.0, grace: float = 10.0,
                 start_grace: float = 60.0, tick: float = 0.5,
                 log: Callable[[str], None] = log_stderr) -> None:
        self.suite = suite
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.failures = failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.reset_after = reset_after
        self.grace = grace
        self.start_grace = start_grace
        self.tick = tick
        self.log = log
        now = time.monotonic()
        self.state = {s: _Watched(started_at=now, next_probe=now) for s in suite.services}
        for service, proc in suite.procs.items():
            self.log(f"supervising {service} (pid {proc.pid})")

    @property
    def restart_counts(self) -> dict[str, int]:
        return {s: w.restarts for s, w in self.state.items()}

    def alive(self, service: str) -> bool:
        url = f"http://127.0.0.1:{self.suite.settings.http_port(service)}/health"
        try:
            with urllib.request.urlopen(url, timeout=self.probe_timeout):
                return True
        except urllib.error.HTTPError:
            return True  # it answered (503 "degraded" included): alive, not hung
        except (OSError, ValueError):
            return False  # refused, reset, timed out

    def _terminate(self, service: str) -> None:
        proc = self.suite.procs.get(service)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only once resumed
        try:
            proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            self.log(f"{service} (pid {proc.pid}) ignored SIGTERM for {self.grace:g}s; SIGKILL")
            proc.kill()
            proc.wait()

    def _schedule(self, service: str, reason: str, now: float) -> None:
        w = self.state[service]
        delay = min(self.max_delay, self.base_delay * 2 ** w.attempt)
        w.attempt += 1
        w.restarts += 1
        w.restart_at = now + delay
        w.failures = 0
        w.healthy_since = None
        self.log(f"{service} {reason}; restart attempt {w.attempt} in {delay:g}s "
                 f"(restarts so far: {w.restarts})")

    def _start(self, service: str, now: float) -> None:
        w = self.state[service]
        try:
            self.suite.start(service)
        except OSError as exc:
            self._schedule(service, f"could not start ({exc})", now)
            return
        w.restart_at = None
        w.started_at = now
        w.next_probe = now + self.probe_interval
        self.log(f"started {service} (pid {self.suite.procs[service].pid}, "
                 f"restart {w.restarts})")

    def step(self) -> None:
        for service in self.suite.services:
            now = time.monotonic()
            w = self.state[service]
            if w.restart_at is not None:
                if now >= w.restart_at:
                    self._start(service, now)
                continue
            proc = self.suite.procs.get(service)
            if proc is None:
                self._schedule(service, "is not running", now)
                continue
            if proc.poll() is not None:
                self._schedule(service, f"exited with {proc.returncode}", now)
                continue
            if now < w.next_probe:
                continue
            w.next_probe = now + self.probe_interval
            if self.alive(service):
                w.failures = 0
                if w.healthy_since is None:
                    w.healthy_since = now
                elif w.attempt and now - w.healthy_since >= self.reset_after:
                    w.attempt = 0  # healthy for a while: the next failure waits base_delay
                continue
            if w.healthy_since is None and now - w.started_at < self.start_grace:
                continue  # still starting
            w.healthy_since = None
            w.failures += 1
            if w.failures >= self.failures:
                self.log(f"{service} (pid {proc.pid}) did not answer /health "
                         f"{w.failures} times in a row; stopping it")
                self._terminate(service)
                self._schedule(service, f"hung (no answer to /health {w.failures}x)",
                               time.monotonic())

    def run(self) -> int:
        """Supervise until Ctrl-C or SIGTERM, then stop every service; returns 0."""

        def terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            while True:
                self.step()
                time.sleep(self.tick)
        except KeyboardInterrupt:
            self.log(f"stopping the suite; restarts: {self.restart_counts}")
            return 0
        finally:
            try:
                self.suite.stop_all()
            finally:
                signal.signal(signal.SIGTERM, previous)
