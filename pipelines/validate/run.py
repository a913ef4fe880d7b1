"""Adversarial validation and data-quality gates for synthetic reviews.

``run_validate(real, synthetic, out, config) -> ValidationReport``:

1. Quality gates on every synthetic review, in order, each rejection with a reason:
   ``length`` (too few words / too many characters), ``language`` (share of common English
   function words and of letters too low), ``duplicate`` (exact or near-duplicate of a real
   review or of an earlier synthetic one, MinHash/Jaccard), ``label`` (a teacher model gives
   the opposite polarity at least ``teacher_threshold``; teacher: a bundle/registry model when
   ``teacher`` names one, else VADER).
2. Adversarial: a discriminator (logistic regression) on features of real vs synthetic
   reviews: MiniLM text embeddings (``text_features="embedding"``), simple style features
   (length, words per sentence, punctuation, capitals, digits, type/token ratio, …) and, when
   both sides have photos, EfficientNet image embeddings. Out-of-fold probabilities from
   stratified k-fold give the cross-validated ROC-AUC. While the AUC is above
   ``target_auc`` and more than ``min_keep_fraction`` of the synthetic reviews remain, the
   ``reject_step`` share that the discriminator flags most confidently as synthetic is
   rejected (reason ``adversarial``) and the AUC recomputed on what is kept.
3. Output: the kept reviews as a dataset at ``out`` (images copied), the rejected ones as a
   dataset at ``out + "-rejected"`` plus ``rejected.jsonl`` (id, reason, detail) beside it,
   and ``report.json`` at ``out`` (AUC before/after, counts per reason).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from shopsense import LABELS
from shopsense.data.dataset import (
    dataset_images,
    open_dataset_uri,
    read_dataset,
    write_dataset,
)
from shopsense.schemas import Review
from shopsense.store import ObjectNotFound, ObjectStore, join_key
from shopsense.text import NearDuplicateIndex, review_content

log = logging.getLogger(__name__)

__all__ = [
    "ValidateConfig",
    "ValidationReport",
    "discriminator_auc",
    "run_validate",
    "style_features",
]

_STOP = set(["the", "a", "an", "and", "or", "but", "is", "are", "was", "were", "be", "been", "it", "this", "that", "of", "to", "in", "on", "for", "with", "as", "at", "by", "from", "i", "you", "he", "she", "they", "we", "my", "your", "his", "her", "their", "not", "no", "so", "if", "very", "just", "have", "has", "had", "do", "does", "did", "would", "could", "will", "can", "than", "then", "there", "what", "which", "who", "when"])
_WORD = re.compile(r"[A-Za-z']+")


class ValidateConfig(BaseModel):
    min_words: int = 5
    max_chars: int = 5000
    min_english: float = Field(0.15, description="share of words that are English function "
                               "words")
    near_duplicate_threshold: float = 0.7
    teacher: str | None = Field(None, description="'llm' (the configured LLM), a model URI or "
                                "bundle dir; default VADER")
    teacher_threshold: float = Field(0.9, description="reject when the teacher gives the "
                                     "opposite polarity at least this probability")
    label_check: Literal["opposite", "agree"] = Field(
        "opposite", description="opposite: reject clear contradictions only; agree: keep only "
        "what the labeller reads as the spec's label")
    text_features: Literal["embedding", "style"] = "embedding"
    image_features: bool = True
    folds: int = 5
    target_auc: float = 0.6
    reject_step: float = 0.1
    min_keep_fraction: float = 0.5
    max_real: int = 2000
    real_category: str | None = Field(None, description="compare with the real reviews of "
                                      "this category only, when at least 20 exist")
    seed: int = 0


class ValidationReport(BaseModel):
    kept_uri: str
    rejected_uri: str
    synthetic: int
    real: int
    kept: int
    rejected: int
    rejected_by_reason: dict[str, int]
    auc_before: float | None
    auc_after: float | None
    auc_rounds: list[dict[str, float]]
    features: list[str]


# ------------------------------------------------------------------------------ features


def style_features(texts: list[str]) -> np.ndarray:
    rows = []
    for t in texts:
        words = _WORD.findall(t)
        n = max(1, len(words))
        sents = max(1, len(re.findall(r"[.!?]+", t)))
        chars = max(1, len(t))
        rows.append([
            np.log1p(len(t)), np.log1p(n), n / sents,
            sum(c in ",;:" for c in t) / chars, t.count("!") / chars, t.count("?") / chars,
            sum(c.isupper() for c in t) / chars, sum(c.isdigit() for c in t) / chars,
            len({w.lower() for w in words}) / n, np.mean([len(w) for w in words]) if words
            else 0.0, sum(w.lower() in _STOP for w in words) / n,
            float(bool(re.search(r"\b(I|my)\b", t))), t.count('"') / chars,
        ])
    return np.asarray(rows, dtype=np.float32)


def discriminator_auc(X: np.ndarray, y: np.ndarray, *, folds: int, seed: int
                      ) -> tuple[float, np.ndarray]:
    """Cross-validated ROC-AUC of logistic regression and out-of-fold P(synthetic)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(min(folds, np.bincount(y).min()))
    if k < 2:
        return float("nan"), np.full(len(y), 0.5)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    proba = cross_val_predict(clf, X, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba)), proba


