from pathlib import Path

import pytest

from appeals_common.privacy import mask_phone
from appeals_common.registries import (
    RegistryError,
    load_categories,
    load_departments,
    load_industry_chains,
)
from appeals_common.similarity import similarity, tokens
from services.intake.classification import Classifier

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    departments = load_departments(CONFIG)
    return Classifier(load_categories(CONFIG), load_industry_chains(CONFIG, departments))


def test_specific_category_before_its_parent(classifier):
    c = classifier.classify("食品经营许可延续", "", None, None)
    assert (c.category, c.category_rule) == ("0103", "keyword:食品经营许可")


def test_nothing_matches_means_other_and_no_chain(classifier):
    c = classifier.classify("你好", "谢谢", None, None)
    assert (c.category, c.category_rule, c.industry_chain, c.chain_rule) == \
        ("99", "default", None, "none")


def test_given_values_are_kept(classifier):
    c = classifier.classify("施工许可", "", "0301", "modern_finance")
    assert (c.category, c.category_rule, c.industry_chain, c.chain_rule) == \
        ("0301", "given", "modern_finance", "given")


def test_keywords_beat_history_for_the_chain(classifier):
    c = classifier.classify("物流仓储用地", "", None, None, ("modern_finance", "WH-2026-000001"))
    assert c.industry_chain == "modern_logistics"
    c = classifier.classify("咨询", "", None, None, ("modern_finance", "WH-2026-000001"))
    assert c.chain_rule == "enterprise-history:WH-2026-000001"


def test_reference_files_are_checked(tmp_path):
    (tmp_path / "categories.yaml").write_text(
        "categories:\n  - {code: '01', name: a, children: [{code: '0201', name: b}]}\n")
    with pytest.raises(RegistryError, match="must start with its parent"):
        load_categories(tmp_path)
    (tmp_path / "industry_chains.yaml").write_text(
        "industry_chains:\n  - {code: x, name: y, lead: nobody}\n")
    with pytest.raises(RegistryError, match="unknown department 'nobody'"):
        load_industry_chains(tmp_path, load_departments(CONFIG))


def test_segmentation_drops_stopwords_and_punctuation():
    words = tokens("我公司的施工许可申请，已经提交两周。")
    assert "施工" in words and "许可" in words
    assert "的" not in words and "，" not in words and "公司" not in words


def test_similarity_orders_related_above_unrelated():
    a = "新厂房用电容量不足，申请增容一直没有结果"
    b = "厂房用电增容申请迟迟没有结果，容量不够"
    c = "希望帮助对接技工学校招聘技术工人"
    assert similarity(a, b) > 0.5 > similarity(a, c)
    assert similarity(a, a) == pytest.approx(1.0)
    assert similarity("", a) == 0.0


@pytest.mark.parametrize("phone,masked", [
    ("13800138000", "138****8000"), ("0871-65123456", "087****3456"), ("12", "**")])
def test_mask_phone(phone, masked):
    assert mask_phone(phone) == masked
