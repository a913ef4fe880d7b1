"""Speed, memory and disk of the hybrid retriever (Qdrant local mode + tantivy BM25).

    .venv/bin/python benchmarks/retrieval_speed.py                        # 10k and 100k, 3 runs
    .venv/bin/python benchmarks/retrieval_speed.py --sizes 10000 --repeats 1 --queries 100
    .venv/bin/python benchmarks/retrieval_speed.py --json benchmarks/results/retrieval_speed.json

What it measures for ``services.retrieval.HybridRetriever`` in its embedded default (Qdrant
local mode + tantivy, in a fresh temporary folder), per corpus size (``--sizes``):

1. indexing throughput, reviews/s, with the text embeddings given (``index(docs,
   Embeddings(text=...))``): the whole write path (snapshot, journal, Qdrant upsert, tantivy
   commit, per batch of ``batch_size`` reviews, the settings' default unless ``--batch-size``);
2. query latency p50/p99 (ms) of ``search(text, k=10, mode=...)`` for ``sparse``, ``dense``
   and ``hybrid`` (no reranking, no filters): the MiniLM query embedding is part of the dense
   and hybrid figures; the same searches with the query vector precomputed (``rankings(...,
   text_vector=)`` + ``fuse``) and the query embedding alone are shown too;
3. memory: RSS growth of the process from just before the retriever is opened to just after the
   index is built (corpus, vectors and MiniLM are loaded before, so not counted), and disk: the
   size of the index folder (Qdrant's sqlite + tantivy's segments), also scaled per 100k
   reviews; the ``growth`` column divides the largest size's figure by the smallest's;
4. indexing throughput with the embeddings computed by MiniLM on CPU: ``--embed-sample`` more
   reviews (default 1,000: embedding 100k texts on CPU would take most of an hour) indexed into
   the index just built, and the MiniLM embedding alone on the same texts;
5. the time to reopen the index (local mode loads every point from sqlite into memory);
6. with ``--rerank-depths 5,10,20,30``: p50/p99 of ``search(text, k=min(10, N), rerank=True)``
   with the fused top N re-scored by the cross-encoder at ``rerank_max_length`` tokens
   (``--rerank-queries`` queries per N). The trained reranker (``--reranker`` or the settings'
   folder) when there is one, else the untrained pair scorer on the offline MiniLM: the same
   architecture and input, so the same cost (the weights do not change the time).

Corpus: the Blitzer et al. Amazon reviews in the shared data (books, dvd, electronics: 6,000
real reviews with ASIN, product name, category, rating, title). Sizes above that reuse the real
texts with new review ids (``<id>~<copy>``), so BM25 postings and the dense matrix grow as with
new reviews (the vocabulary does not: a real corpus of that size would have a larger one).
Query texts are real review sentences that are not indexed (UCI Amazon cell-phone sentences and
Hu & Liu sentences, short like a search box query).

Given embeddings: random unit vectors by default (``--vectors random``, seeded). Local mode
searches by brute force (cosine against every stored vector, then a full argsort), so its cost
does not depend on the values; a Qdrant server's HNSW would. ``--vectors real`` embeds the
6,000 unique texts once with MiniLM (cached under ``benchmarks/results/cache/``) and reuses the
vectors of the reused texts.

Each (size, run) is measured in a fresh child process, so RSS figures are not polluted by an
earlier run; every figure is the median over ``--repeats`` runs. Nothing asserts on timings:
the script prints one markdown table and a targets line; ``--json OUT`` writes the raw figures
(default ``benchmarks/results/retrieval_speed.json``, git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MB = 1024**2

TARGET_HYBRID_P99_MS = 50.0  # hybrid text query p99 at 100k reviews, no reranking
TARGET_HYBRID_SIZE = 100_000
TARGET_INDEX_RPS = 1000.0  # indexing with embeddings given
TARGET_RERANK_P99_MS = 150.0  # hybrid + rerank p99: what /v1/search may spend by default

MODES = ("sparse", "dense", "hybrid")
BLITZER_CATEGORIES = ("books", "dvd", "electronics")


# ------------------------------------------------------------------------------------------
# helpers


# the harness the benchmark scripts share (statistics, number format, machine, tables)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BenchError, busy_note, fmt, host_info, log, median, percentile  # noqa: E402
from _harness import markdown_table as md_table  # noqa: E402


def size_label(n: int) -> str:
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def folder_bytes(path: Path) -> int:
    """Apparent size of every file under ``path``."""
    total = 0
    for p in Path(path).rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    versions = {}
    for pkg in ("qdrant-client", "tantivy", "torch", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - informative only
            versions[pkg] = "?"
    return {**host_info(), "versions": versions}


# ------------------------------------------------------------------------------------------
# corpus and queries (real texts from the shared data)


def load_corpus(data_dir: Path) -> list[Any]:
    """The Blitzer reviews as retrieval ``Doc`` s (6,000 with the published files)."""
    from services.retrieval.schema import Doc
    from shopsense.data.loaders import load_blitzer
    from shopsense.errors import DataError

    docs = []
    try:
        for category in BLITZER_CATEGORIES:
            docs += [Doc.from_review(r) for r in load_blitzer(data_dir, category)]
    except DataError as exc:
        raise BenchError(f"cannot read the Blitzer reviews: {exc} (--data-dir)") from exc
    return docs


def load_queries(data_dir: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` real review sentences that are not in the corpus (UCI Amazon, Hu & Liu)."""
    import random

    from shopsense.data.loaders import load_huliu, load_uci

    texts = [r.text for r in load_uci(data_dir, "amazon")]
    try:
        texts += [r.text for r in load_huliu(data_dir) if len(r.text.split()) >= 3]
    except Exception as exc:  # noqa: BLE001 - the UCI sentences are enough
        log(f"[queries] Hu & Liu sentences not used: {exc}")
    texts = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    random.Random(seed).shuffle(texts)
    return [texts[i % len(texts)] for i in range(n)]