# ------------------------------------------------------------------------------- helpers


def _load_real(real: str, data_dir: Any
               ) -> tuple[list[Review], list[tuple[ObjectStore | None, str]]]:
    """The real reviews ``real`` names (comma-separated shared set names and/or dataset URIs)
    and, for each, where its photos are (no store: a shared set, photos not used)."""
    from shopsense.data.loaders import SET_NAMES, load_set

    reviews: list[Review] = []
    origins: list[tuple[ObjectStore | None, str]] = []
    for item in (x.strip() for x in real.split(",")):
        if not item:
            continue
        if item in SET_NAMES:
            part, origin = load_set(item, data_dir), (None, "")
        else:
            store, prefix = open_dataset_uri(item)
            part, origin = list(read_dataset(store, prefix)[1]), (store, prefix)
        reviews.extend(part)
        origins.extend([origin] * len(part))
    return reviews, origins


def _llm_teacher(texts: list[str]) -> np.ndarray:
    from shopsense.llm.server import llm_endpoint
    from shopsense.llm.teacher import teacher_labeller, teacher_labels

    with llm_endpoint() as ep:
        cache = teacher_labels(ep)
        try:
            return teacher_labeller(ep).proba(texts, cache=cache)
        finally:
            cache.compact()


def _teacher(uri: str | None) -> Callable[[list[str]], np.ndarray]:
    if uri == "llm":
        return _llm_teacher
    if uri is None:
        from shopsense.baselines import vader_proba

        return lambda texts: vader_proba(texts)
    from shopsense import registry
    from shopsense.model.classifier import Predictor
    from shopsense.settings import get_settings

    predictor = Predictor.from_bundle(registry.resolve(get_settings(), uri).bundle_dir)
    return lambda texts: np.concatenate([predictor.predict_proba(texts[i : i + 64],
                                                                 [None] * len(texts[i : i + 64]))
                                         for i in range(0, len(texts), 64)])


def _image_bytes(store: ObjectStore | None, prefix: str, r: Review) -> bytes | None:
    if store is None or not r.images:
        return None
    try:
        return store.get_bytes(join_key(prefix, r.images[0].uri))
    except (ObjectNotFound, ValueError):
        return None


# ----------------------------------------------------------------------------------- run


