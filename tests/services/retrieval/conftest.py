"""Fixtures for the retrieval tests.

CPU budget: MiniLM runs at 128 tokens here, and one session-wide caching embedder is shared, so
each distinct text is embedded once per session (the suite embeds about 300 texts).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from services.retrieval.schema import Doc
from services.retrieval.settings import RetrievalSettings
from tests.services.retrieval.fake_opensearch import FakeOpenSearchServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEST_MAX_LENGTH = 128


class CachingEmbedder:
    """A TextEmbedder that remembers each text's vector (and counts what it really embedded)."""

    dim = 384

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}
        self.embedded = 0

    def embed(self, texts):
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for text, vec in zip(todo, self.inner.embed(todo)):
                self.cache[text] = vec
            self.embedded += len(todo)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])

    def embed_one(self, text):
        return self.embed([text])[0]


@pytest.fixture(scope="session")
def embedder():
    from shopsense.embed import text_embedder

    # the process-wide instance: tests/shopsense/test_embed.py reuses the loaded weights
    return CachingEmbedder(text_embedder(TEST_MAX_LENGTH, 32))


def settings(**overrides) -> RetrievalSettings:
    """Embedded-mode settings regardless of the environment."""
    base = {"qdrant_url": None, "opensearch_url": None, "text_max_length": TEST_MAX_LENGTH}
    return RetrievalSettings(**{**base, **overrides})


@pytest.fixture
def fake_os():
    with FakeOpenSearchServer() as fake:
        yield fake


#: documents for the filter semantics shared by every backend; all contain "sound"
FILTER_DOCS = [
    Doc(id="a", text="great sound, comfortable", category="headphones", label="positive",
        product="P1", rating=5),
    Doc(id="b", text="sound cuts out after a week", category="headphones", label="negative",
        product="P2", rating=1),
    Doc(id="c", text="sound is fine for the price", category="speakers", label="neutral",
        product="P3", rating=3),
    Doc(id="d", text="room filling sound and bass", category="speakers", label="positive",
        product="P3", rating=4.5),
    Doc(id="e", text="sound okay, no rating given", category="Headphones"),
    Doc(id="f", text="tinny sound, returned it", label="negative", product="P1", rating=2),
    Doc(id="g", text="the sound of the ringer is loud", category="cell phones", label="positive",
        product="P4", rating=4),
]

#: (filters, expected ids): exact and case-sensitive terms, inclusive ranges, missing = no match
FILTER_CASES = [
    ({}, set("abcdefg")),
    ({"category": "headphones"}, {"a", "b"}),
    ({"category": "Headphones"}, {"e"}),
    ({"category": "head"}, set()),
    ({"category": "cell phones"}, {"g"}),
    ({"category": "cell"}, set()),
    ({"label": "negative"}, {"b", "f"}),
    ({"product": "P3"}, {"c", "d"}),
    ({"product": "p1"}, set()),
    ({"rating_gte": 4}, {"a", "d", "g"}),
    ({"rating_lte": 2}, {"b", "f"}),
    ({"rating_gte": 3, "rating_lte": 4.5}, {"c", "d", "g"}),
    ({"rating_gte": 4.5, "rating_lte": 4.5}, {"d"}),
    ({"category": "speakers", "label": "positive"}, {"d"}),
    ({"category": "headphones", "rating_gte": 2}, {"a"}),
    ({"label": "positive", "product": "P1", "rating_lte": 5}, {"a"}),
]


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def index_dir(tmp_path) -> Path:
    d = tmp_path / "retrieval"
    d.mkdir()
    return d
