"""Scheduling: which source, and which of its URLs, a free worker fetches next (Thompson
sampling over URL patterns, :func:`~pipelines.scrape.state.thompson_choice`, or uniform as an
ablation), and the evidence each page adds (pages and new reviews per source and pattern)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

import numpy as np

from pipelines.scrape.state import SourceState, thompson_choice

__all__ = ["choose", "reward", "url_pattern"]


def url_pattern(url: str) -> str:
    """The URL's first path segment, plus ``?page`` for a paginated one: the bandit's arm."""
    p = urlparse(url)
    first = p.path.strip("/").split("/")[0] if p.path.strip("/") else ""
    return first + ("?page" if "page=" in p.query else "")


def choose(avail: list[SourceState], bandit: Literal["thompson", "uniform"],
           rng: np.random.Generator) -> tuple[SourceState, str, int] | None:
    """Pop the next ``(source, url, depth)`` from the frontiers of ``avail``; ``None`` when
    none is left."""
    if not avail:
        return None
    if bandit == "uniform":  # ablation: a random source, its oldest URL
        st = avail[int(rng.integers(len(avail)))]
        url, depth = st.frontier.pop(0)
        return st, url, int(depth)
    arms = []
    for st in avail:
        prior = st.rate_mean()
        for pattern in {url_pattern(u) for u, _ in st.frontier}:
            pages, reviews = st.patterns.get(pattern, [0.0, 0.0])
            arms.append(((st.source, pattern), reviews, pages, prior))
    source, pattern = thompson_choice(arms, rng)
    st = next(s for s in avail if s.source == source)
    best_i = min((i for i, (u, _) in enumerate(st.frontier) if url_pattern(u) == pattern),
                 key=lambda i: (st.frontier[i][1], i))
    url, depth = st.frontier.pop(best_i)
    return st, url, int(depth)


def reward(st: SourceState, pattern: str, new: int) -> None:
    """One page of ``pattern`` fetched from ``st`` gave ``new`` new reviews."""
    st.bandit_pages += 1
    st.bandit_reviews += new
    p = st.patterns.setdefault(pattern, [0.0, 0.0])
    p[0] += 1
    p[1] += new
