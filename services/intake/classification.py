"""分类梳理: fill in category and industry chain when the publisher gave none, and say
which rule decided. Pure rules over the reference data."""

from __future__ import annotations

from dataclasses import dataclass

from appeals_common.registries import Category, IndustryChain

OTHER_CATEGORY = "99"


@dataclass(frozen=True)
class Classification:
    category: str
    category_rule: str
    industry_chain: str | None
    chain_rule: str


class Classifier:
    def __init__(self, categories: dict[str, Category], chains: dict[str, IndustryChain]) -> None:
        self.categories = categories
        self.chains = chains
        # Specific categories before their parents; otherwise file order.
        self._by_depth = sorted(categories.values(), key=lambda c: -len(c.code))

    def unknown_fields(self, category: str | None, chain: str | None) -> dict[str, list[str]]:
        # Empty means "not given", as in classify().
        errors: dict[str, list[str]] = {}
        if category and category not in self.categories:
            errors["category"] = [f"unknown category {category!r}"]
        if chain and chain not in self.chains:
            errors["industry_chain"] = [f"unknown industry chain {chain!r}"]
        return errors

    def classify(self, title: str, content: str, category: str | None, chain: str | None,
                 known_chain: tuple[str, str] | None = None) -> Classification:
        """`known_chain` is (chain, reg_no) from the enterprise's earlier appeal, if any."""
        text = f"{title}\n{content}"
        if category:
            category_rule = "given"
        else:
            category, category_rule = OTHER_CATEGORY, "default"
            for candidate in self._by_depth:
                word = next((k for k in candidate.keywords if k in text), None)
                if word:
                    category, category_rule = candidate.code, f"keyword:{word}"
                    break
        if chain:
            chain_rule = "given"
        else:
            chain_rule = "none"
            for candidate in self.chains.values():
                word = next((k for k in candidate.keywords if k in text), None)
                if word:
                    chain, chain_rule = candidate.code, f"keyword:{word}"
                    break
            if chain is None and known_chain is not None:
                chain, chain_rule = known_chain[0], f"enterprise-history:{known_chain[1]}"
        return Classification(category, category_rule, chain, chain_rule)