def run_validate(real: str, synthetic: str, out: str, config: ValidateConfig | None = None, *,
                 data_dir: Any = None,
                 teacher: Callable[[list[str]], np.ndarray] | None = None,
                 rejected_out: str | None = None) -> ValidationReport:
    """Validate the synthetic dataset ``synthetic`` (URI) against ``real`` (shared set names
    and/or dataset URIs, comma-separated); publish kept and rejected datasets (see module doc;
    ``rejected_out``: the rejected dataset's URI, default ``out + "-rejected"``)."""
    cfg = config or ValidateConfig()
    rng = np.random.default_rng(cfg.seed)
    real_reviews, origins = _load_real(real, data_dir)
    if cfg.real_category:
        from shopsense.data.dataset import category_of

        own = [i for i, r in enumerate(real_reviews) if category_of(r) == cfg.real_category]
        if len(own) >= 20:
            real_reviews, origins = [real_reviews[i] for i in own], [origins[i] for i in own]
    if len(real_reviews) > cfg.max_real:
        idx = sorted(int(i) for i in rng.choice(len(real_reviews), cfg.max_real, replace=False))
        real_reviews, origins = [real_reviews[i] for i in idx], [origins[i] for i in idx]
    syn_store, syn_prefix = open_dataset_uri(synthetic)
    syn_manifest, syn_iter = read_dataset(syn_store, syn_prefix)
    syn = list(syn_iter)
    reasons: dict[str, tuple[str, str]] = {}

    # 1. quality gates
    index = NearDuplicateIndex(threshold=cfg.near_duplicate_threshold)
    for r in real_reviews:
        index.force_add(f"real:{r.id}", r.text)
    for r in syn:
        words = _WORD.findall(r.text)
        if len(words) < cfg.min_words or len(r.text) > cfg.max_chars:
            reasons[r.id] = ("length", f"{len(words)} words, {len(r.text)} chars")
            continue
        english = sum(w.lower() in _STOP for w in words) / max(1, len(words))
        letters = sum(c.isalpha() for c in r.text) / max(1, len(r.text))
        if english < cfg.min_english or letters < 0.6:
            reasons[r.id] = ("language", f"function words {english:.2f}, letters {letters:.2f}")
            continue
        dup = index.add(r.id, r.text)
        if dup is not None:
            reasons[r.id] = ("duplicate", f"{dup[0]} duplicate of {dup[1]}")
    polar = ("negative", "positive")
    candidates = [r for r in syn if r.id not in reasons and
                  (r.label in polar or (cfg.label_check == "agree" and r.label))]
    if candidates:
        proba = (teacher or _teacher(cfg.teacher))([review_content(r.title, r.text)
                                                     for r in candidates])
        for r, row in zip(candidates, proba):
            if cfg.label_check == "agree":
                said = LABELS[int(np.argmax(row))]
                if said != r.label:
                    reasons[r.id] = ("label", f"labeller reads {said} ({row.max():.2f})")
                continue
            opposite = row[0] if r.label == "positive" else row[2]
            if opposite >= cfg.teacher_threshold:
                reasons[r.id] = ("label", f"teacher gives the opposite polarity {opposite:.2f}")

    # 2. adversarial
    pool = [r for r in syn if r.id not in reasons]
    feats_names = ["style"]
    texts = [r.text for r in real_reviews] + [r.text for r in pool]
    blocks = [style_features(texts)]
    if cfg.text_features == "embedding":
        from shopsense.embed import text_embedder

        blocks.append(text_embedder().embed(texts))
        feats_names.append("minilm")
    real_imgs = [_image_bytes(store, prefix, r) for r, (store, prefix) in zip(real_reviews,
                                                                               origins)]
    syn_imgs = [_image_bytes(syn_store, syn_prefix, r) for r in pool]
    if cfg.image_features and any(real_imgs) and any(syn_imgs):
        import io

        from PIL import Image

        from shopsense.embed import image_embedder

        both = real_imgs + syn_imgs
        have = [i for i, b in enumerate(both) if b]
        emb = np.zeros((len(both), 1280), dtype=np.float32)
        pics = [Image.open(io.BytesIO(both[i])).convert("RGB") for i in have]
        emb[have] = image_embedder().embed(pics)
        blocks.append(emb)
        feats_names.append("efficientnet")
    X = np.concatenate(blocks, axis=1)
    n_real = len(real_reviews)
    keep = np.ones(len(pool), dtype=bool)
    rounds: list[dict[str, float]] = []
    auc_before = auc = None
    floor = int(np.ceil(cfg.min_keep_fraction * len(pool)))
    while len(pool) >= 2 and n_real >= 2:
        rows = np.concatenate([np.arange(n_real), n_real + np.flatnonzero(keep)])
        y = np.concatenate([np.zeros(n_real, int), np.ones(int(keep.sum()), int)])
        auc, p = discriminator_auc(X[rows], y, folds=cfg.folds, seed=cfg.seed)
        rounds.append({"kept": int(keep.sum()), "auc": round(auc, 4)})
        if auc_before is None:
            auc_before = auc
        if not auc > cfg.target_auc or keep.sum() <= floor:
            break
        p_syn = p[n_real:]
        kept_idx = np.flatnonzero(keep)
        n_drop = min(max(1, int(round(cfg.reject_step * len(pool)))), int(keep.sum()) - floor)
        if n_drop <= 0:
            break
        for j in kept_idx[np.argsort(-p_syn)[:n_drop]]:
            keep[j] = False
            reasons[pool[j].id] = ("adversarial", f"P(synthetic) {p_syn[list(kept_idx).index(j)]:.2f}")

    # 3. publish
    kept = [r for r in syn if r.id not in reasons]
    rejected = [r for r in syn if r.id in reasons]
    by_reason: dict[str, int] = {}
    for reason, _ in reasons.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    out_store, out_prefix = open_dataset_uri(out)

    prov = {"step": "validate", "real": real, "synthetic": synthetic,
            "synthetic_digest": syn_manifest.digest}
    write_dataset(out_store, out_prefix, kept, name=f"{syn_manifest.name}-validated",
                  provenance=[*syn_manifest.provenance, prov],
                  images=dataset_images(syn_store, syn_prefix, kept))
    rejected_out = rejected_out or f"{out}-rejected"
    rej_store, rej_prefix = open_dataset_uri(rejected_out)
    write_dataset(rej_store, rej_prefix, rejected, name=f"{syn_manifest.name}-rejected",
                  provenance=[prov], images=dataset_images(syn_store, syn_prefix, rejected))
    rej_store.put_bytes(join_key(rej_prefix, "rejected.jsonl"), "".join(
        json.dumps({"id": r.id, "reason": reasons[r.id][0], "detail": reasons[r.id][1],
                    "label": r.label, "text": r.text[:300]}) + "\n" for r in rejected).encode())
    report = ValidationReport(
        kept_uri=out, rejected_uri=rejected_out, synthetic=len(syn), real=n_real,
        kept=len(kept), rejected=len(rejected), rejected_by_reason=by_reason,
        auc_before=None if auc_before is None else round(auc_before, 4),
        auc_after=None if auc is None else round(auc, 4), auc_rounds=rounds,
        features=feats_names)
    out_store.put_bytes(join_key(out_prefix, "report.json"),
                        report.model_dump_json(indent=2).encode(), content_type="application/json")
    return report
