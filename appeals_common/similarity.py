"""Text similarity for Chinese appeals: word segmentation (jieba) and a similarity score.

Used to flag a possible repeat of an earlier appeal and, later, to group similar appeals
into a class problem (类题破解). Pure functions; no framework.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from functools import lru_cache

import jieba

jieba.setLogLevel(logging.WARNING)

# Words that say nothing about what the appeal is about.
STOPWORDS = frozenset([
    "的", "了", "和", "与", "及", "或", "在", "是", "我", "我们",
    "公司", "企业", "本", "该", "这", "那", "有", "无", "已", "已经",
    "尚", "未", "还", "也", "都", "就", "请", "希望", "能否", "能",
    "可以", "问题", "情况", "相关", "进行", "一个", "目前", "由于", "因为",
    "所以", "但是", "对", "向", "从", "到", "为", "被", "把", "给",
    "将", "等",
])
_WORD = re.compile(r"[\w\u4e00-\u9fff]", re.UNICODE)


@lru_cache(maxsize=4096)
def tokens(text: str) -> tuple[str, ...]:
    """Meaningful words of a text, in order (search-mode segmentation, lower-cased)."""
    words = []
    for word in jieba.cut_for_search(text):
        word = word.strip().lower()
        if word and word not in STOPWORDS and _WORD.search(word) and not word.isdigit():
            words.append(word)
    return tuple(words)


def cosine(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Cosine similarity of two bags of words, 0..1."""
    if not a or not b:
        return 0.0
    ca, cb = Counter(a), Counter(b)
    dot = sum(ca[w] * cb[w] for w in ca.keys() & cb.keys())
    norm = math.sqrt(sum(v * v for v in ca.values())) * math.sqrt(sum(v * v for v in cb.values()))
    return dot / norm if norm else 0.0


def similarity(text_a: str, text_b: str) -> float:
    return cosine(tokens(text_a), tokens(text_b))