def scale_corpus(unique: Sequence[Any], n: int) -> tuple[list[Any], list[int]]:
    """``n`` docs: the real ones first, then copies with new ids; and the source index of each."""
    docs, src = [], []
    for i in range(n):
        copy, j = divmod(i, len(unique))
        d = unique[j]
        docs.append(d if copy == 0 else replace(d, id=f"{d.id}~{copy}"))
        src.append(j)
    return docs, src


def given_vectors(unique: Sequence[Any], src: Sequence[int], kind: str, *, max_length: int,
                  seed: int = 0):
    """(n, 384) unit vectors for the docs: random, or MiniLM vectors of the unique texts."""
    import numpy as np

    if kind == "random":
        rng = np.random.default_rng(seed)
        base = rng.standard_normal((len(unique), 384), dtype=np.float32)
    else:
        base = real_vectors(unique, max_length=max_length)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    return base[np.asarray(src, dtype=np.int64)]


def real_vectors(unique: Sequence[Any], *, max_length: int):
    import numpy as np

    key = hashlib.sha256("\x00".join(d.content for d in unique).encode()).hexdigest()[:16]
    cache = RESULTS / "cache" / f"minilm-{max_length}-{len(unique)}-{key}.npy"
    if cache.is_file():
        return np.load(cache)
    from shopsense.embed import text_embedder

    log(f"[vectors] embedding {len(unique):,} unique texts with MiniLM once (cached in {cache})")
    t0 = time.perf_counter()
    vecs = text_embedder(max_length, 32).embed([d.content for d in unique])
    log(f"[vectors] {len(unique) / (time.perf_counter() - t0):.1f} texts/s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vecs)
    return vecs


# ------------------------------------------------------------------------------------------
# one measurement run, in a child process


class PeakRss:
    """Samples this process's RSS in a thread; ``peak`` is the largest sample."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def _latencies(fn, queries: Sequence[Any], warmup: int) -> dict[str, Any]:
    for q in queries[:warmup]:
        fn(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
            "mean_ms": sum(times) / len(times), "max_ms": max(times), "n": len(times)}


def _bench_reranker(cfg: dict[str, Any], settings: Any):
    """The reranker whose cost is measured (module docstring, item 6)."""
    from services.retrieval.rerank import Reranker, pair_scorer_class, reranker_available

    path = Path(cfg["reranker"]) if cfg.get("reranker") else settings.resolved_reranker_dir()
    if reranker_available(path):
        return Reranker.load(path, max_length=settings.rerank_max_length,
                             batch_size=settings.rerank_batch_size)
    from transformers import AutoModel, AutoTokenizer

    from shopsense.model.encoders import minilm_dir

    model = pair_scorer_class()(AutoModel.from_pretrained(str(minilm_dir())))
    return Reranker(model, AutoTokenizer.from_pretrained(str(minilm_dir())),
                    max_length=settings.rerank_max_length,
                    batch_size=settings.rerank_batch_size, alpha=0.5,
                    meta={"base": "untrained pair scorer on MiniLM (timing only)"})


def measure_once(cfg: dict[str, Any]) -> dict[str, Any]:
    """Build an index of ``cfg['size']`` reviews in a fresh folder and measure it."""
    from services.retrieval import HybridRetriever
    from services.retrieval.retriever import Embeddings
    from services.retrieval.settings import RetrievalSettings
    from shopsense.embed import text_embedder

    size, k = cfg["size"], cfg["k"]
    data_dir = Path(cfg["data_dir"])
    overrides: dict[str, Any] = {"qdrant_url": None, "opensearch_url": None}
    if cfg.get("batch_size"):
        overrides["batch_size"] = cfg["batch_size"]
    settings = RetrievalSettings(**overrides)

    unique = load_corpus(data_dir)
    docs, src = scale_corpus(unique, size)
    vectors = given_vectors(unique, src, cfg["vectors"], max_length=settings.text_max_length)
    queries = load_queries(data_dir, cfg["queries"])
    extra_n = cfg["embed_sample"]
    extra = [replace(d, id=f"{d.id}~extra") for d in unique[:extra_n]] if extra_n else []

    import torch

    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg["torch_threads"])
    embedder = text_embedder(settings.text_max_length, settings.embed_batch_size)
    embedder.embed(queries[:2])  # load the weights before the memory baseline
    import qdrant_client.local.qdrant_local  # noqa: F401 - imports are not index memory
    import tantivy  # noqa: F401

    out: dict[str, Any] = {"size": size, "unique_texts": len(unique),
                           "reused": max(0, size - len(unique)),
                           "batch_size": settings.batch_size,
                           "torch_threads": torch.get_num_threads()}
    workdir = Path(tempfile.mkdtemp(prefix="retrieval-speed-", dir=cfg.get("workdir")))
    try:
        gc.collect()
        rss0 = rss_bytes()
        with PeakRss() as peak:
            retriever = HybridRetriever.open(settings, index_dir=workdir, collection="bench",
                                             text_embedder=embedder)
            t0 = time.perf_counter()
            report = retriever.index(docs, Embeddings(text=vectors))
            index_s = time.perf_counter() - t0
        gc.collect()
        rss1 = rss_bytes()
        out["index"] = {"seconds": index_s, "reviews_per_s": size / index_s,
                        "batches": report.batches, "indexed": report.indexed}
        out["memory"] = {"rss_before_bytes": rss0, "rss_after_bytes": rss1,
                         "growth_bytes": rss1 - rss0, "peak_growth_bytes": peak.peak - rss0}
        out["disk"] = {"total_bytes": folder_bytes(workdir),
                       "qdrant_bytes": folder_bytes(workdir / "qdrant"),
                       "tantivy_bytes": folder_bytes(workdir / "tantivy")}
        log(f"[{size_label(size)}] indexed {size:,} in {index_s:.1f} s "
            f"({size / index_s:,.0f}/s); RSS +{(rss1 - rss0) / MB:,.0f} MB; "
            f"disk {out['disk']['total_bytes'] / MB:,.0f} MB")

        # query latency, text queries, no filters, no reranking
        lat: dict[str, Any] = {}
        for mode in MODES:
            lat[mode] = _latencies(lambda q, m=mode: retriever.search(q, k=k, mode=m),
                                   queries, cfg["warmup"])
        qvecs = {q: embedder.embed_one(q) for q in queries}
        depth = max(k, settings.candidates)
        for mode in ("dense", "hybrid"):
            lat[f"{mode}_no_embed"] = _latencies(
                lambda q, m=mode: retriever.fuse(
                    retriever.rankings(q, depth=depth, mode=m, text_vector=qvecs[q]), k),
                queries, cfg["warmup"])
        lat["query_embed"] = _latencies(embedder.embed_one, queries, cfg["warmup"])
        for n in cfg.get("rerank_depths") or []:
            retriever._reranker = retriever._reranker or _bench_reranker(cfg, settings)
            retriever.settings = settings.model_copy(update={"rerank_depth": n})
            lat[f"hybrid_rerank_{n}"] = _latencies(
                lambda q, n=n: retriever.search(q, k=min(k, n), mode="hybrid", rerank=True),
                queries[: cfg.get("rerank_queries") or len(queries)], min(3, cfg["warmup"]))
        retriever.settings = settings
        out["latency"] = lat
        log(f"[{size_label(size)}] p50/p99 ms: " + ", ".join(
            f"{m} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for m, v in lat.items()))

        # indexing with MiniLM computing the embeddings, into the index just built
        if extra:
            t0 = time.perf_counter()
            retriever.index(extra)
            with_embed_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            embedder.embed([d.content for d in extra])
            embed_s = time.perf_counter() - t0
            out["index_embedded"] = {"reviews": len(extra), "seconds": with_embed_s,
                                     "reviews_per_s": len(extra) / with_embed_s,
                                     "embed_only_per_s": len(extra) / embed_s}
            log(f"[{size_label(size)}] +{len(extra):,} with MiniLM: "
                f"{len(extra) / with_embed_s:,.1f}/s (embedding alone "
                f"{len(extra) / embed_s:,.1f}/s)")
        retriever.close()
        gc.collect()

        t0 = time.perf_counter()
        again = HybridRetriever.open(settings, index_dir=workdir, collection="bench",
                                     text_embedder=embedder)
        again.search(queries[0], k=k, mode="hybrid")
        out["reopen_s"] = time.perf_counter() - t0
        again.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def _child_main(cfg_json: str) -> int:
    import logging
    import warnings

    cfg = json.loads(cfg_json)
    # local mode warns once above 20k points: expected here, the report says it
    warnings.filterwarnings("ignore", message="Local mode is not recommended")
    logging.getLogger("services.retrieval").setLevel(logging.ERROR)
    if cfg.get("profile"):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(measure_once, cfg)
        path = Path(cfg["profile"])
        path.parent.mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(path))
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
    else:
        result = measure_once(cfg)
    print("RESULT " + json.dumps(result))
    return 0


def run_child(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "_child", json.dumps(cfg)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=None, text=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"a run of size {cfg['size']:,} took more than {timeout:.0f} s") from exc
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise BenchError(f"the run of size {cfg['size']:,} failed (exit {p.returncode}); "
                         "its error is above")
    return json.loads(line[len("RESULT "):])


# ------------------------------------------------------------------------------------------
# aggregation, targets, report


def _get(run: dict[str, Any], path: str) -> float | None:
    cur: Any = run
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def summarise(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over runs of every figure the table shows."""
    paths = ["index.reviews_per_s", "index_embedded.reviews_per_s",
             "index_embedded.embed_only_per_s", "memory.growth_bytes",
             "memory.peak_growth_bytes", "disk.total_bytes", "disk.qdrant_bytes",
             "disk.tantivy_bytes", "reopen_s"]
    for lat in ("sparse", "dense", "hybrid", "dense_no_embed", "hybrid_no_embed", "query_embed"):
        paths += [f"latency.{lat}.p50_ms", f"latency.{lat}.p99_ms"]
    depths = sorted({int(k.rsplit("_", 1)[1]) for r in runs for k in r.get("latency", {})
                     if k.startswith("hybrid_rerank_")})
    for n in depths:
        paths += [f"latency.hybrid_rerank_{n}.p50_ms", f"latency.hybrid_rerank_{n}.p99_ms"]
    med = {p: median([_get(r, p) for r in runs]) for p in paths}
    return {"size": size, "runs": runs, "median": med, "rerank_depths": depths,
            "embed_sample": _get(runs[0], "index_embedded.reviews") if runs else None,
            "batch_size": runs[0].get("batch_size") if runs else None}


def compute_targets(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    at = next((s for s in sizes if s["size"] == TARGET_HYBRID_SIZE), None)
    largest = max(sizes, key=lambda s: s["size"]) if sizes else None
    ref = at or largest
    value = ref["median"]["latency.hybrid.p99_ms"] if ref else None
    note = "" if at or ref is None else f" (measured at {ref['size']:,}, not 100k)"
    targets.append({
        "target": f"hybrid text query p99 at {TARGET_HYBRID_SIZE:,} reviews",
        "goal": f"< {TARGET_HYBRID_P99_MS:.0f} ms", "value": value,
        "display": f"{fmt(value)} ms{note}",
        "met": None if value is None or math.isnan(value) else value < TARGET_HYBRID_P99_MS,
        "exact_size": at is not None})
    value = largest["median"]["index.reviews_per_s"] if largest else None
    targets.append({
        "target": "indexing with embeddings given",
        "goal": f">= {TARGET_INDEX_RPS:,.0f} reviews/s", "value": value,
        "display": f"{fmt(value, 0)} reviews/s at {largest['size']:,}" if largest else "-",
        "met": None if value is None or math.isnan(value) else value >= TARGET_INDEX_RPS,
        "exact_size": True})
    if largest and largest.get("rerank_depths"):
        fits = [n for n in largest["rerank_depths"]
                if largest["median"][f"latency.hybrid_rerank_{n}.p99_ms"] < TARGET_RERANK_P99_MS]
        best = max(fits) if fits else None
        shown = best if best is not None else min(largest["rerank_depths"])
        value = largest["median"][f"latency.hybrid_rerank_{shown}.p99_ms"]
        targets.append({
            "target": f"hybrid + rerank p99 at {largest['size']:,} reviews",
            "goal": f"< {TARGET_RERANK_P99_MS:.0f} ms", "value": value,
            "display": (f"largest top-N within it: {best} ({fmt(value)} ms)" if best is not None
                        else f"no top-N fits (top {shown}: {fmt(value)} ms)"),
            "met": best is not None, "exact_size": True, "rerank_depth": best})
    return targets


def targets_line(targets: list[dict[str, Any]]) -> str:
    parts = []
    for t in targets:
        status = "not measured" if t["met"] is None else "MET" if t["met"] else "MISSED"
        parts.append(f"{t['target']} {t['goal']}: {t['display']} → {status}")
    return "Targets: " + "; ".join(parts)


def _pair(med: dict[str, float], name: str) -> str:
    return f"{fmt(med[f'latency.{name}.p50_ms'])} / {fmt(med[f'latency.{name}.p99_ms'])}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"×{a / b:.2f}"


def markdown_table(sizes: list[dict[str, Any]]) -> str:
    """Rows = figures, columns = corpus sizes (+ growth, largest / smallest)."""
    sizes = sorted(sizes, key=lambda s: s["size"])
    growth = len(sizes) >= 2
    lo, hi = (sizes[0], sizes[-1]) if sizes else (None, None)
    sample = next((s["embed_sample"] for s in sizes if s["embed_sample"]), None)
    batch = sizes[0]["batch_size"] if sizes else None

    def per100k(s: dict[str, Any], key: str) -> float:
        return s["median"][key] / MB * 100_000 / s["size"]

    rows: list[tuple[str, list[str], str]] = []

    def row(label: str, cell, ratio=None) -> None:
        cells = [cell(s) for s in sizes]
        rows.append((label, cells, ratio(lo, hi) if growth and ratio else "-"))

    def scalar(key: str, digits: int = 1, scale: float = 1.0):
        return (lambda s: fmt(s["median"][key] / scale, digits),
                lambda a, b: _ratio(b["median"][key], a["median"][key]))

    def latency(name: str):
        def ratio(a, b):
            return (f"{_ratio(b['median'][f'latency.{name}.p50_ms'], a['median'][f'latency.{name}.p50_ms'])}"
                    f" / {_ratio(b['median'][f'latency.{name}.p99_ms'], a['median'][f'latency.{name}.p99_ms'])}")
        return (lambda s: _pair(s["median"], name), ratio)

    row(f"indexing, embeddings given (reviews/s, batch {batch})", *scalar("index.reviews_per_s", 0))
    if sample:
        row(f"indexing, MiniLM embeddings computed (reviews/s, +{sample:,} reviews)",
            *scalar("index_embedded.reviews_per_s"))
        row(f"  MiniLM embedding alone (texts/s, same {sample:,})",
            *scalar("index_embedded.embed_only_per_s"))
    row("RSS growth (MB)", *scalar("memory.growth_bytes", 0, MB))
    row("  per 100k reviews (MB)",
        lambda s: fmt(per100k(s, "memory.growth_bytes"), 0),
        lambda a, b: _ratio(per100k(b, "memory.growth_bytes"), per100k(a, "memory.growth_bytes")))
    row("peak RSS growth while indexing (MB)", *scalar("memory.peak_growth_bytes", 0, MB))
    row("disk, index folder (MB)", *scalar("disk.total_bytes", 1, MB))
    row("  of which Qdrant / tantivy (MB)",
        lambda s: f"{fmt(s['median']['disk.qdrant_bytes'] / MB)} / "
                  f"{fmt(s['median']['disk.tantivy_bytes'] / MB)}",
        lambda a, b: f"{_ratio(b['median']['disk.qdrant_bytes'], a['median']['disk.qdrant_bytes'])}"
                     f" / {_ratio(b['median']['disk.tantivy_bytes'], a['median']['disk.tantivy_bytes'])}")
    row("  per 100k reviews (MB)",
        lambda s: fmt(per100k(s, "disk.total_bytes"), 0),
        lambda a, b: _ratio(per100k(b, "disk.total_bytes"), per100k(a, "disk.total_bytes")))
    row("query p50 / p99 (ms): sparse (BM25)", *latency("sparse"))
    row("query p50 / p99 (ms): dense, incl. query embedding", *latency("dense"))
    row("query p50 / p99 (ms): hybrid, incl. query embedding", *latency("hybrid"))
    row("query p50 / p99 (ms): dense, vector given", *latency("dense_no_embed"))
    row("query p50 / p99 (ms): hybrid, vector given", *latency("hybrid_no_embed"))
    row("query embedding alone p50 / p99 (ms)", *latency("query_embed"))
    row("reopen the index + first query (s)", *scalar("reopen_s", 2))
    for n in sorted({n for s in sizes for n in s.get("rerank_depths", [])}):
        row(f"query p50 / p99 (ms): hybrid + rerank top {n}", *latency(f"hybrid_rerank_{n}"))

    head = ["figure (median of runs)", *[f"{s['size']:,} reviews" for s in sizes]]
    if growth:
        head.append(f"growth {size_label(hi['size'])} / {size_label(lo['size'])}")
    return md_table(head, [[label, *cells, *([ratio] if growth else [])]
                           for label, cells, ratio in rows])


def print_report(result: dict[str, Any], out=None) -> None:
    out = out or sys.stdout
    m, cfg = result["machine"], result["config"]
    v = m["versions"]
    print(f"## Hybrid retrieval speed ({m['date']}, host {m['host']})\n", file=out)
    print(f"CPU: {m['cpu_model']}, {m['usable_cores']} usable cores, RAM {m['memory_gib']} GiB; "
          f"load avg 1m {m['loadavg_1m_start']} at start, {m.get('loadavg_1m_end', '?')} at end; "
          f"qdrant-client {v['qdrant-client']} (local mode), tantivy {v['tantivy']}, "
          f"torch {v['torch']}.", file=out)
    note = busy_note(m)
    if note:
        print(f"**Note: {note}.**", file=out)
    c = result["corpus"]
    print(f"Corpus: {c['unique']:,} real Blitzer reviews"
          + (f", reused with new ids up to {max(cfg['sizes']):,}" if max(cfg['sizes']) > c['unique']
             else "")
          + f"; given vectors: {cfg['vectors']}; {cfg['queries']} real query sentences per mode "
            f"(k={cfg['k']}, {cfg['warmup']} warm-up), no filters; "
          + (f"rerank rows: {cfg.get('rerank_queries')} queries per top-N, k = min(10, N); "
             if cfg.get("rerank_depths") else "no reranking; ")
          + f"{cfg['repeats']} run(s) per size, each in a fresh process; torch threads "
            f"{result.get('torch_threads', '?')}.\n", file=out)
    print(markdown_table(result["sizes"]), file=out)
    print(file=out)
    print(targets_line(result["targets"]), file=out)


# ------------------------------------------------------------------------------------------
# main


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=_ints, default=[10_000, 100_000],
                    help="corpus sizes, e.g. 10000,100000")
    ap.add_argument("--repeats", type=int, default=3, help="runs per size (median shown)")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per mode and run")
    ap.add_argument("--warmup", type=int, default=10, help="untimed queries per mode first")
    ap.add_argument("--k", type=int, default=10, help="hits per search")
    ap.add_argument("--embed-sample", type=int, default=1000,
                    help="reviews indexed with MiniLM computing the embeddings (0: skip)")
    ap.add_argument("--vectors", choices=("random", "real"), default="random",
                    help="given embeddings: random unit vectors or MiniLM of the unique texts")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="indexing batch size (default: RetrievalSettings.batch_size)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch threads for MiniLM (default 0: torch's default, all cores)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="shared data (default: shopsense settings' data_dir)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the temporary indexes go (default: the system temp dir)")
    ap.add_argument("--rerank-depths", type=_ints, default=[],
                    help="also time hybrid + rerank of the fused top N, e.g. 5,10,20,30")
    ap.add_argument("--rerank-queries", type=int, default=50,
                    help="timed queries per rerank depth")
    ap.add_argument("--reranker", type=Path, default=None,
                    help="reranker folder (default: the settings'; untrained MiniLM if none)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--profile", type=Path, default=None,
                    help="cProfile the first run into this file (prints the top functions)")
    ap.add_argument("--json", dest="json_out", type=Path,
                    default=RESULTS / "retrieval_speed.json",
                    help="raw figures (default benchmarks/results/retrieval_speed.json)")
    args = ap.parse_args(argv)
    if not args.sizes or min(args.sizes) < 1:
        ap.error("--sizes must be positive integers")
    if args.repeats < 1 or args.queries < 1:
        ap.error("--repeats and --queries must be at least 1")
    return args


def run(args: argparse.Namespace, out=None) -> dict[str, Any]:
    data_dir = args.data_dir
    if data_dir is None:
        from shopsense.settings import Settings

        data_dir = Settings().data_dir
    data_dir = Path(data_dir).resolve()
    unique = load_corpus(data_dir)
    if args.vectors == "real":  # embed once here, so the runs only read the cache
        from services.retrieval.settings import RetrievalSettings

        real_vectors(unique, max_length=RetrievalSettings().text_max_length)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "corpus": {"unique": len(unique), "source": "blitzer " + ",".join(BLITZER_CATEGORIES)},
        "sizes": [],
    }
    for size in args.sizes:
        runs = []
        for r in range(args.repeats):
            log(f"[{size_label(size)}] run {r + 1}/{args.repeats} ...")
            cfg = {"size": size, "k": args.k, "queries": args.queries, "warmup": args.warmup,
                   "embed_sample": min(args.embed_sample, len(unique)),
                   "vectors": args.vectors, "batch_size": args.batch_size,
                   "torch_threads": args.torch_threads,
                   "rerank_depths": args.rerank_depths, "rerank_queries": args.rerank_queries,
                   "reranker": str(args.reranker) if args.reranker else None,
                   "data_dir": str(data_dir),
                   "workdir": str(args.workdir) if args.workdir else None,
                   "profile": str(args.profile) if args.profile and r == 0 and
                   size == args.sizes[0] else None}
            runs.append(run_child(cfg, args.timeout))
        result["sizes"].append(summarise(size, runs))
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    result["torch_threads"] = next((r.get("torch_threads") for s in result["sizes"]
                                    for r in s["runs"]), None)
    result["targets"] = compute_targets(result["sizes"])
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2, default=str))
    print_report(result, out)
    if args.json_out:
        log(f"raw figures: {args.json_out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        if argv[:1] == ["_child"]:  # internal: one measurement run
            return _child_main(argv[1])
        run(parse_args(argv))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
