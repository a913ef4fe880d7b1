"""The scraping agent: Playwright + Chromium, structured data first, selectors it learns per
site, a bandit that chooses sources from what past runs yielded, polite and resumable.

``run_scrape(config) -> ScrapeResult`` is the whole step (a Kubeflow component calls it):

1. Per source (``host:port`` of each seed URL) load its :class:`SourceState` from the object
   store: counters, decayed bandit evidence, learned selectors, request interval, URL-pattern
   yields and the frontier left by the last run. With an LLM, ask it for prior yields of the
   sources (used as the bandit's prior mean, clipped). If a checkpoint of an interrupted run
   exists, resume from it instead (its states, visited pages and collected reviews).
2. Read ``robots.txt`` of each source with ``protego`` (RFC 9309, ``*`` and ``$`` wildcards
   included; 404 → everything allowed; 5xx or unreachable → nothing allowed);
   ``Crawl-delay`` sets the host's minimum request interval, honoured up to
   ``max_crawl_delay_s`` (a source asking for more is not crawled: never faster than asked).
3. Workers (browser tabs) repeatedly pick a source by Thompson sampling
   (:func:`~pipelines.scrape.state.thompson_choice`), take its most promising URL (URL patterns
   that yielded reviews first), and fetch it under the per-host concurrency and interval.
   ``429`` → every worker leaves the host alone for ``Retry-After`` (seconds or an HTTP date),
   honoured up to ``max_retry_after_s`` (a longer one ends the host's run: its pages wait for
   the next run), and the host's interval doubles (never below its Crawl-delay; it relaxes 5 %
   per success); ``5xx``, timeouts and network errors → retry with exponential backoff and
   jitter; other ``4xx`` → recorded failure.
4. Extraction: JSON-LD and microdata first; else the site's learned selectors (waiting for
   script-rendered reviews and clicking "load more" on dynamic sites); a site without
   selectors gets them from the LLM (validated on the page) or from the heuristic learner.
5. Each review gets a stable id (source, product, text hash), is dropped if its id or a
   near-identical text was seen (in the published dataset or this run), and its photos are
   downloaded into ``images/`` through the API's safe fetcher (``shopsense.images.fetch``:
   public addresses only, or the seeds' own ``host:port`` origins and ``allow_hosts``; every
   redirect checked again, size cap, deadline), only where the photo host's robots.txt allows
   it, under the same per-host politeness as pages (concurrency, interval, Retry-After).
6. Every ``checkpoint_every`` pages the run is checkpointed. At the end the dataset (the
   previous reviews plus the new ones) is published atomically, then the source states, then
   the checkpoint is removed. A crash leaves the previous dataset as it was.

The parts, one module each: :mod:`~pipelines.scrape.config` (what a run is given and returns),
:mod:`~pipelines.scrape.fetching` (robots.txt, per-host pace, pages and photos),
:mod:`~pipelines.scrape.scheduling` (the bandit), :mod:`~pipelines.scrape.reading` (reviews
off a page), :mod:`~pipelines.scrape.checkpoints` (state across runs and crashes,
publication); :class:`_Crawler` holds one run's state and ties them together.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlparse

import numpy as np

from pipelines.scrape import checkpoints
from pipelines.scrape.config import (
    CHROMIUM_ARGS,
    ScrapeConfig,
    ScrapeInterrupted,
    ScrapeResult,
    SourceRun,
)
from pipelines.scrape.extract import PAGE_JS
from pipelines.scrape.fetching import Fetcher, Host, Robots, normal_url, source_of
from pipelines.scrape.fetching import parse_crawl_delay as _parse_crawl_delay  # noqa: F401 (re-export)
from pipelines.scrape.llm import LLMAdvisor
from pipelines.scrape.reading import PageReader, review_of
from pipelines.scrape.scheduling import choose, reward, url_pattern
from pipelines.scrape.state import SourceState
from shopsense.data.dataset import image_key
from shopsense.errors import InvalidImage, PayloadTooLarge
from shopsense.schemas import DatasetManifest, ImageRef, Review
from shopsense.store import ObjectStore, open_store
from shopsense.text import NearDuplicateIndex

log = logging.getLogger(__name__)

__all__ = [
    "CHROMIUM_ARGS",
    "ScrapeConfig",
    "ScrapeInterrupted",
    "ScrapeResult",
    "SourceRun",
    "run_scrape",
]

_BLOCK = re.compile(r"\.(png|jpe?g|gif|webp|svg|ico|css|woff2?|ttf|mp4|webm)(\?|$)", re.IGNORECASE)
_SKIP_LINK = re.compile(r"\.(png|jpe?g|gif|webp|svg|ico|css|js|pdf|zip|mp4)(\?|$)", re.IGNORECASE)


class _Crawler:
    """One run: its sources and counters, what it collected, and its workers."""

    def __init__(self, config: ScrapeConfig, *, chat: Any = None,
                 on_page: Callable[[int, str], None] | None = None,
                 store: ObjectStore | None = None) -> None:
        self.cfg = config
        self.advisor = LLMAdvisor(chat) if chat is not None else None
        self.on_page = on_page
        if store is None:
            from shopsense.settings import get_settings

            store = open_store(config.store_uri or get_settings().default_store_uri())
        self.store = store
        self.rng = np.random.default_rng(config.seed)
        self.sources: dict[str, SourceState] = {}
        self.runs: dict[str, SourceRun] = {}
        self.fetcher = Fetcher(config, jitter=random.Random(config.seed),
                               learned_interval=self._learned_interval)
        self.reader = PageReader(config, self.advisor)
        self.new: list[Review] = []
        self.images: dict[str, bytes] = {}
        self.ids: set[str] = set()
        self.dedupe = NearDuplicateIndex(threshold=config.near_duplicate_threshold)
        self.pages_started = 0
        self.pages_done = 0
        self.in_flight = 0
        self.queued: dict[str, set[str]] = {}
        self.resumed = False
        self.run_id = uuid.uuid4().hex[:12]
        self.ckpt_prefix = checkpoints.checkpoint_prefix(config)
        self.previous: list[Review] = []
        self.extractions: list[dict[str, Any]] = []

    @property
    def hosts(self) -> dict[str, Host]:
        return self.fetcher.hosts

    @property
    def robots(self) -> dict[str, Robots]:
        return self.fetcher.robots

    def _learned_interval(self, src: str) -> float | None:
        st = self.sources.get(src)
        return st.interval_s if (st is not None and self.cfg.learn) else None

    # ----------------------------------------------------------------- state and checkpoints

    def _load(self) -> None:
        cfg = self.cfg
        self.previous = checkpoints.read_previous(self.store, cfg.dataset)
        for r in self.previous:
            self.ids.add(r.id)
            self.dedupe.force_add(r.id, r.text)
        ckpt = checkpoints.read_checkpoint(self.store, self.ckpt_prefix)
        seeds = [normal_url(s) for s in cfg.seeds]
        if ckpt is not None:
            self.resumed = True
            self.run_id = ckpt["run_id"]
            self.pages_started = self.pages_done = int(ckpt["pages"])
            self.sources = {k: SourceState.model_validate(v) for k, v in ckpt["states"].items()}
            self.runs = {k: SourceRun.model_validate(v) for k, v in ckpt["runs"].items()}
            for line in ckpt["reviews"]:
                r = Review.model_validate(line)
                if r.id not in self.ids:
                    self.new.append(r)
                    self.ids.add(r.id)
                    self.dedupe.force_add(r.id, r.text)
            self.images.update(checkpoints.checkpoint_images(self.store, self.ckpt_prefix,
                                                             ckpt.get("images", [])))
            log.info("resuming run %s after %d pages (%d reviews collected)", self.run_id,
                     self.pages_done, len(self.new))
        else:
            for seed in seeds:
                src = source_of(seed)
                if src in self.sources:
                    continue
                self.sources[src] = checkpoints.carried_state(self.store, cfg, src)
                self.runs[src] = SourceRun()
        for seed in seeds:
            st = self.sources[source_of(seed)]
            if seed not in st.visited and not any(u == seed for u, _ in st.frontier):
                st.frontier.append([seed, 0])
        for st in self.sources.values():
            self.queued[st.source] = {u for u, _ in st.frontier}

    def _checkpoint(self) -> None:
        checkpoints.write_checkpoint(self.store, self.ckpt_prefix, run_id=self.run_id,
                                     pages=self.pages_done, sources=self.sources,
                                     runs=self.runs, new=self.new, images=self.images)

    def _publish(self) -> DatasetManifest:
        return checkpoints.publish(self.store, self.cfg, self.ckpt_prefix, run_id=self.run_id,
                                   resumed=self.resumed, sources=self.sources, runs=self.runs,
                                   previous=self.previous, new=self.new, images=self.images)

    # ------------------------------------------------------------------- robots, scheduling

    async def _fetch_robots(self, client: Any) -> None:
        await self.fetcher.fetch_robots(client, list(self.sources))

    def _available(self) -> list[SourceState]:
        return [s for s in self.sources.values() if s.frontier and
                self.fetcher.crawlable(s.source)]

    def _choose(self) -> tuple[SourceState, str, int] | None:
        return choose(self._available(), self.cfg.bandit, self.rng)

    # ---------------------------------------------------------------------- pages, photos

    async def _image(self, client: Any, url: str, run: SourceRun) -> ImageRef | None:
        """One photo of a review, downloaded politely (see :meth:`Fetcher.fetch_photo`) and
        checked to be an image; ``None`` (counted as skipped) when it cannot be had."""
        data = await self.fetcher.fetch_photo(url, run)
        if data is None:
            return None
        try:
            from shopsense.images.decode import ImageLimits, probe_image

            _, width, height = probe_image(data, ImageLimits(max_bytes=self.cfg.max_image_bytes,
                                                             max_pixels=40_000_000))
        except (InvalidImage, PayloadTooLarge):
            run.images_skipped += 1
            return None
        sha = hashlib.sha256(data).hexdigest()
        self.images[sha] = data
        run.images += 1
        return ImageRef(uri=image_key(sha, data), sha256=sha, width=width, height=height)

    async def _process(self, client: Any, page: Any, st: SourceState, url: str, depth: int
                       ) -> None:
        cfg = self.cfg
        run = self.runs[st.source]
        status, resp = await self.fetcher.goto(page, st, run, url)
        st.visited[url] = status
        run.pages += 1
        st.pages += 1
        pattern = url_pattern(url)
        if status != 200:
            run.failures += 1
            st.failures += 1
            reward(st, pattern, 0)
            return
        raw_html = ""
        try:
            raw_html = await resp.text()
        except Exception:
            pass
        info = await page.evaluate(PAGE_JS)
        canonical = normal_url(info["canonical"]) if info.get("canonical") else None
        if canonical and canonical != url and source_of(canonical) == st.source:
            if canonical in st.visited:  # the same page under another URL (?page=1 …)
                reward(st, pattern, 0)
                return
            st.visited[canonical] = status
            self.queued[st.source].discard(canonical)
            st.frontier = [f for f in st.frontier if f[0] != canonical]
        extracted = await self.reader.extract(page, st, url, raw_html)
        robots = self.robots[st.source]
        for link in info["links"]:
            href = normal_url(urljoin(url, link["href"]))
            if source_of(href) != st.source or not href.startswith(("http://", "https://")):
                continue
            if _SKIP_LINK.search(href) or href in st.visited or href in self.queued[st.source]:
                continue
            if not robots.allowed(cfg.user_agent, href):
                run.robots_blocked += 1
                st.visited[href] = -1  # remembered as disallowed
                continue
            st.frontier.append([href, depth + 1])
            self.queued[st.source].add(href)
        new = 0
        path_id = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1] or "unknown"
        for er in extracted:
            run.extracted += 1
            st.extracted += 1
            run.methods[er.method] = run.methods.get(er.method, 0) + 1
            text = " ".join(er.text.split())
            if len(text) < cfg.min_text_chars or (er.rating is not None and
                                                  not 1 <= er.rating <= 5):
                run.invalid += 1
                continue
            product_id = er.product_id or path_id
            review = review_of(er, text=text, product_id=product_id, site=st.source,
                               url=url, page_title=info.get("h1"))
            duplicate = review.id in self.ids or self.dedupe.add(review.id, text) is not None
            if cfg.record_extractions:
                self.extractions.append({"host": st.source, "url": url, "text": text,
                                         "product_id": product_id,
                                         "rating": er.rating, "title": er.title,
                                         "method": er.method, "duplicate": duplicate})
            if duplicate:
                run.duplicates += 1
                st.duplicates += 1
                continue
            self.ids.add(review.id)
            if cfg.download_images and er.images:
                refs = [await self._image(client, u, run) for u in er.images[:4]]
                refs = [r for r in refs if r is not None]
                if refs:
                    review = review.model_copy(update={"images": refs})
            self.new.append(review)
            new += 1
            if review.label:
                st.labels[review.label] = st.labels.get(review.label, 0) + 1
        run.new_reviews += new
        st.new_reviews += new
        reward(st, pattern, new)

    # ---------------------------------------------------------------------------------- run

    async def _worker(self, context: Any, client: Any) -> None:
        page = await context.new_page()
        try:
            while True:
                if self.pages_started >= self.cfg.max_pages:
                    return
                pick = self._choose()
                if pick is None:
                    if self.in_flight == 0:
                        return
                    await asyncio.sleep(0.02)
                    continue
                st, url, depth = pick  # stays in `queued` (seen) so no one re-adds it
                self.pages_started += 1
                self.in_flight += 1
                try:
                    await self._process(client, page, st, url, depth)
                finally:
                    self.in_flight -= 1
                self.pages_done += 1
                if self.on_page is not None:
                    self.on_page(self.pages_done, url)
                if self.pages_done % self.cfg.checkpoint_every == 0:
                    self._checkpoint()
                if self._bar is not None:
                    self._bar.update(1)
                    self._bar.set_postfix(new=len(self.new))
        finally:
            await page.close()

    async def run(self) -> ScrapeResult:
        import httpx
        from playwright.async_api import async_playwright

        cfg = self.cfg
        start = time.perf_counter()
        self._load()
        if self.advisor is not None and not self.resumed:
            priors = await asyncio.to_thread(
                self.advisor.source_priors, {k: v.summary() for k, v in self.sources.items()})
            for src, p in priors.items():
                # the LLM gives a probability of a useful page; scale to reviews per page
                self.sources[src].prior_rate = p * 3.0
        self._bar = None
        if cfg.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=cfg.max_pages, initial=self.pages_done, desc="scrape",
                             unit="page")
        # only for the seeds' robots.txt (RFC 9309: follow at least five redirects); photos go
        # through the safe fetcher
        async with httpx.AsyncClient(headers={"User-Agent": cfg.user_agent},
                                     follow_redirects=False, max_redirects=5) as client:
            await self._fetch_robots(client)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=cfg.chromium,
                                                   args=cfg.chromium_args)
                try:
                    context = await browser.new_context(user_agent=cfg.user_agent)
                    await context.route(_BLOCK, lambda route: route.abort())
                    workers = [self._worker(context, client) for _ in range(cfg.concurrency)]
                    await asyncio.gather(*workers)
                finally:
                    await browser.close()
        if self._bar is not None:
            self._bar.close()
        for src, host in self.hosts.items():
            self.sources[src].interval_s = host.interval
        seconds = time.perf_counter() - start
        manifest = self._publish()
        pages = sum(r.pages for r in self.runs.values())
        new = sum(r.new_reviews for r in self.runs.values())
        root = self.store.uri.rstrip("/")
        return ScrapeResult(
            dataset_uri=f"{root}/{cfg.dataset}",
            manifest=manifest,
            run_id=self.run_id,
            resumed=self.resumed,
            pages=pages,
            requests=sum(r.requests for r in self.runs.values()),
            new_reviews=new,
            duplicates=sum(r.duplicates for r in self.runs.values()),
            failures=sum(r.failures for r in self.runs.values()),
            seconds=round(seconds, 2),
            pages_per_second=round(pages / max(seconds, 1e-9), 2),
            new_reviews_per_page=round(new / max(1, pages), 3),
            per_source=self.runs,
            llm_calls=self.advisor.calls if self.advisor else 0,
            extractions=self.extractions,
        )



def run_scrape(config: ScrapeConfig, *, chat: Any = None,
               on_page: Callable[[int, str], None] | None = None,
               store: ObjectStore | None = None) -> ScrapeResult:
    """Run one scraping step (see the module docstring) and publish its dataset.

    ``chat``: a LangChain chat model for selector proposals and source priors (default: none;
    :func:`~shopsense.llm.chat_model_from_env` builds one from the environment).
    ``on_page(n, url)`` is called after each page (progress; tests use it to interrupt)."""
    return asyncio.run(_Crawler(config, chat=chat, on_page=on_page, store=store).run())
