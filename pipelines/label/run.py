"""Labels for reviews that have none, from the LLM and the champion model together.

For each review without a label: a star rating gives it (``label_source="rating"``);
otherwise the LLM's zero-shot distribution (:mod:`shopsense.llm.labeller`) and the champion's
are pooled log-linearly, ``p ∝ p_llm^w · p_champion^(1-w)`` (``llm_weight`` = w), and the review
takes the most likely label when its probability reaches ``min_confidence``
(``label_source`` ``ensemble``, or ``llm`` / ``model`` when only one of them spoke;
``label_confidence`` = that probability). Reviews below the threshold stay unlabelled: they
still reach training through the teacher's distribution (distillation), never as a guess.

With an LLM time budget, the LLM reads the reviews the champion is least sure of first; the
rest are judged by the champion alone. LLM labels go to the teacher-label cache, so a second
run, and the training that follows, reuse them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from shopsense import LABELS
from shopsense.data.dataset import dataset_images, open_dataset_uri, read_dataset, write_dataset
from shopsense.schemas import Review, rating_to_label
from shopsense.text import review_content

log = logging.getLogger(__name__)

__all__ = ["AutoLabelConfig", "AutoLabelReport", "auto_label", "run_auto_label"]

ProbaFn = Callable[[list[str]], np.ndarray]


class AutoLabelConfig(BaseModel):
    min_confidence: float = Field(0.9, ge=0.34, le=1.0, description="probability a label "
                                  "needs to be given")
    llm_weight: float = Field(0.75, ge=0, le=1, description="the LLM's weight in the pool "
                              "(1: the LLM alone, 0: the champion alone)")
    use_llm: bool = True
    use_champion: bool = True
    champion: str | None = Field(None, description="model URI; default the registry champion")
    llm_budget_s: float | None = Field(None, gt=0, description="stop asking the LLM after "
                                       "this many seconds (the champion judges the rest)")
    use_ratings: bool = True


class AutoLabelReport(BaseModel):
    total: int
    already_labelled: int
    from_rating: int
    to_label: int
    labelled: dict[str, int]  # by source: ensemble, llm, model
    unlabelled: int
    coverage: float  # labelled / to_label
    llm_read: int
    llm_seconds: float
    mean_confidence: float | None
    teacher: str | None
    champion: str | None


def _pool(p_llm: np.ndarray | None, p_model: np.ndarray | None, w: float) -> np.ndarray:
    if p_llm is None:
        return p_model  # type: ignore[return-value]
    if p_model is None:
        return p_llm
    logp = w * np.log(np.clip(p_llm, 1e-9, None)) + (1 - w) * np.log(np.clip(p_model, 1e-9, None))
    q = np.exp(logp - logp.max(axis=1, keepdims=True))
    return q / q.sum(axis=1, keepdims=True)


def auto_label(reviews: Sequence[Review], config: AutoLabelConfig, *,
               llm: Any = None, champion: ProbaFn | None = None, teacher_cache: Any = None,
               progress: Callable[[int, int], None] | None = None
               ) -> tuple[list[Review], AutoLabelReport]:
    """Label what can be labelled (see the module doc). ``llm``: a
    :class:`~shopsense.llm.labeller.ZeroShotLabeller`; ``champion``: texts -> probabilities."""
    out = list(reviews)
    already = [i for i, r in enumerate(out) if r.label is not None]
    from_rating = []
    todo = []
    for i, r in enumerate(out):
        if r.label is not None or not r.text.strip():
            continue
        if config.use_ratings and r.rating is not None:
            out[i] = r.model_copy(update={"label": rating_to_label(r.rating),
                                          "label_source": "rating", "label_confidence": None})
            from_rating.append(i)
        else:
            todo.append(i)
    texts = [review_content(out[i].title, out[i].text) for i in todo]
    p_model = champion(texts) if (champion is not None and config.use_champion and texts) \
        else None
    p_llm = None
    llm_read = 0
    llm_start = time.monotonic()
    if llm is not None and config.use_llm and texts:
        order = list(range(len(texts)))
        if p_model is not None:  # the champion's least certain first
            order.sort(key=lambda j: float(p_model[j].max()))
        p_llm = np.full((len(texts), len(LABELS)), np.nan)
        for j in order:
            p_llm[j] = llm.proba([texts[j]], cache=teacher_cache)[0]
            llm_read += 1
            if progress is not None:
                progress(llm_read, len(texts))
            if config.llm_budget_s and time.monotonic() - llm_start > config.llm_budget_s:
                log.info("LLM budget of %.0f s spent after %d of %d reviews",
                         config.llm_budget_s, llm_read, len(texts))
                break
    llm_seconds = time.monotonic() - llm_start if p_llm is not None else 0.0
    counts = {"ensemble": 0, "llm": 0, "model": 0}
    confidences = []
    for j, i in enumerate(todo):
        pl = p_llm[j : j + 1] if p_llm is not None and not np.isnan(p_llm[j]).any() else None
        pm = p_model[j : j + 1] if p_model is not None else None
        if pl is None and pm is None:
            continue
        p = _pool(pl, pm, config.llm_weight)[0]
        k = int(np.argmax(p))
        if p[k] < config.min_confidence:
            continue
        source = "ensemble" if pl is not None and pm is not None else ("llm" if pl is not None
                                                                         else "model")
        counts[source] += 1
        confidences.append(float(p[k]))
        out[i] = out[i].model_copy(update={"label": LABELS[k], "label_source": source,
                                           "label_confidence": round(float(p[k]), 4)})
    n_labelled = sum(counts.values())
    report = AutoLabelReport(
        total=len(out), already_labelled=len(already), from_rating=len(from_rating),
        to_label=len(todo), labelled=counts, unlabelled=len(todo) - n_labelled,
        coverage=round(n_labelled / len(todo), 4) if todo else 1.0, llm_read=llm_read,
        llm_seconds=round(llm_seconds, 1),
        mean_confidence=round(float(np.mean(confidences)), 4) if confidences else None,
        teacher=getattr(llm, "identity", None) if llm is not None else None,
        champion=None)
    return out, report


def champion_proba(uri: str | None, settings=None) -> tuple[ProbaFn, str]:
    """The registry model ``uri`` (default the champion) as texts -> probabilities."""
    from shopsense import registry
    from shopsense.model.classifier import Predictor
    from shopsense.model.train import predict_in_batches
    from shopsense.settings import get_settings

    s = settings or get_settings()
    resolved = registry.resolve(s, uri)
    predictor = Predictor.from_bundle(resolved.bundle_dir)
    return (lambda texts: predict_in_batches(predictor, list(texts)),
            f"{resolved.name}/{resolved.version}")


def run_auto_label(reviews_uri: str, out_uri: str, config: AutoLabelConfig | None = None, *,
                   settings=None, progress: bool = False) -> AutoLabelReport:
    """Read the dataset ``reviews_uri``, label it, publish it at ``out_uri`` (atomically; the
    photos carried over). The LLM is the configured one (the embedded server is started when
    no ``SHOPSENSE_LLM_BASE_URL`` is set); the champion comes from the registry."""
    import contextlib

    from shopsense.errors import ModelNotFound
    from shopsense.settings import get_settings

    cfg = config or AutoLabelConfig()
    s = settings or get_settings()
    store, prefix = open_dataset_uri(reviews_uri, s)
    manifest, reviews = read_dataset(store, prefix)
    reviews = list(reviews)
    champion, champion_name = None, None
    if cfg.use_champion:
        try:
            champion, champion_name = champion_proba(cfg.champion, s)
        except ModelNotFound as exc:
            if cfg.champion:  # a model the caller named must exist
                raise
            log.warning("no champion to pool with the LLM (%s): the LLM labels alone", exc)
    with contextlib.ExitStack() as stack:
        labeller = cache = None
        if cfg.use_llm:
            from shopsense.llm.server import llm_endpoint
            from shopsense.llm.teacher import teacher_labeller, teacher_labels

            ep = stack.enter_context(llm_endpoint(s))
            labeller, cache = teacher_labeller(ep, s), teacher_labels(ep, s)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = stack.enter_context(tqdm(desc="auto-label (LLM)", unit="review"))

        def tick(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(1)

        labelled, report = auto_label(reviews, cfg, llm=labeller, champion=champion,
                                      teacher_cache=cache, progress=tick)
        if cache is not None:
            cache.compact()
    report.champion = champion_name
    out_store, out_prefix = open_dataset_uri(out_uri, s)
    write_dataset(out_store, out_prefix, labelled, name=f"{manifest.name}-labelled",
                  provenance=[*manifest.provenance,
                              {"step": "auto_label", "config": cfg.model_dump(mode="json"),
                               "report": report.model_dump(mode="json")}],
                  images=dataset_images(store, prefix, labelled))
    log.info("auto-label: %d of %d reviews labelled (%s), %d from ratings, %d left unlabelled",
             sum(report.labelled.values()), report.to_label, report.labelled,
             report.from_rating, report.unlabelled)
    return report
