"""类题破解: grouping similar appeals into class problems (services/supervision/class_problems.py).

The main test clusters the hand-written appeals of tests/data/class_problem_appeals.yaml and
scores the result against their gold classes; the others pin down one rule each.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from services.supervision.class_problems import (
    AppealText,
    Cluster,
    ClusterSettings,
    find_clusters,
    pairwise_precision_recall,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "class_problem_appeals.yaml"
NOW = datetime(2026, 6, 15, 10, 0)

# Three appeals about one problem (消防验收 delays), worded differently.
FIRE = [
    "消防验收迟迟排不上：商业综合体项目已竣工，申报消防验收一个多月没有安排现场检查。",
    "写字楼消防验收排队两个月，检查人员排不过来，没有明确的完成时限，交付受影响。",
    "住宅小区二期消防验收拖延，现场查验后又要求重新做消防检测，交房日期快到了。",
]


def _codes(entries: list[dict]) -> set[str]:
    codes = set()
    for entry in entries:
        codes.add(entry["code"])
        codes |= _codes(entry.get("children", []))
    return codes


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return yaml.safe_load(DATA.read_text(encoding="utf-8"))["appeals"]


def to_appeals(records: list[dict], now: datetime = NOW) -> list[AppealText]:
    """reg_nos in registration order, as intake hands them out."""
    ordered = sorted(records, key=lambda r: (-r["days_ago"], r["id"]))
    return [
        AppealText(
            appeal_id=r["id"],
            reg_no=f"WH-2026-{n:06d}",
            registered_at=now - timedelta(days=r["days_ago"]),
            industry_chain=r["industry_chain"],
            category=r["category"],
            text=r["text"],
        )
        for n, r in enumerate(ordered, start=1)
    ]


def appeal(appeal_id: str, text: str, days_ago: float = 1,
           chain: str | None = "construction_realestate", category: str | None = "0102") -> AppealText:
    registered_at = NOW - timedelta(days=days_ago)
    return AppealText(appeal_id, f"WH-2026-{appeal_id}", registered_at, chain, category, text)


def gold_classes(records: list[dict], settings: ClusterSettings) -> list[set[str]]:
    """Gold classes as the clustering can see them: in-window members only, and only classes
    that still have min_size members."""
    classes: dict[str, set[str]] = {}
    for r in records:
        if r["class"] and r["days_ago"] <= settings.window_days:
            classes.setdefault(r["class"], set()).add(r["id"])
    return [members for members in classes.values() if len(members) >= settings.min_size]


# --- the data set itself ------------------------------------------------------------------

def test_data_set_is_well_formed(records):
    chains = {c["code"] for c in yaml.safe_load((ROOT / "config" / "industry_chains.yaml").read_text(
        encoding="utf-8"))["industry_chains"]}
    categories = _codes(yaml.safe_load((ROOT / "config" / "categories.yaml").read_text(
        encoding="utf-8"))["categories"])
    assert len(records) >= 60
    assert len({r["id"] for r in records}) == len(records)
    assert len({r["text"] for r in records}) == len(records)
    for r in records:
        assert r["industry_chain"] is None or r["industry_chain"] in chains, r["id"]
        assert r["category"] in categories, r["id"]
        assert 20 <= len(r["text"]) <= 120, r["id"]
        assert 0 <= r["days_ago"] <= 120, r["id"]
    settings = ClusterSettings()
    classes = gold_classes(records, settings)
    assert 8 <= len(classes) <= 10 and all(3 <= len(c) <= 8 for c in classes)
    assert sum(1 for r in records if r["class"] is None) >= 15
    # some appeals of a class lie outside the window
    assert any(r["class"] and r["days_ago"] > settings.window_days for r in records)


# --- quality on the data set ---------------------------------------------------------------

def test_clusters_match_the_gold_classes(records):
    settings = ClusterSettings()
    clusters = find_clusters(to_appeals(records), NOW, settings)
    gold = gold_classes(records, settings)
    precision, recall = pairwise_precision_recall([set(c.appeal_ids) for c in clusters], gold)
    label = {r["id"]: r["class"] or "-" for r in records}
    print(f"\nclass problems: threshold={settings.threshold} window={settings.window_days}d "
          f"min_size={settings.min_size}: {len(clusters)} clusters, {len(gold)} gold classes")
    for c in clusters:
        print(f"  {c.size} score={c.score:.3f} {c.industry_chain or '*'}/{c.category or '*'} "
              f"{'、'.join(c.keywords)}: {' '.join(f'{i}({label[i]})' for i in c.appeal_ids)}")
    print(f"pairwise precision={precision:.3f} recall={recall:.3f}")
    assert precision >= 0.8
    assert recall >= 0.8


def test_every_cluster_is_consistent(records):
    appeals = {a.appeal_id: a for a in to_appeals(records)}
    settings = ClusterSettings()
    for c in find_clusters(list(appeals.values()), NOW, settings):
        members = [appeals[i] for i in c.appeal_ids]
        assert list(c.appeal_ids) == sorted(c.appeal_ids)
        assert c.reg_nos == tuple(a.reg_no for a in members)
        assert c.size >= settings.min_size
        assert all(NOW - a.registered_at <= timedelta(days=settings.window_days) for a in members)
        # one chain or one category is shared by all, and reported
        assert c.industry_chain is not None or c.category is not None
        assert c.industry_chain is None or all(a.industry_chain == c.industry_chain for a in members)
        assert c.category is None or all(a.category == c.category for a in members)
        # average linkage: every merge had a mean of at least the threshold
        assert settings.threshold <= c.score <= 1.0
        assert 1 <= len(c.keywords) <= 5 and len(set(c.keywords)) == len(c.keywords)


# --- one rule each ---------------------------------------------------------------------------

def test_window_excludes_old_appeals():
    appeals = [appeal("1", FIRE[0], 10), appeal("2", FIRE[1], 40), appeal("3", FIRE[2], 100)]
    assert find_clusters(appeals, NOW) == []
    (cluster,) = find_clusters(appeals, NOW, ClusterSettings(window_days=120))
    assert cluster.appeal_ids == ("1", "2", "3")


def test_window_bounds():
    appeals = [appeal("1", FIRE[0], 90), appeal("2", FIRE[1], 0), appeal("3", FIRE[2], 30)]
    assert [c.appeal_ids for c in find_clusters(appeals, NOW)] == [("1", "2", "3")]
    assert find_clusters(appeals, NOW - timedelta(seconds=1)) == []      # "2" not yet registered
    assert find_clusters(appeals, NOW + timedelta(seconds=1)) == []      # "1" out of the window


def test_data_set_window_drops_old_members(records):
    old = {r["id"] for r in records if r["days_ago"] > 90}
    clustered = {i for c in find_clusters(to_appeals(records), NOW) for i in c.appeal_ids}
    assert old and not old & clustered
    # class "arrears" has two appeals left in the window: never a class problem
    arrears = {r["id"] for r in records if r["class"] == "arrears"}
    assert all(len(arrears & set(c.appeal_ids)) < 2 for c in find_clusters(to_appeals(records), NOW))


def test_min_size_drops_pairs():
    pair = [appeal("1", FIRE[0]), appeal("2", FIRE[1])]
    assert find_clusters(pair, NOW) == []
    (cluster,) = find_clusters(pair, NOW, ClusterSettings(min_size=2))
    assert cluster.appeal_ids == ("1", "2")


def test_different_chain_and_category_never_cluster():
    same_text = [
        appeal("1", FIRE[0], chain="construction_realestate", category="0102"),
        appeal("2", FIRE[0], chain="culture_tourism", category="0103"),
        appeal("3", FIRE[0], chain=None, category="0201"),
        appeal("4", FIRE[0], chain=None, category=None),
    ]
    assert find_clusters(same_text, NOW, ClusterSettings(min_size=2)) == []
    # sharing either one is enough
    assert find_clusters([appeal("1", FIRE[0], chain="construction_realestate", category="0102"),
                          appeal("2", FIRE[1], chain="construction_realestate", category="0104"),
                          appeal("3", FIRE[2], chain="construction_realestate", category=None)], NOW)
    assert find_clusters([appeal("1", FIRE[0], chain="construction_realestate", category="0102"),
                          appeal("2", FIRE[1], chain="culture_tourism", category="0102"),
                          appeal("3", FIRE[2], chain=None, category="0102")], NOW)


def test_no_cluster_holds_an_incomparable_pair(records):
    appeals = {a.appeal_id: a for a in to_appeals(records)}
    low = ClusterSettings(threshold=0.01, min_size=2)       # merges as much as it can
    clusters = find_clusters(list(appeals.values()), NOW, low)
    assert clusters
    for c in clusters:
        for x, y in combinations((appeals[i] for i in c.appeal_ids), 2):
            assert (x.industry_chain and x.industry_chain == y.industry_chain) or \
                (x.category and x.category == y.category), (x.appeal_id, y.appeal_id)


def test_output_is_deterministic(records):
    appeals = to_appeals(records)
    expected = find_clusters(appeals, NOW)
    rnd = random.Random(7)
    for _ in range(5):
        shuffled = appeals[:]
        rnd.shuffle(shuffled)
        assert find_clusters(shuffled, NOW) == expected
    keys = [(-c.size, min(c.reg_nos)) for c in expected]
    assert keys == sorted(keys)


def test_order_largest_first_then_earliest_reg_no():
    other = ["企业申请融资担保，担保公司要求房产反担保，轻资产公司拿不出抵押物，贷款办不下来。",
             "批发商户申请政府性融资担保贷款，担保费率偏高，评审时间太长，希望降低担保门槛。",
             "旅行社需要流动资金，银行要求担保公司担保才放款，融资担保机构审批太慢。"]
    appeals = [appeal(f"f{n}", text, n + 1) for n, text in enumerate(FIRE)]
    appeals += [appeal(f"g{n}", text, n + 10, chain=None, category="0403") for n, text in enumerate(other)]
    appeals = [AppealText(a.appeal_id, f"WH-2026-{n:06d}", a.registered_at, a.industry_chain,
                          a.category, a.text) for n, a in enumerate(reversed(appeals))]
    clusters = find_clusters(appeals, NOW)
    assert [c.appeal_ids for c in clusters] == [("g0", "g1", "g2"), ("f0", "f1", "f2")]
    bigger = appeals + [appeal("f9", "商场消防验收申报后一个多月没安排现场检查，竣工备案办不了。", 5)]
    assert [c.appeal_ids[0] for c in find_clusters(bigger, NOW)] == ["f0", "g0"]


def test_empty_input():
    assert find_clusters([], NOW) == []
    assert find_clusters([appeal("1", FIRE[0], 200)], NOW) == []


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError):
        find_clusters([appeal("1", FIRE[0]), appeal("1", FIRE[1])], NOW)


@pytest.mark.parametrize("kwargs", [
    {"threshold": 0.0}, {"threshold": -0.1}, {"threshold": 1.01},
    {"window_days": 0}, {"window_days": -5},
    {"min_size": 1}, {"min_size": 0},
])
def test_settings_are_validated(kwargs):
    with pytest.raises(ValueError):
        ClusterSettings(**kwargs)


def test_settings_bounds_are_allowed():
    settings = ClusterSettings(threshold=1.0, window_days=1, min_size=2)
    assert (settings.threshold, settings.window_days, settings.min_size) == (1.0, 1, 2)
    assert 0 < ClusterSettings().threshold < 1


def test_pairwise_precision_recall():
    gold = [{"a", "b", "c"}, {"d", "e"}]
    assert pairwise_precision_recall(gold, gold) == (1.0, 1.0)
    # predicted pairs ab de df ef: 2 of 4 right; gold pairs ab ac bc de: 2 of 4 found
    assert pairwise_precision_recall([{"a", "b"}, {"d", "e", "f"}], gold) == (2 / 4, 2 / 4)
    assert pairwise_precision_recall([], gold) == (1.0, 0.0)
    assert pairwise_precision_recall([{"a", "b"}], []) == (0.0, 1.0)
    assert pairwise_precision_recall([], []) == (1.0, 1.0)


def test_cluster_is_a_value():
    c = Cluster(("1", "2", "3"), ("r1", "r2", "r3"), None, "0301", ("补贴",), 0.2)
    assert c.size == 3
    with pytest.raises(AttributeError):
        c.score = 1.0  # type: ignore[misc]
