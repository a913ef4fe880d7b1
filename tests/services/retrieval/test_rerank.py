"""The reranker: training-pair derivation, a tiny random model trained and saved atomically,
the interpolation, HybridRetriever/evaluate wiring and the untrained-reranker error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.retrieval.offline.train_rerank import (
    TrainConfig,
    build_training_groups,
    train_reranker,
)
from services.retrieval.rerank import (
    META_FILE,
    Reranker,
    RerankerNotTrained,
    combine,
    reranker_available,
)
from shopsense.errors import ModelNotFound
from shopsense.schemas import Product, Review, Source
from tests.services.retrieval.conftest import settings

TEXTS = {
    "P1": [("The battery lasts a full week. Charging takes two hours with the cable. "
            "I use it every day for running and it never died on me."),
           ("Battery life is great, about a week. The strap broke after a month though. "
            "Support replaced it quickly and I am happy again.")],
    "P2": [("These headphones sound muddy at high volume. The bass is boomy and vocals "
            "vanish. I returned them after two days of trying."),
           ("Comfortable headphones with clear sound. The noise cancelling works on planes. "
            "Battery lasts for a long flight easily.")],
    "P3": [("A frying pan that heats evenly on gas. Eggs slide right off the coating. "
            "Cleaning takes seconds with warm water."),
           ("The pan warped after a month on high heat. The coating started to peel too. "
            "Not worth the money at all.")],
}


def reviews() -> list[Review]:
    out = []
    for p, texts in TEXTS.items():
        for i, t in enumerate(texts):
            out.append(Review.make(source=Source(kind="synthetic", name="rr", source_id=f"{p}{i}"),
                                   text=t, title=f"My honest view of {p} number {i}",
                                   label="positive" if i == 0 else "negative",
                                   product=Product(id=p)))
    return out


def test_training_groups_exclude_same_product_negatives():
    rs = reviews()
    groups = build_training_groups(rs, negatives=2, seed=1)
    assert {g.task for g in groups} == {"ict", "title", "product"}
    contents = {r.id: (r.product.id, r.title + ". " + r.text) for r in rs}
    for g in groups:
        assert len(g.negatives) == 2 and g.positive not in g.negatives
        if g.task == "product":
            src = next(p for p, c in contents.values() if c == g.query)
            assert all(contents_product(contents, n) != src for n in g.negatives)
    capped = build_training_groups(rs, negatives=2, seed=1, max_groups=4)
    assert len(capped) == 4


def contents_product(contents, text):
    return next(p for p, c in contents.values() if c == text)


def test_combine_interpolates_minmax():
    ce, first = np.array([0.0, 10.0, 5.0]), np.array([3.0, 1.0, 2.0])
    assert combine(ce, first, 1.0).tolist() == [0.0, 1.0, 0.5]
    assert combine(ce, first, 0.0).tolist() == [1.0, 0.0, 0.5]
    assert combine(np.array([2.0, 2.0]), np.array([1.0, 0.0]), 0.5).tolist() == [1.0, 0.5]


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory):
    out = tmp_path_factory.mktemp("rr") / "reranker"
    cfg = TrainConfig(max_groups=6, negatives=2, batch_groups=3, epochs=2, max_length=48,
                      dev_category=None, random_init=True)
    report = train_reranker(out, cfg, settings=settings(rerank_max_length=64),
                            reviews=reviews())
    return out, report


def test_train_writes_a_loadable_model(tiny_reranker):
    out, report = tiny_reranker
    assert reranker_available(out)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["alpha"] == 1.0 and meta["fit"]["steps"] == 4 and meta["groups"] == 6
    assert report["out_dir"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["reranker"]  # no temporary left
    rr = Reranker.load(out, max_length=64, alpha=0.5)
    scores = rr.score("battery life", ["battery lasts a week", "pan warped"])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    cands = [("a", "battery lasts a week", 0.9), ("b", "pan warped", 0.5), ("c", "x", 0.1)]
    ranked = rr.rerank("battery life", cands, depth=2)
    assert [d for d, _, _ in ranked][2] == "c" and ranked[2][2] is None  # tail untouched
    assert {d for d, _, _ in ranked[:2]} == {"a", "b"}
    # a second training run replaces the folder in one rename
    train_reranker(out, TrainConfig(max_groups=3, negatives=2, batch_groups=3,
                                    dev_category=None, random_init=True, max_length=48),
                   settings=settings(), reviews=reviews())
    assert json.loads((out / META_FILE).read_text())["groups"] == 3


def test_missing_reranker_is_a_clear_error(tmp_path):
    with pytest.raises(RerankerNotTrained, match="train-reranker") as err:
        Reranker.load(tmp_path / "nothing")
    assert isinstance(err.value, ModelNotFound)


def test_search_with_rerank(tmp_path, embedder, tiny_reranker):
    from services.retrieval.retriever import HybridRetriever

    out, _ = tiny_reranker
    s = settings(reranker_dir=out, rerank_depth=4, rerank_max_length=64)
    with HybridRetriever.open(s, index_dir=tmp_path / "idx", text_embedder=embedder) as r:
        r.index(reviews())
        plain = r.search("battery life of the watch", k=5)
        reranked = r.search("battery life of the watch", k=5, rerank=True)
        assert {h.id for h in reranked[:4]} == {h.id for h in plain[:4]}  # head re-ordered only
        assert all("rerank" in h.scores for h in reranked[:4])
        assert reranked[4].id == plain[4].id and reranked[4].scores.get("rerank") is None
        assert "rerank" not in plain[0].scores
    missing = settings(reranker_dir=tmp_path / "none", rerank=True)
    with HybridRetriever.open(missing, index_dir=tmp_path / "idx2", text_embedder=embedder) as r:
        r.index(reviews()[:2])
        with pytest.raises(RerankerNotTrained):
            r.search("battery")                     # the setting turns it on
        assert r.search("battery", rerank=False)    # an explicit False wins


def test_evaluate_beir_adds_hybrid_rerank(tmp_path, embedder, tiny_reranker):
    from services.retrieval.offline.beir import evaluate_beir

    out, _ = tiny_reranker
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    rs = reviews()
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": r.id, "title": r.title, "text": r.text}) for r in rs))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "battery life"}))
    (root / "qrels" / "test.tsv").write_text(f"q\t{rs[0].id}\t1\nq\t{rs[1].id}\t1\n")
    s = settings(reranker_dir=out, rerank_depth=3, rerank_max_length=64)
    res = evaluate_beir(root, s, text_embedder=embedder)
    # every first-stage mode with and without the reranker (issue 15)
    assert res["modes"] == ["dense", "sparse", "hybrid", "hybrid-rrf", "hybrid-weighted",
                            "hybrid+rerank", "dense+rerank", "sparse+rerank",
                            "hybrid-rrf+rerank", "hybrid-weighted+rerank"]
    assert res["hybrid+rerank"] == res[f"hybrid-{s.fusion}+rerank"]
    cmp = res["compare"]
    assert cmp["best_without_rerank"] in ("dense", "sparse", "hybrid-rrf", "hybrid-weighted")
    assert set(cmp["rerank_gain"]) == {"dense", "sparse", "hybrid-rrf", "hybrid-weighted"}
    assert all(0.0 <= t["p"] <= 1.0 for t in cmp["rerank_gain"].values())
    assert res["hybrid"] == res["hybrid-rrf"]
    assert set(res["hybrid+rerank"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert res["hybrid+rerank"]["recall@100"] == res["hybrid"]["recall@100"]
    assert res["rerank"]["depth"] == 3
    off = evaluate_beir(root, s, text_embedder=embedder, rerank=False)
    assert "hybrid+rerank" not in off and "hybrid+rerank" not in off["modes"]
    none = settings(reranker_dir=tmp_path / "none")
    assert "hybrid+rerank" not in evaluate_beir(root, none, text_embedder=embedder)
    with pytest.raises(RerankerNotTrained):
        evaluate_beir(root, none, text_embedder=embedder, rerank=True)
