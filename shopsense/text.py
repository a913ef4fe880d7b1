"""Text rules every deployable shares: what a review's content is, what "the same text" means,
and exact and near-duplicate detection (MinHash over word shingles, LSH banding).

``review_content(title, text)`` is the one rule for the text a model or an index reads of a
review (title, then text); training, the LLM labeller, the indexes and the reranker all use it,
so what is trained on is what is served and searched.

``NearDuplicateIndex.add(key, text)`` answers whether ``text`` duplicates something already
added: ``"exact"`` (same normalised text), ``"near"`` (Jaccard similarity of word 3-shingles of
at least ``threshold`` with a candidate found through LSH), or ``None``. Candidates are
confirmed with the exact Jaccard of the shingle sets, so LSH only decides what is compared.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import Literal

import numpy as np

__all__ = ["NearDuplicateIndex", "jaccard", "normalise_text", "review_content", "shingles"]

_WORD = re.compile(r"[a-z0-9']+")
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def review_content(title: str | None, text: str) -> str:
    """The title (when there is one) leading the text, joined by a full stop unless the title
    already ends a sentence."""
    title = (title or "").strip()
    if not title:
        return text
    return f"{title} {text}" if title[-1] in ".!?" else f"{title}. {text}"


def normalise_text(text: str) -> str:
    """Lower case, words only, single spaces: what "the same text" means here."""
    return " ".join(_WORD.findall(text.lower()))


def shingles(text: str, k: int = 3) -> set[str]:
    words = normalise_text(text).split()
    if len(words) < k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / max(1, len(a | b))


def _hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


class NearDuplicateIndex:
    """An in-memory index of texts for exact and near-duplicate lookups.

    ``measure``: ``"jaccard"`` (shared shingles over all of both texts' shingles) or
    ``"containment"`` (over the indexed text's shingles only: how much of an indexed text a
    query repeats, even when the query adds text of its own). Containment wants more, shorter
    LSH bands (e.g. ``bands=32`` of 2 rows) so that pairs of low Jaccard are still candidates.
    """

    def __init__(self, *, threshold: float = 0.7, num_perm: int = 64, bands: int = 16,
                 k: int = 3, seed: int = 1,
                 measure: Literal["jaccard", "containment"] = "jaccard") -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold, self.k, self.bands, self.measure = threshold, k, bands, measure
        self.rows = num_perm // bands
        rng = np.random.default_rng(seed)
        self._xor = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self._mul = rng.integers(1, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)
        self._exact: dict[str, str] = {}
        self._buckets: list[dict[bytes, list[str]]] = [defaultdict(list) for _ in range(bands)]
        self._sets: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def _signature(self, sh: set[str]) -> np.ndarray:
        h = np.array([_hash64(s) for s in sh] or [0], dtype=np.uint64)
        with np.errstate(over="ignore"):
            mixed = ((h[:, None] ^ self._xor[None, :]) * self._mul[None, :]) & _MASK
        return mixed.min(axis=0)

    def find(self, text: str) -> tuple[str, str] | None:
        """``(kind, key)`` of an earlier text this one duplicates, else ``None``."""
        norm = normalise_text(text)
        digest = hashlib.sha256(norm.encode()).hexdigest()
        if digest in self._exact:
            return "exact", self._exact[digest]
        sh = shingles(text, self.k)
        sig = self._signature(sh)
        seen: set[str] = set()
        for b in range(self.bands):
            band = sig[b * self.rows : (b + 1) * self.rows].tobytes()
            for key in self._buckets[b].get(band, ()):
                if key in seen:
                    continue
                seen.add(key)
                stored = self._sets[key]
                score = (jaccard(sh, stored) if self.measure == "jaccard"
                         else len(sh & stored) / max(1, len(stored)))
                if score >= self.threshold:
                    return "near", key
        return None

    def add(self, key: str, text: str) -> tuple[str, str] | None:
        """Add ``text`` under ``key`` unless it duplicates an earlier one; returns ``find``'s
        answer (``None`` when it was added)."""
        dup = self.find(text)
        if dup is not None:
            return dup
        self.force_add(key, text)
        return None

    def force_add(self, key: str, text: str) -> None:
        norm = normalise_text(text)
        self._exact.setdefault(hashlib.sha256(norm.encode()).hexdigest(), key)
        sh = shingles(text, self.k)
        self._sets[key] = sh
        sig = self._signature(sh)
        for b in range(self.bands):
            self._buckets[b][sig[b * self.rows : (b + 1) * self.rows].tobytes()].append(key)
