"""`appeals calendar recompute` against the running suite: an assignment dispatched on 30
December gets provisional deadlines in a year without official data; once an operator
enters that year's notice (here: a complete override with one more day off), the command
moves the deadline, the department (plain pika) is told exactly once, supervision's clock
follows, and a second run changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import requests
import yaml

from appeals_common.calendar import statutory_holidays
from appeals_common.settings import ROOT
from tests.e2e import suite_time
from tests.e2e.bus import appeal_body, poll

pytestmark = pytest.mark.e2e



def recompute(suite_env: dict[str, str], config_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "appeals_common.cli", "calendar", "recompute"],
        env={**os.environ, **suite_env, "APPEALS_CONFIG_DIR": str(config_dir)},
        capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def test_recompute_moves_a_provisional_deadline_and_tells_the_unit_once(
        bus, urls, token, move_clock, suite_env, tmp_path):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    # The next New Year into a year without official data, found at run time.
    year = suite_time.first_uncovered_year(suite_time.today().year + 1)
    move_clock(suite_time.at(datetime(year - 1, 12, 30).date()))
    reg_no = bus.receipt(bus.submit(appeal_body(title="出口退税进度慢", content="退税申请一个月未到账")))[
        "reg_no"]
    lead = bus.dept_message("swj", "assignment", reg_no)
    assert lead["deadlines_provisional"] is True
    old_respond = datetime.fromisoformat(lead["respond_by"])
    assert old_respond.year == year

    # The notices arrive: the statutory days (of the year before too, when it lacked data)
    # plus, say, the day the unit's answer was due.
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    years = {}
    for y in (year - 1, year):
        if y == year or not suite_time.CALENDAR.covers(y):
            days = set(statutory_holidays(y)) | ({old_respond.date()} if y == year else set())
            years[y] = {"complete": True, "holidays": [d.isoformat() for d in sorted(days)]}
    (config / "calendar_overrides.yaml").write_text(yaml.safe_dump({"years": years}),
                                                    encoding="utf-8")
    first = recompute(suite_env, config)
    assert first["dispatch"]["changed"] >= 1 and first["dispatch"]["still_provisional"] == 0

    told = bus.dept_message("swj", "deadlines_changed", reg_no, timeout=30)
    assert told["assignment_id"] == lead["assignment_id"] and told["duty"] == "assignment"
    assert datetime.fromisoformat(told["previous"]["respond_by"]) == old_respond
    new_respond = datetime.fromisoformat(told["deadlines"]["respond_by"])
    assert new_respond > old_respond and told["deadlines_provisional"] is False
    # Supervision's clock follows the event dispatch sent with it.
    poll(lambda: any(c["kind"] == "respond" and datetime.fromisoformat(c["due_at"]) == new_respond
                     for c in requests.get(f"{urls['supervision']}/appeals/{reg_no}/deadlines",
                                           headers=staff).json()), timeout=30)

    again = recompute(suite_env, config)
    assert again["dispatch"]["changed"] == 0 and again["supervision"]["changed"] == 0
    with pytest.raises(TimeoutError):
        bus.dept_message("swj", "deadlines_changed", reg_no, timeout=5)
