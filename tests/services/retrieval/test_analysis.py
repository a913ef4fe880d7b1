"""BM25 analysis: negations survive in queries and documents, and tantivy and OpenSearch (the
stand-in server interpreting the index settings the backend sends, with Lucene's BM25 and an
independent Snowball stemmer) analyse and rank the same small collection the same way."""

from __future__ import annotations

import pytest

from services.retrieval.analysis import NEGATIONS, STOP_WORDS, bm25_text
from services.retrieval.schema import Doc
from services.retrieval.sparse import OpenSearchSparseIndex, TantivySparseIndex
from tests.services.retrieval.conftest import settings


@pytest.mark.parametrize("text, expected", [
    ("It doesn't work", "It does not work"),
    ("I can't say", "I can not say"),
    ("won't buy again", "will not buy again"),
    ("ISN’T worth it", "IS not worth it"),
    ("dont buy, it wasnt good", "do not buy, it was not good"),
    ("the cant of the roof", "the can not of the roof"),  # a rare word read as a negation
    ("John's phone", "John's phone"),
])
def test_negated_contractions_are_spelled_out(text, expected):
    assert bm25_text(text) == expected


def test_negations_are_not_stop_words():
    assert not set(NEGATIONS) & set(STOP_WORDS)
    assert {"the", "and", "is", "s"} <= set(STOP_WORDS)


def test_tantivy_keeps_negations_in_queries_and_documents(tmp_path):
    sp = TantivySparseIndex(tmp_path / "t")
    assert sp.analyze("Not worth it, don't buy") == ["not", "worth", "do", "not", "buy"]
    assert sp.analyze("no sound") == ["no", "sound"]
    sp.upsert([Doc(id="pos", text="Worth every penny. Works great."),
               Doc(id="neg", text="Not worth the money. It doesn't work.")])
    hits = sp.search("does not work", k=2)
    assert [h.id for h in hits] == ["neg", "pos"]  # "not" scores: the negative review wins
    assert [h.id for h in sp.search("not", k=5)] == ["neg"]


COLLECTION = [
    ("d1", "Battery died after two days", "The battery doesn't hold a charge. Not worth it."),
    ("d2", "Great battery", "Battery lasts for days, charging is quick and the cable is long."),
    ("d3", None, "I can't recommend these earphones: the sound is tinny and the bass is weak."),
    ("d4", "Solid sound", "Earphones with clear sound and deep bass. Comfortable for running."),
    ("d5", "Returned it", "Stopped working after a week. Returned it for a refund."),
    ("d6", None, "Works as described. Nothing special, never had a problem with it."),
    ("d7", "Screen cracked", "The screen cracked on the first drop; the case didn't protect it."),
    ("d8", "Sturdy case", "This case protects the phone from drops. No cracks after a year."),
    ("d9", None, "John's charger charges two phones at once, it's fast and it's cheap."),
    ("d10", "Not for me", "Not comfortable, not loud, not cheap. Would not buy again."),
    ("d11", "Charging problems", "Charging stops at 80 percent and the phone gets hot."),
    ("d12", None, "The chargers' cables are short; otherwise charging works fine for us."),
    ("d13", "Loud and clear", "Speakers are loud and clear, bass could be deeper, no complaints."),
    ("d14", "Disappointed", "Disappointing battery life, disappointed with support, won't return."),
    ("d15", None, "A supercalifragilisticexpialidociouslyextraordinarilylongword appears here."),
]
QUERIES = ["battery not worth it", "doesn't hold a charge", "earphones bass", "no cracks",
           "would not buy again", "charging cable", "disappointed battery", "never a problem",
           "screen cracked drop", "charger's cables", "loud sound", "returned refund",
           "supercalifragilisticexpialidociouslyextraordinarilylongword"]


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory):
    from tests.services.retrieval.fake_opensearch import FakeOpenSearchServer

    docs = [Doc(id=i, title=t, text=x) for i, t, x in COLLECTION]
    tantivy = TantivySparseIndex(tmp_path_factory.mktemp("t") / "t")
    tantivy.upsert(docs)
    with FakeOpenSearchServer() as fake:
        opensearch = OpenSearchSparseIndex.open(settings(opensearch_url=fake.url), index="same")
        assert opensearch.upsert(docs) == {}
        yield tantivy, opensearch, fake
        opensearch.close()


def test_both_backends_analyse_alike(both_backends):
    tantivy, _, fake = both_backends
    analyze = fake._analyzer("same")  # built from the settings the backend sent
    for _, title, text in COLLECTION:
        content = Doc(id="x", title=title, text=text).content
        assert tantivy.analyze(content) == analyze(bm25_text(content)), content
    for q in QUERIES:
        assert tantivy.analyze(q) == analyze(bm25_text(q)), q


@pytest.mark.parametrize("query", QUERIES)
def test_both_backends_rank_alike(both_backends, query):
    tantivy, opensearch, _ = both_backends
    t_hits = tantivy.search(query, k=20)
    o_hits = opensearch.search(query, k=20)
    assert {h.id for h in t_hits} == {h.id for h in o_hits}

    def order(hits):  # ties (equal scores) in id order, in both
        return [h.id for h in sorted(hits, key=lambda h: (-round(h.score, 4), h.id))]

    assert order(t_hits) == order(o_hits), (query, [(h.id, h.score) for h in t_hits],
                                            [(h.id, h.score) for h in o_hits])
    # the same BM25: tantivy's scores are Lucene's times (k1 + 1)
    o_score = {h.id: h.score for h in o_hits}
    for h in t_hits:
        assert h.score == pytest.approx(2.2 * o_score[h.id], rel=1e-3), (query, h.id)
