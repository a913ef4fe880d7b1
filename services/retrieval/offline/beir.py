"""Retrieval quality on a test collection in BEIR layout, for every mode.

Layout read (``load_beir``)::

    DIR/corpus.jsonl     {"_id", "title"?, "text"?}  per line
    DIR/queries.jsonl    {"_id", "text"}             per line
    DIR/qrels/<split>.tsv  query-id <TAB> corpus-id <TAB> score   (header line optional)

Robustness: ids are read as strings (``1`` and ``"1"`` are the same id); a missing or ``null``
title or text is empty; blank lines are skipped; a corpus id seen twice keeps its last record;
qrels are split on tabs (or on whitespace when a line has no tab); a ``score`` <= 0 means not
relevant; a query without any relevant judgement (or absent from the qrels) is skipped, as are
judgements for queries not in ``queries.jsonl``. Judged documents missing from the corpus still
count as relevant (as in trec_eval), so they lower recall.

Metrics (per query, then averaged over the evaluated queries; a query with no hits scores 0),
computed by trec_eval through ir-measures (``nDCG@10``, ``R@100``, ``RR@10``):

* nDCG@10 = DCG@10 / IDCG@10, DCG@10 = sum_{i<=10} gain_i / log2(i + 1), gain = the graded
  relevance from the qrels (linear gain, trec_eval's ``ndcg_cut``); IDCG from the judged gains
  sorted descending. trec_eval needs integer gains: BEIR's are.
* Recall@100 = |relevant in top 100| / |relevant|.
* MRR@10 = 1 / rank of the first relevant hit in the top 10 (0 if none).

A ranking is handed to trec_eval with scores that keep its order exactly (trec_eval sorts by
score, and would otherwise break ties by document id); an id repeated in a ranking counts at its
first position only, and its repeats still take up their positions.

Significance (:func:`paired_test`): two modes are compared on the same queries by a two-sided
paired randomization test of the mean per-query difference in nDCG@10 (scipy's
``permutation_test`` with ``permutation_type="samples"``, 10,000 sign flips, seeded; Smucker,
Allan & Carterette 2007 recommend it for IR), and Student's paired t-test beside it. p-values are
per comparison, not corrected for the number of comparisons.

``evaluate_beir`` indexes the corpus into a fresh, throw-away collection (local folders in a
temporary directory, or a uniquely named Qdrant collection / OpenSearch index on servers, dropped
afterwards), embeds all queries once, takes each retriever's top ``max(100, candidates)`` per
query and fuses them for ``hybrid`` exactly as ``HybridRetriever.search`` does.

Modes reported: ``dense``, ``sparse``, ``hybrid`` (the configured fusion,
``SHOPSENSE_RETRIEVAL__FUSION``; the key older callers read), ``hybrid-rrf`` and
``hybrid-weighted`` (both fusions, always) and, when a trained reranker exists, each of them
with the reranker (``dense+rerank``, ``sparse+rerank``, ``hybrid+rerank`` = the configured
fusion's, ``hybrid-rrf+rerank``, ``hybrid-weighted+rerank``: the mode's top ``rerank_depth``
re-scored with the calibrated mixing weight; the rest of the list keeps its order, so
Recall@100 barely moves). ``compare`` in the result holds the best mode without the reranker,
the best with it, their difference and its p-value, and each mode's p-value against the best
mode without the reranker.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.retrieval.schema import Doc
from services.retrieval.settings import RetrievalSettings
from shopsense.data.jsonl import iter_json_objects
from shopsense.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "BASE_MODES",
    "EVAL_MODES",
    "METRICS",
    "BeirCollection",
    "Rankings",
    "base_runs",
    "collect_rankings",
    "compare_modes",
    "doc_text",
    "evaluate_rankings",
    "evaluate_beir",
    "fused_run",
    "head_logits",
    "load_beir",
    "load_reranker_for",
    "mean_scores",
    "mrr_at_k",
    "ndcg_at_k",
    "paired_test",
    "per_query",
    "recall_at_k",
    "rerank_runs",
    "score_modes",
    "score_run",
]

METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
#: the first-stage modes; each can be followed by the reranker (``<mode>+rerank``)
BASE_MODES: tuple[str, ...] = ("dense", "sparse", "hybrid", "hybrid-rrf", "hybrid-weighted")
#: every mode ``evaluate_beir`` can report; ``hybrid`` is the configured fusion (one of the two
#: ``hybrid-*``), the ``+rerank`` modes appear only when a reranker is available
EVAL_MODES: tuple[str, ...] = (*BASE_MODES, "hybrid+rerank", "dense+rerank", "sparse+rerank",
                               "hybrid-rrf+rerank", "hybrid-weighted+rerank")
#: the metric significance is tested on
TEST_METRIC = "ndcg@10"
RANDOMIZATION_RESAMPLES = 10_000


# ------------------------------------------------------------------------------------ metrics


def _measures():
    from ir_measures import RR, R, nDCG

    return {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10}


def _trec_qrels(qrels: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for qid, gains in qrels.items():
        row = {}
        for did, g in gains.items():
            if float(g) != int(g):
                raise DataError(f"query {qid}, document {did}: gain {g} is not an integer "
                                "(trec_eval's measures need integer gains)")
            row[str(did)] = int(g)
        out[str(qid)] = row
    return out


def _trec_run(ranked: Sequence[str]) -> dict[str, float]:
    """A ranking as trec_eval scores: strictly decreasing, so trec_eval keeps its order. A
    repeated id keeps its first position; its later positions hold a placeholder that no
    judgement names (the positions after it do not move up)."""
    out: dict[str, float] = {}
    n = len(ranked)
    for pos, doc_id in enumerate(ranked):
        key = str(doc_id) if str(doc_id) not in out else f"\x00repeat-{pos}"
        out[key] = float(n - pos)
    return out


def per_query(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]],
              ) -> dict[str, dict[str, float]]:
    """metric -> {query id: value} for every query of ``qrels`` (a query missing from ``run``
    scores 0)."""
    import ir_measures

    measures = _measures()
    names = {str(m): name for name, m in measures.items()}
    out: dict[str, dict[str, float]] = {m: dict.fromkeys(map(str, qrels), 0.0) for m in METRICS}
    if not qrels:
        return out
    evaluator = ir_measures.evaluator(list(measures.values()), _trec_qrels(qrels))
    trec = {str(q): _trec_run(list(ranked)) for q, ranked in run.items() if ranked}
    for m in evaluator.iter_calc(trec):
        if m.query_id in out[names[str(m.measure)]]:
            out[names[str(m.measure)]][m.query_id] = float(m.value)
    return out


def _one(ranked: Sequence[str], gains: Mapping[str, float], metric: str) -> float:
    if not any(g > 0 for g in gains.values()):
        return 0.0
    return per_query({"q": list(ranked)}, {"q": gains})[metric]["q"]


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """nDCG@10 of one ranking (trec_eval's ``ndcg_cut.10``, linear gains)."""
    if k != 10:
        raise ValueError("only nDCG@10 is measured")
    return _one(ranked, gains, "ndcg@10")


def recall_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 100) -> float:
    if k == 100:
        return _one(ranked, gains, "recall@100")
    relevant = {d for d, g in gains.items() if g > 0}  # other cut-offs: the same definition
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    if k != 10:
        raise ValueError("only MRR@10 is measured")
    return _one(ranked, gains, "mrr@10")


