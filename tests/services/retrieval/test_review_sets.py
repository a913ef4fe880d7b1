"""The review-retrieval collection: derivation rules on hand-made reviews, BEIR export that
``load_beir`` reads back, and the real Blitzer electronics counts."""

from __future__ import annotations

import json

import pytest

from services.retrieval.offline.beir import load_beir
from services.retrieval.offline.review_sets import build_review_set, export_review_set, load_review_set
from shopsense.errors import InvalidInput
from shopsense.schemas import Product, Review, Source


def review(n: int, product: str | None, label: str | None, text: str = "") -> Review:
    return Review.make(source=Source(kind="imported", name="t", source_id=str(n)),
                       text=text or f"review {n}", title=f"title {n}", label=label,
                       product=Product(id=product) if product else None)


def test_derivation_rules():
    rows = [review(1, "A", "positive"), review(2, "A", "positive"), review(3, "A", "positive"),
            review(4, "A", "negative"),                      # A/negative: one review, no query
            review(5, "B", "negative"), review(6, "B", "negative"),
            review(7, "C", "positive"),                      # single review: distractor only
            review(8, None, "positive"), review(9, "B", None)]
    rs = build_review_set(rows)
    a_pos = sorted(r.id for r in rows[:3])
    b_neg = sorted(r.id for r in rows[4:6])
    # one query per (product, label) group of 2+, the member with the smallest id
    assert set(rs.queries) == {a_pos[0], b_neg[0]}
    assert not set(rs.queries) & set(rs.corpus)              # a query never retrieves itself
    assert len(rs.corpus) == len(rows) - 2
    assert rs.relevant(a_pos[0]) == set(a_pos[1:])
    assert rs.qrels[a_pos[0]][rows[3].id] == 0                # same product, other label: judged 0
    assert rs.relevant(b_neg[0]) == {b_neg[1]}
    assert rs.queries[a_pos[0]].startswith("title ")          # title + text
    graded = build_review_set(rows, other_label_gain=1)
    assert graded.qrels[a_pos[0]][rows[3].id] == 1
    with pytest.raises(InvalidInput):
        build_review_set(rows, other_label_gain=-1)


def test_export_reads_back_as_beir(tmp_path, data_dir):
    out = tmp_path / "electronics"
    rep = export_review_set(out, ["electronics"], data_dir)
    assert (rep["queries"], rep["corpus"]) == (375, 1625)
    col = load_beir(out)
    assert len(col.queries) == 375 and len(col.corpus) == 1625
    assert col.qrels_unknown_doc == 0
    assert sum(len(g) for g in col.qrels.values()) == rep["relevant"]
    first = json.loads((out / "queries.jsonl").read_text().splitlines()[0])
    assert first["_id"] in col.queries
    # re-export replaces the folder in one rename; nothing left beside it
    export_review_set(out, ["electronics"], data_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["electronics"]


def test_unknown_category():
    with pytest.raises(InvalidInput, match="unknown Blitzer category"):
        load_review_set(["kitchen"])
