"""The retrieval-quality benchmark runs end to end on a tiny BEIR collection with a tiny random
reranker; it prints the table and saves its results. No figures asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shopsense.schemas import Product, Review, Source

ROOT = Path(__file__).resolve().parents[2]

DOCS = [("1", "Wing lift", "Lift on a swept wing at low speed."),
        ("2", "", "Boundary layer transition on flat plates."),
        ("3", "Heat", "Heat transfer in hypersonic flow."),
        ("4", "", "Buckling of thin cylindrical shells under pressure."),
        ("5", "Noise", "Jet noise and its suppression by mixing nozzles.")]


def tiny_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in DOCS))
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in (
        {"_id": "a", "text": "swept wing lift"}, {"_id": "b", "text": "shell buckling"})))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\na\t1\t2\nb\t4\t1\n")
    return root


def tiny_reranker(out: Path) -> Path:
    from services.retrieval.offline.train_rerank import TrainConfig, train_reranker
    from tests.services.retrieval.conftest import settings

    reviews = [Review.make(source=Source(kind="synthetic", name="b", source_id=str(i)),
                           text=f"Sentence one about item {i}. The second sentence is here and "
                           f"long enough. A third one closes review {i}.",
                           title=f"Title words for {i}", label="positive",
                           product=Product(id=f"P{i % 3}")) for i in range(8)]
    train_reranker(out, TrainConfig(max_groups=4, negatives=2, batch_groups=2, max_length=32,
                                    dev_category=None, random_init=True),
                   settings=settings(), reviews=reviews)
    return out


def test_retrieval_quality_prints_a_table(tmp_path):
    beir = tiny_beir(tmp_path / "tiny")
    rr = tiny_reranker(tmp_path / "rr")
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSENSE_")}
    env.update(SHOPSENSE_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "retrieval_quality.py"), "--no-defaults",
         "--beir", f"tiny={beir}", "--reranker", str(rr), "--text-max-length", "64",
         "--rerank-depth", "3", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for mode in ("sparse", "dense", "hybrid-rrf", "hybrid-weighted", "hybrid+rerank",
                 "rerank-only"):
        assert any(line.startswith(f"| {mode} |") for line in lines), p.stdout
    assert any(line.startswith("- tiny: best mode") and "plain RRF" in line for line in lines)
    assert any("BM25" in line and "all-MiniLM-L6-v2" in line for line in lines)
    # every mode with and without the reranker, with p-values (issue 15)
    head = next(i for i, line in enumerate(lines) if line.startswith("| mode | nDCG@10 |"))
    assert "p vs best" in lines[head] and "+rerank nDCG@10" in lines[head]
    rows = [line for line in lines[head + 2:head + 6]]
    assert [r.split(" | ")[0].strip("| ").split(" ")[0] for r in rows] == [
        "dense", "sparse", "hybrid-rrf", "hybrid-weighted"]
    assert any(line.startswith("best without reranker:") for line in lines)
    saved = json.loads(next(out.glob("retrieval_quality-*.json")).read_text())
    assert saved["results"][0]["queries"] == 2
    assert set(saved["results"][0]["modes"]["hybrid+rerank"]) == {"ndcg@10", "recall@100",
                                                                   "mrr@10"}
    assert "best_with_vs_without" in saved["results"][0]["compare"]
