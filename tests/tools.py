"""External programs some tests need (promtool, prometheus, docker-compose)."""

from __future__ import annotations

import os

import pytest


def missing_tool(reason: str) -> None:
    """Skip on a developer's machine without the tool; in CI (where scripts/test.sh
    installs it) its absence fails the run instead of hiding the test."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} - CI must have it (scripts/test.sh installs it)")
    pytest.skip(reason)
