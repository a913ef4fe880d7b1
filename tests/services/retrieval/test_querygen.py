"""LLM-written training queries: parsing, the resumable per-generator cache, a real llama.cpp
server (SmolLM2-135M: the mechanics, not the quality), and training groups filtered by the
first-stage retrievers with hard negatives from the hybrid results. Tiny subsets only."""

from __future__ import annotations

import json

import pytest

from services.retrieval.offline.querygen import (
    QueryCache,
    QueryGenerator,
    all_cached_queries,
    generate_queries,
    parse_queries,
    review_order,
)
from services.retrieval.offline.train_rerank import build_llm_groups
from shopsense.errors import DataError
from shopsense.schemas import Product, Review, Source
from shopsense.store import LocalStore
from shopsense.text import review_content
from tests.services.retrieval.conftest import settings


def review(i: int, text: str, product: str, title: str | None = None) -> Review:
    return Review.make(source=Source(kind="synthetic", name="qg", source_id=str(i)), text=text,
                       title=title, label="positive", product=Product(id=product))


REVIEWS = [
    review(0, "The battery lasts a full week and charging takes two hours.", "W1", "Great watch"),
    review(1, "Strap broke after a month; support replaced it quickly.", "W1"),
    review(2, "These headphones sound muddy and the bass is boomy.", "H1", "Muddy sound"),
    review(3, "Noise cancelling works well on planes, comfortable for hours.", "H2"),
    review(4, "The pan warped on high heat and the coating started to peel.", "P1"),
    review(5, "Eggs slide right off, cleaning takes seconds with warm water.", "P2"),
    review(6, "The kettle boils fast but the lid is hard to open.", "K1"),
    review(7, "Screen protector cracked the first time the phone fell.", "S1"),
]


def test_parse_queries_cleans_lines():
    raw = ("Here are 4 queries:\n1. Does the battery last a week?\n- \"strap broke quickly\"\n"
           "A: yes it does\nQuery 3: how long does charging take\nok\n"
           "does the battery last a week?\nThe battery lasts a full week and charging takes")
    got = parse_queries(raw, REVIEWS[0].text, 5)
    assert got == ["Does the battery last a week?", "strap broke quickly",
                   "how long does charging take"]  # numbering, quotes, answers, copies, dupes
    assert parse_queries(raw, REVIEWS[0].text, 2) == got[:2]


def test_review_order_interleaves_sets_and_is_stable():
    a, b = REVIEWS[:6], REVIEWS[6:]
    order = review_order({"a": a, "b": b})
    assert {r.id for r in order} == {r.id for r in REVIEWS} and len(order) == len(REVIEWS)
    assert {order[0].id, order[1].id} & {r.id for r in b}  # the small set comes early
    assert [r.id for r in review_order({"a": list(reversed(a)), "b": b})] == [r.id for r in order]


class ScriptedClient:
    """A chat client that answers from a script and can fail on one review (to test that a run
    resumes where the cache stops)."""

    class endpoint:  # noqa: N801 - mirrors LLMClient.endpoint
        identity = "scripted@test"

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on, self.calls = fail_on, 0

    def chat(self, messages, **kwargs):
        self.calls += 1
        text = messages[-1]["content"]
        if self.fail_on and self.fail_on in text:
            from shopsense.llm.weights import LLMUnavailable

            raise LLMUnavailable("the server went away")
        word = text.split('"""')[1].split()[1]
        return f"is the {word} any good\nproblems with the {word} after a month\n"


def test_cache_is_incremental_and_resumes(tmp_path):
    store = LocalStore(tmp_path / "store")
    cache = QueryCache(store, "scripted@test", shard_size=2)
    from shopsense.llm.weights import LLMUnavailable

    with pytest.raises(LLMUnavailable):
        generate_queries(REVIEWS, QueryGenerator(ScriptedClient(fail_on="kettle")), cache)
    done = len(QueryCache(store, "scripted@test"))
    assert 0 < done < len(REVIEWS)  # what came before the failure is kept
    client = ScriptedClient()
    report = generate_queries(REVIEWS, QueryGenerator(client), QueryCache(store, "scripted@test"))
    assert client.calls == len(REVIEWS) - done  # only the missing reviews
    assert report["cache"]["reviews"] == len(REVIEWS)
    manifest = json.loads(store.get_bytes(f"{cache.prefix}/manifest.json"))
    assert manifest["generator"] == "scripted@test" and manifest["reviews"] == len(REVIEWS)
    assert manifest["generator_settings"]["prompt"] == "q1"
    assert not store.list(f"{cache.prefix}/parts")  # compacted
    queries, caches = all_cached_queries(store)
    assert len(queries) == len(REVIEWS) and caches[0]["generator"] == "scripted@test"
    assert all_cached_queries(store, "someone else")[0] == {}
    # a cache holds one generator's queries: a line of another one is refused
    store.put_bytes(f"{cache.prefix}/parts/zz.jsonl", (json.dumps(
        {"review_id": "r", "queries": [], "generator": "someone else"}) + "\n").encode())
    with pytest.raises(DataError, match="is not"):
        QueryCache(store, "scripted@test").rows()


def test_limit_and_budget(tmp_path):
    store = LocalStore(tmp_path / "store")
    report = generate_queries(REVIEWS, QueryGenerator(ScriptedClient()),
                              QueryCache(store, "scripted@test"), limit=3)
    assert report["generated_reviews"] == 3 and report["pending_reviews"] == 0
    assert len(QueryCache(store, "scripted@test")) == 3


def test_real_llm_server_writes_queries(smol_llm, tmp_path):
    from shopsense.llm.client import LLMClient

    store = LocalStore(tmp_path / "store")
    with LLMClient(smol_llm, timeout_s=600) as client:
        gen = QueryGenerator(client, per_review=3, max_tokens=60)
        cache = QueryCache(store, gen.identity)
        report = generate_queries(REVIEWS[:2], gen, cache)
    assert report["generated_reviews"] == 2
    rows = QueryCache(store, gen.identity).rows()
    assert set(rows) == {r.id for r in REVIEWS[:2]}
    assert all(row["raw"] and row["generator"] == smol_llm.identity for row in rows.values())
    assert all(len(row["queries"]) <= 3 for row in rows.values())


def test_llm_groups_filter_and_mine_hard_negatives(embedder):
    queries = {
        REVIEWS[0].id: ["battery lasts a full week", "how long does charging take"],
        REVIEWS[2].id: ["muddy headphones boomy bass"],
        REVIEWS[4].id: ["quantum chromodynamics lecture notes"],  # finds nothing: dropped
        "not-in-corpus": ["whatever"],
    }
    groups, stats = build_llm_groups(queries, REVIEWS, settings(), negatives=2, keep_top=2,
                                     negatives_from=6, text_embedder=embedder)
    assert stats["generated"] == 4 and stats["not_in_corpus"] == 1
    kept = {g.query for g in groups}
    assert "quantum chromodynamics lecture notes" not in kept
    assert {"battery lasts a full week", "muddy headphones boomy bass"} <= kept
    by_content = {review_content(r.title, r.text): r for r in REVIEWS}
    for g in groups:
        assert g.task == "llm" and len(g.negatives) == 2
        pos = by_content[g.positive]
        for n in g.negatives:  # never the review itself nor its product's other reviews
            assert by_content[n].product.id != pos.product.id
    assert stats["kept"] == len(groups) and 0 < stats["kept_fraction"] < 1