def mean_scores(values: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Means of :func:`per_query` values."""
    return {m: round(float(np.mean(list(v.values()))) if v else 0.0, 6)
            for m, v in values.items()}


def score_run(run: Mapping[str, Sequence[str]],
              qrels: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100, MRR@10 over the queries of ``qrels`` (a query missing from
    ``run`` scores 0)."""
    return mean_scores(per_query(run, qrels))


def paired_test(a: Mapping[str, float], b: Mapping[str, float], *, seed: int = 0,
                resamples: int = RANDOMIZATION_RESAMPLES) -> dict[str, float | int]:
    """Two-sided paired tests of ``mean(a - b)`` over the queries both have (module
    docstring): ``p`` (randomization), ``p_t`` (paired t-test), ``delta``, ``queries``."""
    from scipy import stats

    qids = [q for q in a if q in b]
    x = np.array([a[q] for q in qids], dtype=np.float64)
    y = np.array([b[q] for q in qids], dtype=np.float64)
    delta = float(np.mean(x - y)) if qids else 0.0
    if len(qids) < 2 or np.allclose(x, y):
        return {"delta": round(delta, 6), "p": 1.0, "p_t": 1.0, "queries": len(qids)}
    res = stats.permutation_test(
        (x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=resamples, alternative="two-sided",
        rng=np.random.default_rng(seed))
    t = stats.ttest_rel(x, y)
    p_t = float(t.pvalue) if np.isfinite(t.pvalue) else 1.0
    return {"delta": round(delta, 6), "p": round(float(res.pvalue), 6), "p_t": round(p_t, 6),
            "queries": len(qids)}


# ------------------------------------------------------------------------------------ loading


@dataclass
class BeirCollection:
    corpus: dict[str, dict[str, str]]        # id -> {"title", "text"}
    queries: dict[str, str]                  # evaluated queries: id -> text
    qrels: dict[str, dict[str, float]]       # query id -> {doc id: gain > 0}
    skipped_queries: int = 0                 # in queries.jsonl but without relevant judgements
    qrels_unknown_query: int = 0             # judgements naming no query of queries.jsonl
    qrels_unknown_doc: int = 0               # relevant judgements naming no corpus document

    def docs(self) -> Iterator[Doc]:
        for doc_id, d in self.corpus.items():
            yield Doc(id=doc_id, text=d["text"], title=d["title"] or None)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, obj in iter_json_objects(
        path, missing="no such file (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)"
    ):
        if obj.get("_id") is None:
            raise DataError(f"{path}:{lineno}: expected an object with an _id")
        yield lineno, obj


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _read_qrels(path: Path) -> dict[str, dict[str, float]]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError as exc:
        present = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise DataError(f"{path}: no such file (qrels present: {present})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 at byte {exc.start}") from exc
    qrels: dict[str, dict[str, float]] = {}
    first = True
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        is_first, first = first, False
        parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
        if len(parts) < 3:
            raise DataError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
        qid, did, score = parts[0], parts[1], parts[-1]
        try:
            gain = float(score)
        except ValueError as exc:
            if is_first:  # the header
                continue
            raise DataError(f"{path}:{lineno}: score {score!r} is not a number") from exc
        if not math.isfinite(gain):
            raise DataError(f"{path}:{lineno}: score {score!r} is not finite")
        if gain > 0:
            qrels.setdefault(qid, {})[did] = gain
        else:
            qrels.setdefault(qid, {})  # judged, nothing relevant here
    return qrels


def load_beir(directory: str | Path, split: str = "test") -> BeirCollection:
    """Read a BEIR directory (see the module docstring)."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    corpus: dict[str, dict[str, str]] = {}
    for _, obj in _jsonl(root / "corpus.jsonl"):
        corpus[str(obj["_id"])] = {"title": _text(obj.get("title")), "text": _text(obj.get("text"))}
    if not corpus:
        raise DataError(f"{root / 'corpus.jsonl'}: no documents")
    all_queries = {str(obj["_id"]): _text(obj.get("text"))
                   for _, obj in _jsonl(root / "queries.jsonl")}
    judged = _read_qrels(root / "qrels" / f"{split}.tsv")
    qrels = {q: g for q, g in judged.items() if g and q in all_queries}
    queries = {q: all_queries[q] for q in all_queries if q in qrels and all_queries[q].strip()}
    qrels = {q: qrels[q] for q in queries}
    return BeirCollection(
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        skipped_queries=len(all_queries) - len(queries),
        qrels_unknown_query=sum(1 for q in judged if q not in all_queries),
        qrels_unknown_doc=sum(1 for g in qrels.values() for d in g if d not in corpus),
    )


# --------------------------------------------------------------------------------- evaluation


@dataclass
class Rankings:
    """Each retriever's ranked ``(id, score)`` list per evaluated query, before fusion
    (what :func:`collect_rankings` measures once and :func:`score_modes` turns into metrics)."""

    queries: dict[str, str]                              # qid -> text, evaluation order
    lists: dict[str, dict[str, list[tuple[str, float]]]]  # qid -> retriever -> ranking
    qrels: dict[str, dict[str, float]]
    corpus: dict[str, dict[str, str]]
    info: dict[str, Any]


def _drop_remote(retriever: Any, settings: RetrievalSettings, name: str) -> None:
    try:
        if settings.qdrant_url:
            retriever.dense.drop()
        if settings.opensearch_url:
            retriever.sparse.drop()
    except Exception as exc:  # pragma: no cover - best effort cleanup
        log.warning("could not drop the evaluation collection %s: %s", name, exc)


def collect_rankings(
    directory: str | Path,
    settings: RetrievalSettings | None = None,
    *,
    split: str = "test",
    max_queries: int | None = None,
    text_embedder: Any = None,
    progress: bool = False,
) -> Rankings:
    """Index the collection into a throw-away index and take each retriever's top
    ``max(100, candidates)`` for every evaluated query (queries embedded once)."""
    from services.retrieval.retriever import HybridRetriever

    settings = settings or RetrievalSettings()
    t0 = time.monotonic()
    col = load_beir(directory, split)
    qids = sorted(col.queries, key=lambda q: (len(q), q))  # stable, numeric-looking order
    if max_queries is not None:
        qids = qids[:max_queries]
    if not qids:
        raise DataError(f"{directory}: no query of queries.jsonl has a relevant judgement in "
                        f"qrels/{split}.tsv")
    depth = max(100, settings.candidates)
    lists: dict[str, dict[str, list[tuple[str, float]]]] = {}
    name = f"beir-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="shopsense-beir-") as tmp:
        retriever = HybridRetriever.open(settings, index_dir=Path(tmp), collection=name,
                                         text_embedder=text_embedder)
        try:
            retriever.index(col.docs(), progress=progress, total=len(col.corpus),
                            description="index corpus")
            t_index = time.monotonic() - t0
            vectors = retriever.text_embedder.embed([col.queries[q] for q in qids])
            for qid, vec in zip(qids, vectors, strict=True):
                got = retriever.rankings(col.queries[qid], depth=depth, mode="hybrid",
                                         text_vector=vec)
                lists[qid] = {n: [(h.id, float(h.score)) for h in hits]
                              for n, hits in got.items()}
            backends = {"dense": retriever.dense.where.split(" /")[0],
                        "sparse": retriever.sparse.where.split(" /")[0]}
        finally:
            _drop_remote(retriever, settings, name)
            retriever.close()
    return Rankings(
        queries={q: col.queries[q] for q in qids},
        lists=lists,
        qrels={q: col.qrels[q] for q in qids},
        corpus=col.corpus,
        info={
            "corpus": len(col.corpus),
            "queries": len(qids),
            "queries_skipped": col.skipped_queries + (len(col.queries) - len(qids)),
            "qrels_unknown_doc": col.qrels_unknown_doc,
            "candidates": depth,
            "backends": backends,
            "seconds_index": round(t_index, 2),
        },
    )


def doc_text(doc: Mapping[str, str]) -> str:
    """Title and text of a BEIR corpus record, as the indexes read them (``Doc.content``)."""
    return Doc(id="", text=doc.get("text") or "", title=doc.get("title") or None).content


def fused_run(r: Rankings, settings: RetrievalSettings, method: str,
              k: int = 100) -> dict[str, list[tuple[str, float]]]:
    """Fuse each query's lists as ``HybridRetriever.fuse`` does (same function, parameters)."""
    from services.retrieval.fusion import fuse

    out = {}
    for qid, lists in r.lists.items():
        out[qid] = fuse(lists, method, rrf_k=settings.rrf_k, weights=settings.weights())[:k]
    return out


def base_runs(r: Rankings, settings: RetrievalSettings,
              ) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """mode -> query -> ranked ``(id, score)`` for every first-stage mode (``BASE_MODES``)."""
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for mode in ("dense", "sparse"):
        runs[mode] = {q: list(lists.get(mode, [])[:100]) for q, lists in r.lists.items()}
    for m in ("rrf", "weighted"):
        runs[f"hybrid-{m}"] = fused_run(r, settings, m)
    runs["hybrid"] = runs[f"hybrid-{settings.fusion}"]
    return runs


def head_logits(r: Rankings, runs: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]],
                reranker: Any, depth: int, *, progress: bool = False
                ) -> dict[tuple[str, str], float]:
    """The cross-encoder logit of every (query, review) pair in the top ``depth`` of any of
    ``runs``, each pair scored once."""
    pairs: dict[tuple[str, str], None] = {}
    for run in runs.values():
        for q, hits in run.items():
            for d, _ in hits[:depth]:
                pairs.setdefault((q, d), None)
    order = list(pairs)
    logits = reranker.score_pairs([(r.queries[q], doc_text(r.corpus.get(d, {})))
                                   for q, d in order], progress=progress)
    return {pair: float(x) for pair, x in zip(order, logits, strict=True)}


