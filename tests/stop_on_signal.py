"""pytest plugin (pyproject addopts `-p tests.stop_on_signal`): a SIGTERM (CI's timeout, a
person's kill) ends the run like Ctrl-C, so the fixtures' teardown stops the services it
started and drops its vhost and databases."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
