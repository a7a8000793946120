"""Run the four services as local processes: `appeals up`, the tests and the benchmark.

Each service is its own OS process (`appeals run <name>`), as in production; this only
starts them, waits until each answers /health, and restarts or kills one on request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
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
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", "appeals_common.cli", "run", service],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)

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
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def watch(self) -> int:
        """Block until one service dies, Ctrl-C or SIGTERM; then stop the others."""

        def terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, terminate)
        try:
            while True:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        print(f"{name} exited with {proc.returncode}; stopping the suite",
                              file=sys.stderr)
                        return 1
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop_all()