def rerank_runs(r: Rankings, runs: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]],
                reranker: Any, depth: int, *, alpha: float | None = None,
                progress: bool = False, logits: Mapping[tuple[str, str], float] | None = None,
                ) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """``<mode>+rerank`` for each mode of ``runs``: its top ``depth`` re-scored by the
    cross-encoder with ``alpha`` (default: the reranker's calibrated one). Each (query,
    review) pair is scored once, however many modes hold it (or taken from ``logits``)."""
    from services.retrieval.rerank import Reranker

    alpha = reranker.alpha if alpha is None else alpha
    if logits is None:
        logits = head_logits(r, runs, reranker, depth, progress=progress)
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for mode, run in runs.items():
        reranked = {}
        for q, hits in run.items():
            cands = [(d, "", s) for d, s in hits]
            ce = np.array([logits[(q, d)] for d, _ in hits[:depth]], dtype=np.float32)
            reranked[q] = [(d, s) for d, s, _ in Reranker.order(cands, ce, alpha)]
        out[f"{mode}+rerank"] = reranked
    return out


def _ids(run: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, list[str]]:
    return {q: [d for d, _ in hits] for q, hits in run.items()}


def compare_modes(ndcg: Mapping[str, Mapping[str, float]], *, seed: int = 0
                  ) -> dict[str, Any]:
    """The paired comparisons of the module docstring, on per-query nDCG@10 of each mode."""
    means = {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in ndcg.items()}
    plain = [m for m in BASE_MODES if m != "hybrid" and m in ndcg]
    with_rr = [f"{m}+rerank" for m in plain if f"{m}+rerank" in ndcg]
    best = max(plain, key=lambda m: (means[m], -plain.index(m)))
    out: dict[str, Any] = {
        "metric": TEST_METRIC,
        "test": f"two-sided paired randomization test, {RANDOMIZATION_RESAMPLES} resamples "
                "(p); paired t-test (p_t); uncorrected",
        "best_without_rerank": best,
        "vs_best_without_rerank": {m: paired_test(ndcg[m], ndcg[best], seed=seed)
                                   for m in [*plain, *with_rr] if m != best},
    }
    if with_rr:
        best_rr = max(with_rr, key=lambda m: (means[m], -with_rr.index(m)))
        out["best_with_rerank"] = best_rr
        out["best_with_vs_without"] = paired_test(ndcg[best_rr], ndcg[best], seed=seed)
        out["rerank_gain"] = {m.removesuffix("+rerank"): paired_test(
            ndcg[m], ndcg[m.removesuffix("+rerank")], seed=seed) for m in with_rr}
    return out


