"""Smoke test of benchmarks/retrieval_speed.py at a tiny size, so the script cannot rot.

No assertion on any timing: only that every part runs and reports the figures it promises.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "retrieval_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("shopsense_bench_retrieval_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_script_runs_end_to_end_at_a_tiny_size(data_dir, tmp_path):
    out = tmp_path / "rs.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "300", "--repeats", "1", "--queries", "5",
         "--warmup", "1", "--embed-sample", "4", "--data-dir", str(data_dir),
         "--workdir", str(tmp_path), "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert any(ln.startswith("| figure (median of runs) | 300 reviews |")
               for ln in lines)
    for label in ("indexing, embeddings given", "indexing, MiniLM embeddings computed",
                  "RSS growth (MB)", "disk, index folder (MB)", "sparse (BM25)",
                  "hybrid, incl. query embedding", "hybrid, vector given"):
        assert sum(label in ln for ln in lines) == 1, label
    assert sum(ln.startswith("Targets: ") for ln in lines) == 1
    result = json.loads(out.read_text())
    assert [s["size"] for s in result["sizes"]] == [300]
    for s in result["sizes"]:
        run = s["runs"][0]
        assert run["index"]["indexed"] == s["size"]
        assert run["index_embedded"]["reviews"] == 4
        assert run["disk"]["qdrant_bytes"] > 0 and run["disk"]["tantivy_bytes"] > 0
        assert set(run["latency"]) == {"sparse", "dense", "hybrid", "dense_no_embed",
                                       "hybrid_no_embed", "query_embed"}
        assert all(v["n"] == 5 for v in run["latency"].values())
    assert [t["met"] is not None for t in result["targets"]] == [True, True]
    assert not any(tmp_path.glob("retrieval-speed-*")), "temporary indexes are removed"


def test_corpus_reuse_keeps_real_texts_with_new_ids(bench, data_dir):
    unique = bench.load_corpus(data_dir)
    assert len(unique) == 6000
    docs, src = bench.scale_corpus(unique[:10], 25)
    assert len({d.id for d in docs}) == 25
    assert [d.text for d in docs] == [unique[i].text for i in src]
    assert docs[12].id == f"{unique[2].id}~1" and docs[12].product == unique[2].product
    vecs = bench.given_vectors(unique[:10], src, "random", max_length=256)
    assert vecs.shape == (25, 384)
    assert (vecs[12] == vecs[2]).all()
    queries = bench.load_queries(data_dir, 7)
    assert len(queries) == 7 and not {q for q in queries} & {d.text for d in unique}


def _summary(bench, size: int, index_rps: float, hybrid_p99: float):
    lat = {name: {"p50_ms": 1.0, "p99_ms": 2.0, "n": 3} for name in
           ("sparse", "dense", "dense_no_embed", "hybrid_no_embed", "query_embed")}
    lat["hybrid"] = {"p50_ms": hybrid_p99 / 2, "p99_ms": hybrid_p99, "n": 3}
    run = {"size": size, "batch_size": 64,
           "index": {"reviews_per_s": index_rps, "indexed": size},
           "index_embedded": {"reviews": 10, "reviews_per_s": 20.0, "embed_only_per_s": 25.0},
           "memory": {"growth_bytes": size * 1000, "peak_growth_bytes": size * 1200},
           "disk": {"total_bytes": size * 700, "qdrant_bytes": size * 500,
                    "tantivy_bytes": size * 200},
           "latency": lat, "reopen_s": 0.5}
    return bench.summarise(size, [run])


def test_table_shows_growth_and_targets(bench):
    sizes = [_summary(bench, 100_000, 900.0, 40.0), _summary(bench, 10_000, 1500.0, 20.0)]
    table = bench.markdown_table(sizes)
    head = table.splitlines()[0]
    assert head == "| figure (median of runs) | 10,000 reviews | 100,000 reviews | growth 100k / 10k |"
    rss = next(ln for ln in table.splitlines() if ln.startswith("| RSS growth (MB)"))
    assert rss.endswith("| ×10.00 |")
    per = [ln for ln in table.splitlines() if ln.startswith("|   per 100k reviews (MB)")]
    assert len(per) == 2 and all(ln.endswith("| ×1.00 |") for ln in per)
    targets = bench.compute_targets(sizes)
    assert [t["met"] for t in targets] == [True, False]
    line = bench.targets_line(targets)
    assert "40.0 ms → MET" in line and "900 reviews/s at 100,000 → MISSED" in line

    result = {"machine": {"date": "d", "host": "h", "cpu_model": "c", "usable_cores": 2,
                          "memory_gib": 1.0, "loadavg_1m_start": 0.1,
                          "versions": {"qdrant-client": "1", "tantivy": "1", "torch": "1"}},
              "config": {"sizes": [10_000, 100_000], "vectors": "random", "queries": 3, "k": 10,
                         "warmup": 1, "repeats": 1},
              "corpus": {"unique": 6000}, "sizes": sizes, "targets": targets}
    buf = io.StringIO()
    bench.print_report(result, buf)
    text = buf.getvalue()
    assert "reused with new ids up to 100,000" in text and text.rstrip().endswith("MISSED")


def test_targets_say_when_100k_was_not_measured(bench):
    targets = bench.compute_targets([_summary(bench, 300, 2000.0, 10.0)])
    assert "(measured at 300, not 100k)" in targets[0]["display"]


def test_rerank_cost_per_top_n(data_dir, tmp_path):
    out = tmp_path / "rr.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "200", "--repeats", "1", "--queries", "3",
         "--warmup", "1", "--embed-sample", "0", "--data-dir", str(data_dir),
         "--rerank-depths", "2,4", "--rerank-queries", "3", "--reranker", str(tmp_path / "no"),
         "--workdir", str(tmp_path), "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "SHOPSENSE_HOME": str(tmp_path / "home")},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    for n in (2, 4):
        assert sum(f"hybrid + rerank top {n} |" in ln for ln in lines) == 1, n
    run = json.loads(out.read_text())["sizes"][0]["runs"][0]
    assert run["latency"]["hybrid_rerank_4"]["n"] == 3
    target = json.loads(out.read_text())["targets"][-1]
    assert target["target"].startswith("hybrid + rerank p99") and target["met"] is not None
