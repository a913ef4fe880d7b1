"""Shopper queries written by the local LLM for reviews (InPars, Bonifacio et al. 2022;
Promptagator, Dai et al. 2022): the training data of the reranker (``train_rerank.py``).

For each review the LLM is shown the review (title, then text, clipped to ``max_chars`` with
its head and tail, as the labeller does) and asked for ``per_review`` short queries a shopper
would type that the review answers: questions about the product and complaints or praise in
the shopper's own words, one per line. Lines are cleaned (numbering, bullets and quotes
removed), kept when they have 3-16 words and do not copy the review (a line whose 5-word
shingles all occur in the review is a copy), and de-duplicated. Greedy decoding (temperature
0), so a generator reproduces its queries.

The cache (:class:`QueryCache`) is a dataset in the settings' object store, one per generator
and prompt version, like the teacher labels::

    retrieval-queries/<generator identity>/<prompt version>/parts/*.jsonl   shards as written
    retrieval-queries/<generator identity>/<prompt version>/queries.jsonl   compacted
    retrieval-queries/<generator identity>/<prompt version>/manifest.json   counts, digest

One line per review: ``{"review_id", "queries", "generator", "prompt", "seconds", "at",
"raw"}``. Keyed by review id within the generator's folder: a run skips every review the cache
already holds, so generation is incremental and resumable (a shard is written every
``shard_size`` reviews; a killed run loses at most that many). Reviews are taken in a fixed
order (each training set in the order of a hash of the review id, the sets interleaved), so a
small budget covers every set and a larger one extends it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from itertools import zip_longest
from typing import Any

from shopsense.errors import DataError
from shopsense.schemas import Review
from shopsense.text import normalise_text, review_content, shingles

log = logging.getLogger(__name__)

__all__ = ["PROMPT_VERSION", "QueryCache", "QueryGenerator", "all_cached_queries",
           "generate_queries", "parse_queries", "review_order"]

PROMPT_VERSION = "q1"
ROOT = "retrieval-queries"

_SYSTEM = ("You write the search queries shoppers type into the review search of an online "
           "shop. You answer with queries only, one per line.")
_USER = """A customer review{category}:
\"\"\"{review}\"\"\"

