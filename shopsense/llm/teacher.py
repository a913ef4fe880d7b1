"""The LLM as teacher: which texts to label, and the shared cache of its labels.

``teacher_labels(endpoint)`` opens the teacher-label dataset of an endpoint's model in the
settings' object store; ``label_into_cache(texts)`` labels every text the cache lacks (with
progress and a rate in the log) and compacts the cache at the end. Labels are keyed by the
text as the LLM saw it, so a review reads the same label whether it came from a set, a
dataset or a cold-start file.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shopsense.llm.labeller import TeacherLabels, ZeroShotLabeller
from shopsense.llm.server import LLMEndpoint

log = logging.getLogger(__name__)

__all__ = ["label_into_cache", "soft_labels", "teacher_labeller", "teacher_labels", "texts_for"]


def teacher_labels(endpoint: LLMEndpoint, settings=None) -> TeacherLabels:
    from shopsense.settings import get_settings
    from shopsense.store import open_store

    s = settings or get_settings()
    return TeacherLabels(open_store(s.default_store_uri(), s), endpoint.identity)


def teacher_labeller(endpoint: LLMEndpoint, settings=None) -> ZeroShotLabeller:
    from shopsense.llm.client import LLMClient
    from shopsense.settings import get_settings

    s = settings or get_settings()
    return ZeroShotLabeller(LLMClient(endpoint, timeout_s=s.llm_timeout_s),
                            max_chars=s.llm.label_max_chars)


def texts_for(*, sets: list[str], data: Path | None = None, limit: int | None = None,
              half: Literal["a", "b"] | None = None, seed: int = 7) -> list[str]:
    """The texts (``review_content``) of shared sets and/or a JSONL file of reviews."""
    from shopsense.data.loaders import load_set
    from shopsense.data.splits import seeded_half
    from shopsense.text import review_content

    texts: list[str] = []
    for name in sets:
        reviews = [r for r in load_set(name) if r.text.strip()]
        if half:
            reviews = seeded_half(reviews, half, seed)
        if limit:
            random.Random(seed).shuffle(reviews)
            reviews = reviews[:limit]
        texts.extend(review_content(r.title, r.text) for r in reviews)
    if data is not None:
        from shopsense.data.jsonl import iter_json_objects

        for _, rec in iter_json_objects(Path(data)):
            if isinstance(rec.get("text"), str) and rec["text"].strip():
                texts.append(review_content(rec.get("title"), rec["text"]))
    return texts


def label_into_cache(texts: list[str], *, settings=None, progress: bool = False
                     ) -> dict[str, Any]:
    """Label what the teacher cache lacks of ``texts``; a summary of what was done."""
    from shopsense.llm.server import llm_endpoint

    start = time.monotonic()
    with llm_endpoint(settings) as ep:
        cache = teacher_labels(ep, settings)
        labeller = teacher_labeller(ep, settings)
        known = cache.lookup()
        keys = {labeller.key(t) for t in texts}
        before = len(keys & known.keys())
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(keys) - before, desc="LLM labels", unit="text")

        def tick(done: int, total: int) -> None:
            if bar is not None:
                bar.update(1)

        unique = list({labeller.key(t): t for t in texts}.values())
        try:
            labeller.proba(unique, cache=cache, progress=tick)
        finally:
            if bar is not None:
                bar.close()
        manifest = cache.compact()
    return {"teacher": ep.identity, "texts": len(keys), "cached_before": before,
            "labelled": len(keys) - before, "cache_size": manifest["count"],
            "seconds": round(time.monotonic() - start, 1), "cache": cache.prefix}


def soft_labels(texts: list[str], *, teacher: str | None = None, settings=None
                ) -> dict[str, np.ndarray]:
    """``{text: probabilities}`` for those of ``texts`` the teacher has labelled (nothing is
    labelled here: run ``shopsense llm label`` first). ``teacher``: an identity; default the
    configured LLM's."""
    from shopsense.llm.labeller import teacher_key
    from shopsense.llm.server import configured_identity
    from shopsense.settings import get_settings
    from shopsense.store import open_store

    s = settings or get_settings()
    identity = teacher or configured_identity(s)
    known = TeacherLabels(open_store(s.default_store_uri(), s), identity).lookup()
    out = {}
    for t in texts:
        row = known.get(teacher_key(t, s.llm.label_max_chars))
        if row is not None:
            out[t] = row
    return out
