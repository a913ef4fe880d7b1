"""The demo shop and the scraping agent (real Chromium through Playwright, real HTTP servers on
127.0.0.1). The LLM path is exercised with LangChain's fake chat models: no LLM is reachable
here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from pipelines.scrape.agent import ScrapeConfig, _parse_crawl_delay, run_scrape
from pipelines.scrape.extract import parse_rating
from pipelines.scrape.llm import LLMAdvisor, parse_json_reply
from pipelines.scrape.measure import score_extractions
from pipelines.scrape.shop import DEFAULT_SITES, DemoShop
from shopsense.text import NearDuplicateIndex
from shopsense.data.dataset import read_dataset, read_manifest
from shopsense.store import LocalStore

CHROMIUM = "/usr/bin/chromium"
needs_browser = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                   reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def shop(data_dir):
    with DemoShop(data_dir, products_per_site=6, outlet_per_site=2) as s:
        yield s


def _cfg(shop, tmp_path: Path, **kw) -> ScrapeConfig:
    base = {"seeds": shop.urls, "store_uri": tmp_path.as_uri(), "max_pages": 1000, "seed": 1,
            "record_extractions": True, "timeout_s": 30}
    return ScrapeConfig(**{**base, **kw})


# --------------------------------------------------------------------------- no browser


def test_shop_serves_robots_broken_pages_and_api(shop):
    nw = shop.site("northwind")
    robots = httpx.get(f"{nw.url}/robots.txt").text
    assert "Disallow: /outlet/" in robots
    flaky = next((p for s in shop.sites for p in s.products if p.condition == "flaky"), None)
    missing = next((p for s in shop.sites for p in s.products if p.condition == "missing"), None)
    for s in shop.sites:
        for p in s.products:
            if p is flaky:
                url = f"{s.url}/p/{p.asin}"
                assert httpx.get(url).status_code == 500
                assert httpx.get(url).status_code == 200  # transient
            if p is missing:
                assert httpx.get(f"{s.url}/p/{p.asin}").status_code == 404
    dyn = shop.site("dynamo")
    p = dyn.products[0]
    page = httpx.get(f"{dyn.url}/p/{p.asin}").text
    assert p.reviews[0].text[:40] not in page  # only a browser running the script sees them
    api = httpx.get(f"{dyn.url}/api/reviews", params={"asin": p.asin, "offset": 0}).json()
    assert api["items"][0]["text"] == p.reviews[0].text
    truth = shop.ground_truth()
    assert {t["style"] for t in truth} == {"jsonld", "microdata", "html", "js"}
    assert all(not t["product_id"] in {q.asin for s in shop.sites for q in s.products
                                       if q.outlet} for t in truth)


def test_shop_rate_limit_answers_429(data_dir):
    sites = tuple(s for s in DEFAULT_SITES if s.name == "plainmart")
    with DemoShop(data_dir, sites=sites, products_per_site=2, rate_limit=1.0, burst=2) as s:
        codes = [httpx.get(s.urls[0] + "/").status_code for _ in range(6)]
        assert 429 in codes
        r = next(httpx.get(s.urls[0] + "/") for _ in range(3))
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"


def test_rating_parsing_and_helpers():
    assert parse_rating({"text": "★★★★☆", "attrs": {"title": "4 out of 5 stars"}}) == 4
    assert parse_rating({"text": "", "attrs": {"data-score": "8", "data-max": "10"}}) == 4
    assert parse_rating({"text": "2/5", "cls": "fb-score score-2"}) == 2
    assert parse_rating({"text": "", "cls": "stars s5"}) == 5
    assert parse_rating({"text": "great"}) is None
    assert parse_json_reply('Sure!\n```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_reply("no json here") is None
    assert _parse_crawl_delay("User-agent: *\nCrawl-delay: 0.5\n", "shopsense-bot/1") == 0.5
    idx = NearDuplicateIndex()
    text = ("The battery died after two weeks and support never answered my emails at all. "
            "I sent it back in the original box and waited a month for the refund, which "
            "finally arrived after I called them three times about it.")
    assert idx.add("a", text) is None
    assert idx.add("b", text.upper() + "!") == ("exact", "a")
    assert idx.add("c", text.replace("two", "three") + " Bought it here.") == ("near", "a")
    assert idx.add("d", "Lovely screen, fast shipping, would buy again from this seller.") is None


# ----------------------------------------------------------------------------- browser


@needs_browser
def test_full_crawl_extracts_every_style(shop, tmp_path):
    res = run_scrape(_cfg(shop, tmp_path))
    scores = score_extractions(res.extractions, shop.ground_truth())
    for site, s in scores.items():
        assert s["precision"] >= 0.95, (site, s)
        assert s["recall"] >= 0.95, (site, s)
    assert shop.requests_to("/outlet") == [] and shop.requests_to("/account") == []
    store = LocalStore(tmp_path)
    manifest, reviews = read_dataset(store, "scraped/reviews")
    reviews = list(reviews)
    assert manifest.count == res.new_reviews == len(reviews) > 0
    assert all(r.source.kind == "scraped" and r.label in ("negative", "positive")
               for r in reviews)
    # near-copies (bargainbin) and the originals never both survive
    kept = {NearDuplicateIndex().add(r.id, r.text) for r in reviews}
    assert len({r.id for r in reviews}) == len(reviews)
    with_photos = [r for r in reviews if r.images]
    assert with_photos and all(store.exists(f"scraped/reviews/{r.images[0].uri}")
                               for r in with_photos)
    assert all(len(store.get_bytes(f"scraped/reviews/{i.uri}")) <= 2 * 1024 * 1024
               for r in with_photos for i in r.images)
    states = [json.loads(store.get_bytes(k)) for k in store.list("scrape/state")]
    assert len(states) == len(shop.sites)
    learned = {s["source"]: s["selectors"] for s in states}
    dyn = f"127.0.0.1:{shop.site('dynamo').port}"
    assert learned[dyn]["container"] == "article.rv" and learned[dyn]["load_more"]
    assert all(s["pages"] > 0 for s in states)
    assert kept  # (the index above is just a smoke check of the API on real texts)


@needs_browser
def test_crash_leaves_dataset_intact_and_run_resumes(shop, tmp_path):
    first = run_scrape(_cfg(shop, tmp_path, max_pages=20))
    store = LocalStore(tmp_path)
    before = read_manifest(store, "scraped/reviews")
    assert before.count == first.new_reviews

    class Boom(RuntimeError):
        pass

    def crash(n, url):
        if n == 12:
            raise Boom(url)

    with pytest.raises(Boom):
        run_scrape(_cfg(shop, tmp_path, max_pages=40, checkpoint_every=5), on_page=crash)
    assert read_manifest(store, "scraped/reviews").digest == before.digest
    assert store.list("scrape/checkpoints")  # the interrupted run left its checkpoint
    resumed = run_scrape(_cfg(shop, tmp_path, max_pages=40, checkpoint_every=5))
    assert resumed.resumed
    after = read_manifest(store, "scraped/reviews")
    assert after.count >= before.count
    assert not store.list("scrape/checkpoints")
    visited = [u for k in store.list("scrape/state")
               for u in json.loads(store.get_bytes(k))["visited"]]
    assert len(visited) == len(set(visited))


@needs_browser
def test_429_is_retried_and_slows_the_host(data_dir, tmp_path):
    sites = tuple(s for s in DEFAULT_SITES if s.name == "microshop")
    with DemoShop(data_dir, sites=sites, products_per_site=4, outlet_per_site=0,
                  rate_limit=3.0, burst=2) as s:
        res = run_scrape(ScrapeConfig(seeds=s.urls, store_uri=tmp_path.as_uri(), seed=2,
                                      min_interval_s=0.0, concurrency=3, max_retries=6,
                                      max_retry_after_s=1.0, record_extractions=True))
        run = next(iter(res.per_source.values()))
        assert run.rate_limited > 0
        scores = score_extractions(res.extractions, s.ground_truth())
        assert scores["microshop"]["recall"] == 1.0
    state = json.loads(LocalStore(tmp_path).get_bytes(LocalStore(tmp_path).list("scrape/state")[0]))
    assert state["interval_s"] > 0.0 and state["rate_limited"] == run.rate_limited


@needs_browser
@pytest.mark.parametrize("proposal, origin", [
    ('{"container": "div.cmt", "text": "p.cmt-txt", "title": "b.cmt-ttl", '
     '"rating": "span.cmt-stars", "image": "img.cmt-pic"}', "llm"),
    ('Here you go: {"container": "section.qa div.qa-item", "text": "p.qa-a", '
     '"rating": "p.qa-q"}', "heuristic"),
    # valid on the page but only part of its reviews: the heuristic's fuller match wins
    ('{"container": "div.cmt:first-of-type", "text": "p.cmt-txt", "title": "b.cmt-ttl", '
     '"rating": "span.cmt-stars"}', "heuristic"),
])
def test_llm_selector_proposals_are_validated(data_dir, tmp_path, proposal, origin):
    """A fake chat model (LangChain's FakeListChatModel) stands in for the OpenAI-compatible LLM:
    its first answer gives source priors, the next ones selectors."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    sites = tuple(s for s in DEFAULT_SITES if s.name == "plainmart")
    with DemoShop(data_dir, sites=sites, products_per_site=3, outlet_per_site=0) as s:
        src = f"127.0.0.1:{s.sites[0].port}"
        chat = FakeListChatModel(responses=[json.dumps({src: 0.7, "unknown": 0.2}), proposal])
        res = run_scrape(ScrapeConfig(seeds=s.urls, store_uri=tmp_path.as_uri(), seed=3,
                                      concurrency=1, record_extractions=True), chat=chat)
        assert res.llm_calls >= 2
        scores = score_extractions(res.extractions, s.ground_truth())
        assert scores["plainmart"]["recall"] == 1.0 and scores["plainmart"]["precision"] == 1.0
    store = LocalStore(tmp_path)
    state = json.loads(store.get_bytes(store.list("scrape/state")[0]))
    assert state["selectors"]["origin"] == origin
    assert state["prior_rate"] == pytest.approx(0.7 * 3.0)
    if origin == "heuristic":
        assert any(f.startswith("llm:") for f in state["selector_failures"])


def test_llm_advisor_survives_a_failing_model():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    advisor = LLMAdvisor(FakeListChatModel(responses=["not json", '{"container": 3}']))
    assert advisor.source_priors({"a": {}}) == {}
    assert advisor.propose_selectors(site="a", url="http://a/", html="<p>x</p>") is None
    assert advisor.errors >= 1