Write {n} different search queries that a shopper might type and that this review answers:
questions about the product, and complaints or praise in the shopper's own words. Each query
has 3 to 12 words. Do not copy sentences from the review. One query per line, no numbering."""

_LEAD = re.compile(r"^\s*(?:[-*•]+\s*|\(?\d+[.):]\s*|(?:q|question|query|search)\s*\d*\s*:\s*)+",
                   re.IGNORECASE)
#: lines that are not queries: an answer, a restated review, a heading
_NOT_A_QUERY = re.compile(r"^\s*(?:a|answer|review|premise|note|here are)\b\s*[:\d]?",
                          re.IGNORECASE)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_queries(raw: str, review_text: str, n: int) -> list[str]:
    """The usable queries of an LLM reply (module docstring), at most ``n``."""
    seen: set[str] = set()
    source = shingles(review_text, 5)
    out = []
    for line in raw.splitlines():
        if _NOT_A_QUERY.match(line):
            continue
        q = _LEAD.sub("", line).strip().strip("\"'“”`").strip()
        words = q.split()
        if not 3 <= len(words) <= 16:
            continue
        norm = normalise_text(q)
        if not norm or norm in seen:
            continue
        own = shingles(q, 5)
        if len(words) >= 5 and own and own <= source:
            continue  # copied from the review
        seen.add(norm)
        out.append(q)
        if len(out) >= n:
            break
    return out


class QueryGenerator:
    """Writes queries for one review through an OpenAI-compatible chat endpoint."""

    def __init__(self, client: Any, *, per_review: int = 4, max_chars: int = 600,
                 max_tokens: int = 120) -> None:
        self.client = client
        self.per_review = per_review
        self.max_chars = max_chars
        self.max_tokens = max_tokens

    @property
    def identity(self) -> str:
        return self.client.endpoint.identity

    def describe(self) -> dict[str, Any]:
        return {"model": self.identity, "prompt": PROMPT_VERSION, "per_review": self.per_review,
                "max_chars": self.max_chars, "temperature": 0.0}

    def messages(self, review: Review) -> list[dict[str, str]]:
        from shopsense.llm.labeller import clip_review

        category = review.product.category if review.product else None
        shown = clip_review(review_content(review.title, review.text), self.max_chars)
        return [{"role": "system", "content": _SYSTEM},
                {"role": "user", "content": _USER.format(
                    category=f" ({category})" if category else "", review=shown,
                    n=self.per_review)}]

    def generate(self, review: Review) -> tuple[list[str], str]:
        raw = self.client.chat(self.messages(review), max_tokens=self.max_tokens,
                               temperature=0.0)
        return parse_queries(raw, review.text, self.per_review), raw


class QueryCache:
    """The generated-query dataset of one generator and prompt version (module docstring)."""

    def __init__(self, store: Any, generator: str, *, prompt_version: str = PROMPT_VERSION,
                 shard_size: int = 4) -> None:
        from shopsense.data.shards import ShardedRows
        from shopsense.store import join_key

        self.store = store
        self.generator = generator
        self.prompt_version = prompt_version
        self.prefix = join_key(ROOT, _safe(generator), prompt_version)
        self.shard_size = shard_size
        self._shards = ShardedRows(store, self.prefix, main="queries.jsonl",
                                   key=lambda row: str(row["review_id"]),
                                   shard_size=shard_size, check=self._check)
        self._rows: dict[str, dict[str, Any]] | None = None

    @staticmethod
    def open_store(settings: Any = None):
        from shopsense.settings import get_settings
        from shopsense.store import open_store

        s = settings or get_settings()
        return open_store(s.default_store_uri(), s)

    def _check(self, object_key: str, row: dict[str, Any]) -> None:
        if row.get("generator") != self.generator:
            raise DataError(f"{object_key}: generator {row.get('generator')!r} is not "
                            f"{self.generator!r}")

    # -- reading --------------------------------------------------------------------------
    def rows(self) -> dict[str, dict[str, Any]]:
        """review id -> its line (cached in memory)."""
        if self._rows is None:
            self._rows = self._shards.read()
        return self._rows

    def queries(self) -> dict[str, list[str]]:
        return {rid: list(r.get("queries") or []) for rid, r in self.rows().items()}

    def __contains__(self, review_id: str) -> bool:
        return review_id in self.rows()

    def __len__(self) -> int:
        return len(self.rows())

    def describe(self) -> dict[str, Any]:
        rows = self.rows()
        return {"where": self.prefix, "generator": self.generator, "prompt": self.prompt_version,
                "reviews": len(rows), "queries": sum(len(r.get("queries") or [])
                                                     for r in rows.values())}

    # -- writing --------------------------------------------------------------------------
    def add(self, review_id: str, queries: Sequence[str], *, seconds: float, raw: str) -> None:
        row = {"review_id": review_id, "queries": list(queries), "generator": self.generator,
               "prompt": self.prompt_version, "seconds": round(seconds, 2), "at": _now(),
               "raw": raw}
        self.rows()[review_id] = row
        self._shards.append(row)

    def flush(self) -> None:
        self._shards.flush()

    def compact(self, describe: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fold the shards into ``queries.jsonl`` and write ``manifest.json``."""

        def manifest(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
            return {"name": "retrieval-queries", "generator": self.generator,
                    "prompt_version": self.prompt_version, "reviews": len(rows),
                    "queries": sum(len(r.get("queries") or []) for r in rows.values()),
                    "reviews_without_usable_query": sum(not r.get("queries")
                                                        for r in rows.values()),
                    "generator_settings": describe or {}, "created_at": _now()}

        self._rows, written = self._shards.compact(manifest)
        return written


def _safe(identity: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in identity)


def all_cached_queries(store: Any, generator: str | None = None,
                       prompt_version: str = PROMPT_VERSION
                       ) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """review id -> queries from every generator's cache in ``store`` (or only the one whose
    identity is ``generator``), and a description of each cache read. A review with queries
    from several generators gets all of them."""
    folders = sorted({k[len(ROOT) + 1:].split("/", 1)[0] for k in store.list(ROOT)
                      if k[len(ROOT) + 1:].split("/")[1:2] == [prompt_version]})
    out: dict[str, list[str]] = {}
    described = []
    for folder in folders:
        from shopsense.data.shards import ShardedRows

        probe = ShardedRows(store, f"{ROOT}/{folder}/{prompt_version}", main="queries.jsonl",
                            key=lambda row: str(row["review_id"]), shard_size=1)
        first = next(iter(probe.read().values()), None)
        if first is None:
            continue
        ident = str(first.get("generator"))
        if generator is not None and generator != ident:
            continue
        cache = QueryCache(store, ident, prompt_version=prompt_version)
        for rid, qs in cache.queries().items():
            have = out.setdefault(rid, [])
            have.extend(q for q in qs if q not in have)
        described.append(cache.describe())
    return out, described


def review_order(sets: dict[str, Sequence[Review]]) -> list[Review]:
    """The fixed generation order (module docstring): each set by a hash of the review id,
    the sets interleaved."""
    def key(r: Review) -> str:
        return hashlib.sha256(r.id.encode()).hexdigest()

    ordered = [sorted({r.id: r for r in rs}.values(), key=key) for rs in sets.values()]
    return [r for group in zip_longest(*ordered) for r in group if r is not None]


def generate_queries(
    reviews: Iterable[Review],
    generator: QueryGenerator,
    cache: QueryCache,
    *,
    limit: int | None = None,
    max_seconds: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate queries for the reviews the cache lacks, in order, until ``limit`` new reviews
    or ``max_seconds``; returns what was done. The cache is compacted at the end (also when
    interrupted)."""
    todo = [r for r in reviews if r.id not in cache and r.text.strip()]
    if limit is not None:
        todo = todo[:limit]
    t0 = time.monotonic()
    done, made, empty = 0, 0, 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="generate queries", unit="review", leave=False,
                   disable=None)
    stopped = None
    try:
        for review in todo:
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                stopped = "max_seconds"
                break
            t1 = time.monotonic()
            queries, raw = generator.generate(review)
            cache.add(review.id, queries, seconds=time.monotonic() - t1, raw=raw)
            done += 1
            made += len(queries)
            empty += not queries
            if bar is not None:
                bar.update(1)
                bar.set_postfix(queries=made)
            if done % 10 == 0:
                rate = done / max(1e-9, time.monotonic() - t0)
                log.info("generated queries for %d/%d reviews (%d queries, %.1f reviews/min)",
                         done, len(todo), made, rate * 60)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        if bar is not None:
            bar.close()
        manifest = cache.compact(generator.describe())
    return {"generated_reviews": done, "generated_queries": made, "reviews_without_query": empty,
            "pending_reviews": len(todo) - done, "seconds": round(time.monotonic() - t0, 1),
            "stopped": stopped, "cache": {**cache.describe(), "manifest": manifest}}
