"""The sub-commands through the root command, in a subprocess (``python -m
services.retrieval.cli`` registers them on ``shopsense.cli.app`` and runs its ``main``, so error
handling is the root command's), and ``register`` on a fresh Typer app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from services.retrieval.cli import register
from shopsense.schemas import Product, Review, Source

ROOT = Path(__file__).resolve().parents[3]


def run(*args, home, stdin=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHOPSENSE_QDRANT", "SHOPSENSE_OPENSEARCH", "SHOPSENSE_RETRIEVAL"))}
    env.update(SHOPSENSE_HOME=str(home), HF_HUB_OFFLINE="1",
               SHOPSENSE_RETRIEVAL__TEXT_MAX_LENGTH="128")
    return subprocess.run([sys.executable, "-m", "services.retrieval.cli", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, input=stdin)


def reviews():
    rows = [("battery died after two days", "negative", 1, "electronics", "P1"),
            ("battery lasts all week, superb", "positive", 5, "electronics", "P1"),
            ("the film dragged on, so boring", "negative", 2, "dvd", "M1"),
            ("a moving film with great acting", "positive", 5, "dvd", "M2"),
            ("headphones sound muddy", "negative", 2, "electronics", "P2"),
            ("cooking with this pan is a joy", "positive", 4, "kitchen", "K1")]
    return [Review.make(source=Source(kind="synthetic", name="cli-test", source_id=str(i)),
                        text=t, label=lbl, rating=r, product=Product(id=p, category=c))
            for i, (t, lbl, r, c, p) in enumerate(rows)]


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """A fresh Typer app with the sub-commands, run in this process (the MiniLM weights the
    session already loaded are reused: one model load fewer than a subprocess)."""
    from shopsense.settings import get_settings

    app = typer.Typer()
    register(app)
    home = tmp_path / "home"
    monkeypatch.setenv("SHOPSENSE_HOME", str(home))
    monkeypatch.setenv("SHOPSENSE_RETRIEVAL__TEXT_MAX_LENGTH", "128")
    for var in ("SHOPSENSE_QDRANT_URL", "SHOPSENSE_OPENSEARCH_URL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args), catch_exceptions=False)
    get_settings.cache_clear()


def test_index_search_delete_status(tmp_path, in_process):
    from shopsense.data.dataset import write_jsonl

    data = tmp_path / "reviews.jsonl"
    rs = reviews()
    write_jsonl(data, rs)
    home = tmp_path / "home"

    p = run("index", "--data", str(data), "--json", home=home)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["indexed"] == 6 and rep["dense"].startswith("qdrant local")
    assert rep["sparse"].startswith("tantivy")

    res = in_process("search", "my battery died", "--k", "3", "--fusion", "rrf", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["mode"] == "hybrid" and out["fusion"] == "rrf" and len(out["hits"]) == 3
    top = out["hits"][0]
    assert top["id"] == rs[0].id and set(top["scores"]) == {"dense", "sparse"}
    assert top["score"] == pytest.approx(sum(1 / (60 + r) for r in top["ranks"].values()))

    p = run("search", "battery", "--mode", "sparse", "--label", "positive", "--rating-gte", "5",
            "--category", "electronics", "--product", "P1", "--json", home=home)
    assert p.returncode == 0, p.stderr
    assert [h["id"] for h in json.loads(p.stdout)["hits"]] == [rs[1].id]

    p = run("index", "--delete", f"{rs[0].id},{rs[1].id} unknown", "--json", home=home)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"requested": 3, "deleted": 2, "not_found": ["unknown"],
                                    "repaired": 0}

    p = run("retrieval", "status", "--json", home=home)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["dense"]["count"] == st["sparse"]["count"] == 4 and st["pending"] == []

    p = run("search", "muddy sound", "--mode", "sparse", home=home)  # the human-readable form
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("1 review (sparse)\n") and rs[4].id in p.stdout


@pytest.mark.parametrize("args, message", [
    (["search", "x", "--label", "great"],
     "error: --label: Input should be 'negative', 'neutral' or 'positive'"),
    (["search", "x", "--mode", "bm25"], "error: --mode 'bm25': choose hybrid, dense, sparse"),
    (["index"], "error: give --data PATH to index or --delete IDS to remove (one of them)"),
    (["index", "--data", "no-such-thing"], "error: --data 'no-such-thing': no such file"),
    (["retrieval", "evaluate", "--beir", "/nonexistent", "--json"],
     "error: /nonexistent: not a directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    p = run(*args, home=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert p.stdout == ""


def test_evaluate_tiny_beir_json(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": 1, "title": "Wing lift", "text": "Lift on a swept wing at low speed."},
            {"_id": 2, "text": "Boundary layer transition on flat plates."},
            {"_id": "3", "title": "Heat", "text": "Heat transfer in hypersonic flow."},
            {"_id": "4", "title": None, "text": "Buckling of thin cylindrical shells."},
            {"_id": "5", "title": "Noise", "text": "Jet noise and its suppression."}]
    queries = [{"_id": 1, "text": "swept wing lift"}, {"_id": "2", "text": "shell buckling"},
               {"_id": "3", "text": "jet noise"}, {"_id": "4", "text": "a query nobody judged"}]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\t1\t2\n1\t2\t0\n2\t4\t1\n3\t5\t1\n3\t3\t0\n")
    p = run("retrieval", "evaluate", "--beir", str(root), "--json", home=tmp_path / "home")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["corpus"] == 5 and out["queries"] == 3 and out["queries_skipped"] == 1
    for mode in ("dense", "sparse", "hybrid"):
        assert set(out[mode]) == {"ndcg@10", "recall@100", "mrr@10"}
        assert all(0 <= v <= 1 for v in out[mode].values())
    assert out["sparse"] == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert out["hybrid"]["recall@100"] == 1.0
    assert not (tmp_path / "home" / "retrieval").exists()  # a throw-away index, not the user's
    best = out["compare"]["best_without_rerank"]
    assert best in ("dense", "sparse", "hybrid-rrf", "hybrid-weighted")
    assert all(0 <= t["p"] <= 1 for t in out["compare"]["vs_best_without_rerank"].values())
    p = run("retrieval", "evaluate", "--beir", str(root), home=tmp_path / "home")  # the table
    assert p.returncode == 0, p.stderr
    assert "p vs best" in p.stdout and "best without reranker:" in p.stdout
    assert "no trained reranker" in p.stdout


def test_register_on_a_fresh_app(in_process):
    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command keeps Typer in group mode
        pass

    register(app)
    register(app)  # idempotent: the entry point and `python -m` may both register
    assert [c.name for c in app.registered_commands] == [None, "index", "search"]
    assert [g.name for g in app.registered_groups] == ["retrieval"]
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0 and "index" in res.output and "retrieval" in res.output
    res = in_process("retrieval", "status", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dense"]["count"] == 0
