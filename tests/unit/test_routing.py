from pathlib import Path

import pytest

from appeals_common.registries import (
    RegistryError,
    load_departments,
    load_routing_rules,
    load_source_systems,
)
from services.dispatch.routing import NoRoute, Router

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_config(load_routing_rules(CONFIG, load_departments(CONFIG)))


def test_keywords_choose_lead_and_co_units(router):
    decision = router.route({"title": "施工许可办理慢", "content": "", "channel": "sit_in"})
    assert (decision.lead, decision.co, decision.rule) == ("zjj", ("zrzyj",), "construction-permit")


def test_channel_rule(router):
    decision = router.route({"title": "项目落地咨询", "content": "", "channel": "investment_matrix"})
    assert decision.lead == "swtcj"


def test_catch_all(router):
    assert router.route({"title": "其他问题", "content": "", "channel": "online"}).rule == "default"


def test_skipping_a_unit_that_returned_it(router):
    decision = router.route({"title": "施工许可", "content": "", "channel": "online"},
                            skip=frozenset({"zjj"}))
    assert decision.lead != "zjj"
    with pytest.raises(NoRoute):
        Router.from_config([{"name": "d", "lead": "a"}]).route({}, skip=frozenset({"a"}))


def test_bad_routing_file_is_refused_with_the_rule_named(tmp_path):
    (tmp_path / "routing.yaml").write_text(
        "rules:\n  - {name: x, keywords: [税], lead: nobody}\n  - {name: d, lead: swj}\n")
    with pytest.raises(RegistryError, match=r"rules\[0\] \(x\) names unknown department 'nobody'"):
        load_routing_rules(tmp_path, load_departments(CONFIG))
    (tmp_path / "routing.yaml").write_text("rules:\n  - {name: x, keywords: [税], lead: swj}\n")
    with pytest.raises(RegistryError, match="catch-all"):
        load_routing_rules(tmp_path, load_departments(CONFIG))


def test_registries_refuse_bad_codes_and_duplicates(tmp_path):
    (tmp_path / "departments.yaml").write_text(
        "departments:\n  - {code: Bad.Code, name: x}\n")
    with pytest.raises(RegistryError, match="not a code"):
        load_departments(tmp_path)
    (tmp_path / "departments.yaml").write_text(
        "departments:\n  - {code: events, name: x}\n")
    with pytest.raises(RegistryError, match="reserved"):
        load_departments(tmp_path)
    (tmp_path / "source_systems.yaml").write_text(
        "source_systems:\n  - {name: a}\n  - {name: a}\n")
    with pytest.raises(RegistryError, match="listed twice"):
        load_source_systems(tmp_path)
