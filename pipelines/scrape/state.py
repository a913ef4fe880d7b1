"""What the scraping agent remembers about each source, across runs, in the object store.

One JSON object per source (a ``host:port``) at ``<state_prefix>/<source>.json``: lifetime
counters (pages fetched, reviews extracted, new valid reviews, duplicates, failures, 429s,
label balance), decayed bandit counts, the learned per-host request interval, the selectors
learned for the site, URL-pattern yields, and the crawl frontier (visited URLs with their
status, URLs still to fetch). Each run reads these, and publishes them after its dataset.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from pipelines.scrape.extract import SelectorSet
from shopsense.store import ObjectNotFound, ObjectStore, join_key

__all__ = ["SourceState", "load_state", "save_state", "state_key", "thompson_choice"]


class SourceState(BaseModel):
    source: str
    runs: int = 0
    pages: int = 0
    requests: int = 0
    extracted: int = 0
    new_reviews: int = 0
    duplicates: int = 0
    failures: int = 0
    rate_limited: int = 0
    labels: dict[str, int] = Field(default_factory=lambda: {"negative": 0, "neutral": 0,
                                                              "positive": 0})
    # bandit evidence, decayed by ScrapeConfig.decay at the start of each run
    bandit_pages: float = 0.0
    bandit_reviews: float = 0.0
    prior_rate: float | None = Field(None, description="LLM prior: expected new reviews/page")
    interval_s: float | None = Field(None, description="learned per-host request interval")
    selectors: SelectorSet | None = None
    selector_failures: list[str] = Field(default_factory=list)
    dynamic: bool | None = Field(None, description="reviews appear only after scripts ran")
    structured: bool | None = Field(None, description="structured data yielded reviews")
    patterns: dict[str, list[float]] = Field(default_factory=dict,
                                             description="URL pattern -> [pages, new reviews]")
    visited: dict[str, int] = Field(default_factory=dict, description="URL -> last status")
    frontier: list[list[Any]] = Field(default_factory=list, description="[url, depth]")

    @property
    def duplicate_rate(self) -> float:
        return self.duplicates / max(1, self.extracted)

    def summary(self) -> dict[str, Any]:
        return {
            "pages": self.pages, "new_reviews": self.new_reviews, "failures": self.failures,
            "duplicate_rate": round(self.duplicate_rate, 3), "labels": self.labels,
            "yield_per_page": round(self.new_reviews / max(1, self.pages), 3),
        }

    def pattern_score(self, pattern: str, prior: float) -> float:
        pages, reviews = self.patterns.get(pattern, [0.0, 0.0])
        return (reviews + prior * 1.0) / (pages + 1.0)

    def rate_mean(self, prior_pages: float = 2.0) -> float:
        prior = self.prior_rate if self.prior_rate is not None else 1.0
        return (self.bandit_reviews + prior * prior_pages) / (self.bandit_pages + prior_pages)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def state_key(prefix: str, source: str) -> str:
    return join_key(prefix, _SAFE.sub("_", source) + ".json")


def load_state(store: ObjectStore, prefix: str, source: str) -> SourceState:
    try:
        raw = store.get_bytes(state_key(prefix, source))
    except ObjectNotFound:
        return SourceState(source=source)
    return SourceState.model_validate(json.loads(raw))


def save_state(store: ObjectStore, prefix: str, state: SourceState) -> None:
    store.put_bytes(state_key(prefix, state.source), state.model_dump_json(indent=1).encode(),
                    content_type="application/json")


def thompson_choice(arms: list[tuple[Any, float, float, float]], rng: np.random.Generator, *,
                    prior_pages: float = 2.0) -> Any:
    """Thompson sampling, Gamma-Poisson on new valid reviews per page fetched.

    Each arm is ``(key, reviews, pages, prior_mean)``; its posterior rate is
    Gamma(shape = reviews + prior_mean * k, rate = pages + k) with k = ``prior_pages``
    pseudo-pages. One draw per arm; the key of the largest draw is returned (``None`` for no
    arms). The agent's arms are (source, URL pattern) pairs present in the frontier: the
    evidence is that pattern's decayed yield on that source, the prior mean the source's
    decayed yield (or the LLM's prior, or an optimistic 1 review/page for a new source), so a
    source whose productive pages are used up stops being chosen for them."""
    best, best_draw = None, -1.0
    for key, reviews, pages, prior in arms:
        shape = reviews + prior * prior_pages
        rate = pages + prior_pages
        draw = float(rng.gamma(max(shape, 1e-3), 1.0 / rate))
        if draw > best_draw:
            best, best_draw = key, draw
    return best