def evaluate_rankings(
    r: Rankings,
    settings: RetrievalSettings,
    *,
    reranker: Any = None,
    rerank_depth: int | None = None,
    alpha: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``{"metrics": {mode: means}, "per_query": {mode: {qid: nDCG@10}}, "compare": ...,
    "logits": {(qid, doc id): cross-encoder logit}}`` for every mode of collected rankings,
    with and (given a ``reranker``) without reranking."""
    runs = base_runs(r, settings)
    logits: dict[tuple[str, str], float] = {}
    if reranker is not None:
        depth = rerank_depth or settings.rerank_depth
        plain = {m: runs[m] for m in BASE_MODES if m != "hybrid"}
        logits = head_logits(r, plain, reranker, depth, progress=progress)
        runs.update(rerank_runs(r, plain, reranker, depth, alpha=alpha, logits=logits))
        runs["hybrid+rerank"] = runs[f"hybrid-{settings.fusion}+rerank"]
    values = {mode: per_query(_ids(run), r.qrels) for mode, run in runs.items()}
    ndcg = {mode: v[TEST_METRIC] for mode, v in values.items()}
    return {"metrics": {mode: mean_scores(v) for mode, v in values.items()},
            "per_query": ndcg, "compare": compare_modes(ndcg), "logits": logits}


def score_modes(
    r: Rankings,
    settings: RetrievalSettings,
    *,
    reranker: Any = None,
    rerank_depth: int | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Metrics of every mode from collected rankings (:func:`evaluate_rankings`' means)."""
    return evaluate_rankings(r, settings, reranker=reranker, rerank_depth=rerank_depth,
                             progress=progress)["metrics"]


def load_reranker_for(settings: RetrievalSettings, rerank: bool | None, path: Path | None = None):
    """The trained reranker ``rerank`` asks for: ``None`` = if one is trained, ``True`` = it must
    be (``RerankerNotTrained`` otherwise), ``False`` = none."""
    from services.retrieval.rerank import Reranker, reranker_available

    if rerank is False:
        return None
    path = path or settings.resolved_reranker_dir()
    if rerank or reranker_available(path):
        return Reranker.load(path, max_length=settings.rerank_max_length,
                             batch_size=settings.rerank_batch_size)
    return None


def evaluate_beir(
    directory: str | Path,
    settings: RetrievalSettings | None = None,
    *,
    split: str = "test",
    max_queries: int | None = None,
    text_embedder: Any = None,
    progress: bool = False,
    rerank: bool | None = None,
    reranker: Any = None,
) -> dict[str, Any]:
    """Index the collection into a throw-away index, run every mode, return the metrics.

    Keys per mode (``EVAL_MODES``, see the module docstring), plus ``modes`` (those present),
    ``compare`` (significance), collection counts and timings. ``rerank``: ``None`` adds the
    ``+rerank`` modes when a trained reranker exists (``settings.reranker_dir``), ``True``
    requires one (``RerankerNotTrained`` otherwise), ``False`` leaves them out; ``reranker``
    gives a loaded :class:`~services.retrieval.rerank.Reranker` directly.
    """
    settings = settings or RetrievalSettings()
    t0 = time.monotonic()
    if rerank is False:
        reranker = None
    elif reranker is None:
        reranker = load_reranker_for(settings, rerank)
    r = collect_rankings(directory, settings, split=split, max_queries=max_queries,
                         text_embedder=text_embedder, progress=progress)
    t_rank = time.monotonic() - t0
    ev = evaluate_rankings(r, settings, reranker=reranker, progress=progress)
    result: dict[str, Any] = dict(ev["metrics"])
    info = r.info
    result.update({
        "metrics": list(METRICS),
        "modes": [m for m in EVAL_MODES if m in ev["metrics"]],
        "compare": ev["compare"],
        "corpus": info["corpus"],
        "queries": info["queries"],
        "queries_skipped": info["queries_skipped"],
        "qrels_unknown_doc": info["qrels_unknown_doc"],
        "fusion": {"method": settings.fusion, "rrf_k": settings.rrf_k,
                   "weights": settings.weights(), "candidates": info["candidates"]},
        "backends": info["backends"],
        "seconds": {"index": info["seconds_index"], "total": round(time.monotonic() - t0, 2)},
    })
    if reranker is not None:
        result["rerank"] = {**reranker.describe(), "depth": settings.rerank_depth,
                            "seconds": round(time.monotonic() - t0 - t_rank, 2)}
    return result


# ------------------------------------------------------------------------------------ report

#: columns of :func:`report_rows`
REPORT_COLUMNS: tuple[str, ...] = (
    "mode", "nDCG@10", "R@100", "MRR@10", "p vs best",
    "+rerank nDCG@10", "R@100", "MRR@10", "Δ nDCG@10", "p")


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def report_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """One row per first-stage mode of an :func:`evaluate_beir` result: its metrics, the p-value
    against the best mode without the reranker, then the same mode reranked, its nDCG@10 change
    and that change's p-value (``-`` where there is no reranker)."""
    cmp = result.get("compare", {})
    best = cmp.get("best_without_rerank")
    vs = cmp.get("vs_best_without_rerank", {})
    gain = cmp.get("rerank_gain", {})
    rows = []
    for mode in BASE_MODES:
        if mode == "hybrid" or mode not in result:
            continue
        m = result[mode]
        row = [mode + (" (best)" if mode == best else ""),
               *(f"{m[k]:.4f}" for k in METRICS),
               "-" if mode == best else _p(vs.get(mode, {}).get("p"))]
        rr = result.get(f"{mode}+rerank")
        if rr is None:
            row += ["-"] * 5
        else:
            g = gain.get(mode, {})
            row += [*(f"{rr[k]:.4f}" for k in METRICS), f"{g.get('delta', 0.0):+.4f}",
                    _p(g.get("p"))]
        rows.append(row)
    return rows


def report_summary(result: Mapping[str, Any]) -> str:
    """The headline: best mode with the reranker against the best without, and its p-value."""
    cmp = result.get("compare", {})
    best = cmp.get("best_without_rerank")
    if best is None:
        return "no modes"
    line = f"best without reranker: {best} nDCG@10 {result[best]['ndcg@10']:.4f}"
    if "best_with_rerank" in cmp:
        w = cmp["best_with_rerank"]
        t = cmp["best_with_vs_without"]
        verdict = ("better, significantly" if t["delta"] > 0 and t["p"] < 0.05 else
                   "worse, significantly" if t["delta"] < 0 and t["p"] < 0.05 else
                   "not significantly different")
        line += (f"; best with reranker: {w} {result[w]['ndcg@10']:.4f} "
                 f"({t['delta']:+.4f}, p {_p(t['p'])}: {verdict})")
    else:
        line += "; no trained reranker"
    return line + f" [{cmp.get('test', '')}]"
