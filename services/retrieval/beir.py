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

Metrics (per query, then averaged over the evaluated queries; a query with no hits scores 0):

* nDCG@10 = DCG@10 / IDCG@10, DCG@10 = sum_{i<=10} gain_i / log2(i + 1), gain = the graded
  relevance from the qrels (linear gain, as trec_eval's ``ndcg_cut``); IDCG from the judged
  gains sorted descending.
* Recall@100 = |relevant in top 100| / |relevant|.
* MRR@10 = 1 / rank of the first relevant hit in the top 10 (0 if none).

``evaluate_beir`` indexes the corpus into a fresh, throw-away collection (local folders in a
temporary directory, or a uniquely named Qdrant collection / OpenSearch index on servers, dropped
afterwards), embeds all queries once, takes each retriever's top ``max(100, candidates)`` per
query and fuses them for ``hybrid`` exactly as ``HybridRetriever.search`` does.

Modes reported: ``dense``, ``sparse``, ``hybrid`` (the configured fusion,
``SHOPSENSE_RETRIEVAL__FUSION``; the key older callers read), ``hybrid-rrf`` and
``hybrid-weighted`` (both fusions, always), and ``hybrid+rerank`` when a trained reranker exists
(the configured fusion's top ``rerank_depth`` re-scored by it, see ``rerank.py``; the rest of
the list keeps its order, so Recall@100 barely moves).
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

from services.retrieval.schema import Doc
from services.retrieval.settings import RetrievalSettings
from shopsense.data.jsonl import iter_json_objects
from shopsense.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "EVAL_MODES",
    "METRICS",
    "BeirCollection",
    "Rankings",
    "collect_rankings",
    "doc_text",
    "evaluate_beir",
    "fused_run",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "score_modes",
    "score_run",
]

METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
#: every mode ``evaluate_beir`` can report; ``hybrid`` is the configured fusion (one of the two
#: ``hybrid-*``), ``hybrid+rerank`` appears only when a reranker is available
EVAL_MODES: tuple[str, ...] = ("dense", "sparse", "hybrid", "hybrid-rrf", "hybrid-weighted",
                               "hybrid+rerank")


# ------------------------------------------------------------------------------------ metrics


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains; ``gains`` holds the relevant ids (gain > 0)."""
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg <= 0:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for i, doc_id in enumerate(ranked[:k]):
        if doc_id in seen:  # a repeated id earns nothing the second time
            continue
        seen.add(doc_id)
        g = gains.get(doc_id, 0.0)
        if g > 0:
            dcg += g / math.log2(i + 2)
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 100) -> float:
    relevant = {d for d, g in gains.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    for i, doc_id in enumerate(ranked[:k], start=1):
        if gains.get(doc_id, 0) > 0:
            return 1.0 / i
    return 0.0


def score_run(run: Mapping[str, Sequence[str]],
              qrels: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100, MRR@10 over the queries of ``qrels`` (a query missing from
    ``run`` scores 0)."""
    if not qrels:
        return {m: 0.0 for m in METRICS}
    totals = dict.fromkeys(METRICS, 0.0)
    for qid, gains in qrels.items():
        ranked = list(run.get(qid, ()))
        totals["ndcg@10"] += ndcg_at_k(ranked, gains, 10)
        totals["recall@100"] += recall_at_k(ranked, gains, 100)
        totals["mrr@10"] += mrr_at_k(ranked, gains, 10)
    return {m: round(v / len(qrels), 6) for m, v in totals.items()}


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
    except FileNotFoundError:
        present = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise DataError(f"{path}: no such file (qrels present: {present})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 at byte {exc.start}") from None
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
        except ValueError:
            if is_first:  # the header
                continue
            raise DataError(f"{path}:{lineno}: score {score!r} is not a number") from None
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


def score_modes(
    r: Rankings,
    settings: RetrievalSettings,
    *,
    reranker: Any = None,
    rerank_depth: int | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Metrics of every mode from collected rankings: ``dense``, ``sparse``, ``hybrid`` (the
    configured fusion), ``hybrid-rrf``, ``hybrid-weighted`` and, with a ``reranker``,
    ``hybrid+rerank`` (the configured fusion's top ``rerank_depth`` re-scored by it)."""
    runs: dict[str, dict[str, list[str]]] = {}
    for mode in ("dense", "sparse"):
        runs[mode] = {q: [d for d, _ in lists.get(mode, [])[:100]] for q, lists in r.lists.items()}
    fused = {m: fused_run(r, settings, m) for m in ("rrf", "weighted")}
    for m, run in fused.items():
        runs[f"hybrid-{m}"] = {q: [d for d, _ in hits] for q, hits in run.items()}
    runs["hybrid"] = runs[f"hybrid-{settings.fusion}"]
    if reranker is not None:
        depth = rerank_depth or settings.rerank_depth
        base = fused[settings.fusion]
        reranked = reranker.rerank_many(
            [(r.queries[q], [(d, doc_text(r.corpus.get(d, {})), s) for d, s in base[q]])
             for q in r.lists], depth=depth, progress=progress)
        runs["hybrid+rerank"] = {q: [d for d, _ in hits]
                                 for q, hits in zip(r.lists, reranked, strict=True)}
    return {mode: score_run(run, r.qrels) for mode, run in runs.items()}


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

    Keys per mode: ``dense``, ``sparse``, ``hybrid`` (the configured fusion, as before),
    ``hybrid-rrf``, ``hybrid-weighted`` and ``hybrid+rerank``. ``rerank``: ``None`` adds
    ``hybrid+rerank`` when a trained reranker exists (``settings.reranker_dir``), ``True``
    requires one (``ModelNotFound`` otherwise), ``False`` leaves it out; ``reranker`` gives
    a loaded :class:`~services.retrieval.rerank.Reranker` directly.
    """
    from services.retrieval.rerank import Reranker, reranker_available

    settings = settings or RetrievalSettings()
    t0 = time.monotonic()
    if reranker is None and rerank is not False:
        path = settings.resolved_reranker_dir()
        if rerank or reranker_available(path):
            reranker = Reranker.load(path, max_length=settings.rerank_max_length)
    if rerank is False:
        reranker = None
    r = collect_rankings(directory, settings, split=split, max_queries=max_queries,
                         text_embedder=text_embedder, progress=progress)
    t_rank = time.monotonic() - t0
    result: dict[str, Any] = score_modes(r, settings, reranker=reranker, progress=progress)
    info = r.info
    result.update({
        "metrics": list(METRICS),
        "modes": [m for m in EVAL_MODES if m in result],
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
