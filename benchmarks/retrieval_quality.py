"""Retrieval quality of every mode on real test collections: a markdown table.

    nice .venv/bin/python benchmarks/retrieval_quality.py            # Cranfield + review set
    nice .venv/bin/python benchmarks/retrieval_quality.py --json     # one JSON object on stdout
    .venv/bin/python benchmarks/retrieval_quality.py --beir tiny=DIR --no-defaults   # any BEIR dir

Collections (built from the shared data (../shared/data) on every run, in a temporary folder):

* ``cranfield``: Cranfield-1400 (1,400 aeronautics abstracts, 225 queries) through
  ``shopsense.data.loaders.load_cranfield_beir``. Gains: Cleverdon's code 1 "complete answer"
  → 4, 2 → 3, 3 → 2, 4 "minimum interest" → 1, -1 "no interest" dropped (cranqrel.readme's
  reading; tools that read the codes the other way round get other nDCG values).
* ``reviews``: the Blitzer ``electronics`` review set (``services/retrieval/review_sets.py``:
  query = a review, relevant = other reviews of the same ASIN with the same label; 375 queries,
  1,625 reviews).

Neither was used to train or calibrate anything: the reranker trains on Blitzer ``books`` +
Hu & Liu reviews and its interpolation weight is chosen on the Blitzer ``dvd`` review set
(``shopsense retrieval train-reranker``); fusion settings are the service defaults.

Modes: ``sparse`` (BM25, tantivy), ``dense`` (MiniLM), ``hybrid-rrf``, ``hybrid-weighted``
(both fusions of the same two top-100 lists) and, when a reranker is trained, each of them with
the reranker (``<mode>+rerank``: the mode's top ``rerank_depth`` re-scored with the calibrated
alpha; ``hybrid+rerank`` is the configured fusion's) and ``rerank-only`` (the configured fusion
re-scored with alpha = 1: the cross-encoder's order alone). Metrics (trec_eval's, through
ir-measures) and the paired significance tests as ``services/retrieval/offline/beir.py``
defines them: per collection, a table of every mode with and without the reranker, each
mode's p-value against the best mode without the reranker, and the reranker's change of each
mode with its p-value. Retrieval is deterministic, so one run is enough. Results are also
written to ``benchmarks/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from services.retrieval.offline.beir import (  # noqa: E402
    METRICS,
    REPORT_COLUMNS,
    base_runs,
    collect_rankings,
    evaluate_rankings,
    load_reranker_for,
    report_rows,
    report_summary,
    rerank_runs,
    score_run,
)
from services.retrieval.settings import RetrievalSettings  # noqa: E402

MODE_ORDER = ("sparse", "dense", "hybrid-rrf", "hybrid-weighted", "hybrid+rerank", "rerank-only",
              "sparse+rerank", "dense+rerank", "hybrid-rrf+rerank", "hybrid-weighted+rerank")
sys.path.insert(0, str(ROOT / "benchmarks"))
from _harness import busy_note, host_info, markdown_table  # noqa: E402

#: Published nDCG@10 anchors (not on our collections: Cranfield is not part of BEIR and the
#: review set is ours). BM25: BEIR paper, Thakur et al., NeurIPS 2021 Datasets track, Table 2
#: (Anserini BM25 multifield). all-MiniLM-L6-v2: the MTEB scores in the model card's metadata
#: (huggingface.co/sentence-transformers/all-MiniLM-L6-v2, MTEB retrieval tasks = BEIR test
#: sets). "BM25+CE": BEIR's BM25 top-100 re-ranked by an MS MARCO MiniLM-L6 cross-encoder.
ANCHORS: dict[str, dict[str, float]] = {
    "SciFact": {"BM25": 0.665, "all-MiniLM-L6-v2": 0.645, "BM25+CE": 0.688},
    "NFCorpus": {"BM25": 0.325, "all-MiniLM-L6-v2": 0.316, "BM25+CE": 0.350},
    "SCIDOCS": {"BM25": 0.158, "all-MiniLM-L6-v2": 0.216, "BM25+CE": 0.166},
    "TREC-COVID": {"BM25": 0.656, "all-MiniLM-L6-v2": 0.473, "BM25+CE": 0.757},
    "BEIR average (18 sets)": {"BM25": 0.440, "BM25+CE": 0.489},
}


def prepare(name: str, spec: str | None, data_dir: Path | None, tmp: Path) -> Path:
    if spec is not None:
        return Path(spec)
    out = tmp / name
    if name == "cranfield":
        from shopsense.data.loaders import load_cranfield_beir

        load_cranfield_beir(data_dir, out)
    elif name == "reviews":
        from services.retrieval.offline.review_sets import export_review_set

        export_review_set(out, ["electronics"], data_dir)
    else:
        raise SystemExit(f"unknown collection {name!r}")
    return out


def load_reranker(args, settings: RetrievalSettings):
    from services.retrieval.rerank import reranker_available

    if args.no_rerank:
        return None
    path = Path(args.reranker) if args.reranker else settings.resolved_reranker_dir()
    if not reranker_available(path):
        print(f"(no trained reranker at {path}: the +rerank modes are left out; "
              "train one with `shopsense retrieval train-reranker`)", file=sys.stderr)
        return None
    return load_reranker_for(settings, True, path)


def evaluate(name: str, directory: Path, settings: RetrievalSettings, reranker,
             max_queries: int | None, depth: int) -> dict:
    t0 = time.monotonic()
    r = collect_rankings(directory, settings, max_queries=max_queries, progress=True)
    t1 = time.monotonic()
    ev = evaluate_rankings(r, settings, reranker=reranker, rerank_depth=depth, progress=True)
    out = {m: ev["metrics"][m] for m in MODE_ORDER if m in ev["metrics"]}
    extra: dict = {}
    if reranker is not None:
        base = {"hybrid": base_runs(r, settings)["hybrid"]}  # its pairs were scored above
        only = rerank_runs(r, base, reranker, depth, alpha=1.0,
                           logits=ev["logits"])["hybrid+rerank"]
        out["rerank-only"] = score_run({q: [d for d, _ in h] for q, h in only.items()}, r.qrels)
        extra["rerank"] = {**reranker.describe(), "depth": depth, "base": settings.fusion,
                           "seconds": round(time.monotonic() - t1, 1)}
    best = max(out, key=lambda m: out[m]["ndcg@10"])
    single = max(("dense", "sparse"), key=lambda m: out[m]["ndcg@10"])
    hybrid = max(("hybrid-rrf", "hybrid-weighted"), key=lambda m: out[m]["ndcg@10"])
    return {
        "collection": name,
        "dir": str(directory),
        "queries": r.info["queries"],
        "corpus": r.info["corpus"],
        "modes": out,
        "compare": ev["compare"],
        "best": best,
        "best_vs_rrf": round(out[best]["ndcg@10"] - out["hybrid-rrf"]["ndcg@10"], 6),
        "better_single": single,
        "best_hybrid": hybrid,
        "hybrid_vs_single": round(out[hybrid]["ndcg@10"] - out[single]["ndcg@10"], 6),
        "rrf_vs_single": round(out["hybrid-rrf"]["ndcg@10"] - out[single]["ndcg@10"], 6),
        "seconds": round(time.monotonic() - t0, 1),
        **extra,
    }


def markdown(results: list[dict], settings: RetrievalSettings) -> str:
    names = [f"{r['collection']} ({r['queries']} q / {r['corpus']} docs)" for r in results]
    head = "| mode | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(results)
    lines = ["nDCG@10 / Recall@100 / MRR@10", "", head, sep]
    modes = [m for m in MODE_ORDER if any(m in r["modes"] for r in results)]
    for m in modes:
        cells = []
        for r in results:
            v = r["modes"].get(m)
            cell = "-" if v is None else " / ".join(f"{v[k]:.3f}" for k in METRICS)
            cells.append(f"**{cell}**" if r["best"] == m else cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        m = r["modes"]
        lines.append(
            f"- {r['collection']}: best mode {r['best']} nDCG@10 {m[r['best']]['ndcg@10']:.3f} vs "
            f"plain RRF {m['hybrid-rrf']['ndcg@10']:.3f} ({r['best_vs_rrf']:+.3f}); better single "
            f"retriever {r['better_single']} {m[r['better_single']]['ndcg@10']:.3f}; best hybrid "
            f"{r['best_hybrid']} {r['hybrid_vs_single']:+.3f} vs it (RRF {r['rrf_vs_single']:+.3f})")
        if "rerank" in r:
            rr = r["rerank"]
            lines.append(f"  reranker alpha {rr['alpha']:.1f}, top {rr['depth']} of hybrid-"
                         f"{rr['base']}, {rr['max_length']} tokens, {rr['seconds']:.0f}s for "
                         f"{r['queries']} queries")
    for r in results:
        table = {**r["modes"], "compare": r["compare"]}
        lines += ["", f"{r['collection']}: every mode with and without the reranker "
                  f"({r['queries']} queries)", "",
                  markdown_table(REPORT_COLUMNS, report_rows(table)), "",
                  report_summary(table)]
    lines += ["", f"fusion: rrf_k {settings.rrf_k}, weights {settings.weights()}, "
              f"candidates {max(100, settings.candidates)} per retriever; MiniLM at "
              f"{settings.text_max_length} tokens", "",
              "Published anchors (nDCG@10 on BEIR test sets, not on these collections):", "",
              "| BEIR set | " + " | ".join(("BM25", "all-MiniLM-L6-v2", "BM25+CE")) + " |",
              "|---|---|---|---|"]
    for ds, vals in ANCHORS.items():
        lines.append(f"| {ds} | " + " | ".join(
            f"{vals[k]:.3f}" if k in vals else "-" for k in ("BM25", "all-MiniLM-L6-v2", "BM25+CE"))
            + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collections", default="cranfield,reviews",
                   help="built-in collections to run (comma separated: cranfield, reviews)")
    p.add_argument("--no-defaults", action="store_true", help="run only the --beir collections")
    p.add_argument("--beir", action="append", default=[], metavar="NAME=DIR",
                   help="also evaluate a BEIR directory (repeatable)")
    p.add_argument("--data-dir", type=Path, default=None, help="shared data (default: settings)")
    p.add_argument("--reranker", default=None, help="reranker folder (default: settings)")
    p.add_argument("--no-rerank", action="store_true")
    p.add_argument("--rerank-depth", type=int, default=None)
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--text-max-length", type=int, default=None, help="MiniLM tokens per text")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    overrides = {"qdrant_url": None, "opensearch_url": None}
    if args.text_max_length:
        overrides["text_max_length"] = args.text_max_length
    settings = RetrievalSettings(**overrides)
    depth = args.rerank_depth or settings.rerank_depth
    specs: list[tuple[str, str | None]] = []
    if not args.no_defaults:
        specs += [(c.strip(), None) for c in args.collections.split(",") if c.strip()]
    for item in args.beir:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--beir {item!r}: expected NAME=DIR")
        specs.append((name, path))
    if not specs:
        raise SystemExit("nothing to evaluate")
    reranker = load_reranker(args, settings)
    results = []
    with tempfile.TemporaryDirectory(prefix="shopsense-rq-") as tmp:
        for name, spec in specs:
            directory = prepare(name, spec, args.data_dir, Path(tmp))
            results.append(evaluate(name, directory, settings, reranker, args.max_queries, depth))
    machine = host_info()
    machine["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"fusion": settings.fusion, "rrf_k": settings.rrf_k,
                     "weights": settings.weights(), "text_max_length": settings.text_max_length,
                     "rerank_depth": depth},
        "results": results,
        "anchors": ANCHORS,
    }
    text = markdown(results, settings)
    note = busy_note(machine)
    if note:
        text += f"\n\n(note: {note}; quality figures do not depend on load)"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (args.out_dir / f"retrieval_quality-{stamp}.json").write_text(json.dumps(report, indent=2))
    (args.out_dir / f"retrieval_quality-{stamp}.md").write_text(text + "\n")
    print(json.dumps(report) if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
