"""Nothing time-dependent reads the real clock behind the suite's back: business time
comes from a Clock (appeals_common/clock.py), which every process shifts the same way
(APPEALS_CLOCK_OFFSET_SECONDS, CI's year-end run) and tests pin (APPEALS_CLOCK_FILE).

The few places that read wall-clock time directly are listed with why; a new one fails
this test until it either uses the Clock or is added here with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("appeals_common", "services", "department_client", "tests/e2e", "bench")
CLOCK_READS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
               ("date", "today"), ("time", "time")}

# (file, function) -> why it may read real time.
ALLOWED = {
    ("appeals_common/clock.py", "now"): "the Clock itself (real time plus the offset)",
    ("appeals_common/db.py", "utcnow"):
        "outbox leases, publish times and retention: durations that must not jump with a "
        "moved test clock",
    ("appeals_common/auth.py", "issue_token"): "token lifetimes are real time",
    ("appeals_common/nameko_ext.py", "_park"): "x-dead-lettered-at: when it happened, for "
                                               "operators reading logs",
    ("appeals_common/publisher.py", "_publish_locked"): "the AMQP timestamp property (transport)",
    ("appeals_common/cli.py", "cmd_clock"): "computes the offset from real time",
    ("department_client/contract.py", "now_iso"): "the department's clock, with the offset",
    ("department_client/client.py", "publish_reply"): "the AMQP timestamp property (transport)",
    ("bench/e2e.py", "now_iso"): "the benchmark's source system and departments, unshifted",
    ("tests/e2e/test_openapi_live.py", "test_no_or_bad_token_is_401"):
        "mints tokens that expire on the real clock, as the services check them",
}


def _clock_reads() -> list[tuple[str, str, int]]:
    found = []
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            rel = path.relative_to(REPO).as_posix()
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                            and isinstance(node.func.value, ast.Name) \
                            and (node.func.value.id, node.func.attr) in CLOCK_READS:
                        found.append((rel, func.name, node.lineno))
    return found


def test_only_the_listed_places_read_the_real_clock() -> None:
    reads = _clock_reads()
    unexpected = [f"{file}:{line} in {func}()" for file, func, line in reads
                  if (file, func) not in ALLOWED]
    assert not unexpected, "read the suite's Clock instead (or list it with a reason): " + \
        ", ".join(unexpected)


def test_the_allow_list_has_no_stale_entries() -> None:
    used = {(file, func) for file, func, _ in _clock_reads()}
    assert set(ALLOWED) <= used, set(ALLOWED) - used


@pytest.mark.parametrize("module", ["appeals_common/schemas.py", "services/intake/usecases.py"])
def test_validation_takes_its_now_from_the_clock(module: str) -> None:
    text = (REPO / module).read_text(encoding="utf-8")
    assert "datetime.now(" not in text
