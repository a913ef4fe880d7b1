"""The two baselines every model is compared with.

``keyword``: the rule of the system shopsense replaces. Count its 10 positive and 10 negative
words in the lower-cased text; more positive -> positive, more negative -> negative, else
neutral. ``vader``: VADER's compound score (lexicon shipped in ``vaderSentiment``), with the
usual +-0.05 thresholds for neutral.

Both return a probability-like row per text over (negative, neutral, positive), so that the
evaluation can restrict the choice to the labels present in a file, as for any model.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import numpy as np

POSITIVE_WORDS = (
    "excellent amazing great best love wonderful perfect fantastic awesome exceeded".split()
)
NEGATIVE_WORDS = "terrible awful bad worst hate horrible poor disappointed waste broken".split()
_WORD = re.compile(r"[a-z']+")


def keyword_counts(text: str) -> tuple[int, int]:
    words = _WORD.findall(text.lower())
    pos = sum(w in POSITIVE_WORDS for w in words)
    neg = sum(w in NEGATIVE_WORDS for w in words)
    return pos, neg


def keyword_proba(texts: Sequence[str]) -> np.ndarray:
    """One-hot rows for the rule's decision (ties are neutral).

    With only two labels allowed, a tie has no winner; the row gives negative and positive
    the same tiny weight and the evaluation breaks the tie towards the first allowed label
    in (negative, neutral, positive) order, which is the conservative reading.
    """
    rows = np.zeros((len(texts), 3), dtype=np.float64)
    for i, text in enumerate(texts):
        pos, neg = keyword_counts(text)
        if pos > neg:
            rows[i] = (0.0, 0.0, 1.0)
        elif neg > pos:
            rows[i] = (1.0, 0.0, 0.0)
        else:
            rows[i] = (0.001, 0.998, 0.001)
    return rows


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_proba(texts: Sequence[str]) -> np.ndarray:
    """Rows from VADER's compound score c in [-1, 1]: neutral when |c| < 0.05.

    For two-label files the more likely of negative/positive is the sign of c.
    """
    analyzer = _vader()
    rows = np.zeros((len(texts), 3), dtype=np.float64)
    for i, text in enumerate(texts):
        c = analyzer.polarity_scores(text)["compound"]
        p_pos = (c + 1.0) / 2.0
        if abs(c) < 0.05:
            rows[i] = (0.05 * (1 - p_pos), 0.95, 0.05 * p_pos)
        else:
            rows[i] = (0.1 * (1 - p_pos), 0.0, 0.1 * p_pos)
            rows[i, 2 if c > 0 else 0] += 0.9
    return rows


BASELINES = {"keyword": keyword_proba, "vader": vader_proba}
