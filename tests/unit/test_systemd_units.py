"""deploy/systemd: one unit per service, a target and a health-check timer that catches a hang."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from appeals_common.settings import SERVICES
from tests.tools import missing_tool

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def parse(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("service", SERVICES)
def test_service_unit_has_required_keys(service: str) -> None:
    unit = parse(UNITS / f"appeals-{service}.service")
    for key in ("After", "Wants", "StartLimitIntervalSec", "StartLimitBurst", "PartOf"):
        assert unit["Unit"].get(key), key
    for dep in ("network-online.target", "rabbitmq-server.service", "postgresql.service"):
        assert dep in unit["Unit"]["After"]
    svc = unit["Service"]
    assert svc["Restart"] in ("always", "on-failure")
    assert svc["RestartSec"]
    assert svc["User"] == "appeals"
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/appeals/appeals.env"
    assert svc["ExecStart"].endswith(f"appeals run {service}")
    assert unit["Install"]["WantedBy"] == "appeals.target"
    assert f"appeals-healthcheck@{service}.timer" in (UNITS / f"appeals-{service}.service").read_text()


def test_target_and_healthcheck() -> None:
    target = parse(UNITS / "appeals.target")
    for service in SERVICES:
        assert f"appeals-{service}.service" in target["Unit"]["Wants"]
    check = parse(UNITS / "appeals-healthcheck@.service")
    assert check["Service"]["Type"] == "oneshot"
    script = check["Service"]["ExecStart"]
    assert "/health" in script and "--max-time 2" in script
    assert "systemctl restart appeals-%i.service" in script
    assert "-f" not in script.split()  # a 503 "degraded" answer is alive, not hung
    timer = parse(UNITS / "appeals-healthcheck@.timer")
    assert timer["Timer"]["OnUnitInactiveSec"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing_tool("systemd-analyze is not installed (Debian's systemd package has it)")
    for unit in UNITS.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    for suffix in ("service", "timer"):
        shutil.copy(UNITS / f"appeals-healthcheck@.{suffix}",
                    tmp_path / f"appeals-healthcheck@intake.{suffix}")
    names = [f"appeals-{s}.service" for s in SERVICES] + [
        "appeals.target", "appeals-healthcheck@intake.service", "appeals-healthcheck@intake.timer"]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "/opt/appeals/" not in line]  # not installed here
    assert not problems, problems
