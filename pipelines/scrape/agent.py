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
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urldefrag, urljoin, urlparse

import numpy as np
from protego import Protego
from pydantic import BaseModel, Field

from pipelines.scrape.extract import (
    LEARN_JS,
    PAGE_JS,
    RATING_HINT_JS,
    SELECTOR_JS,
    STRUCTURED_JS,
    ExtractedReview,
    SelectorSet,
    reviews_from_selectors,
    reviews_from_structured,
    validate_selectors,
)
from pipelines.scrape.llm import LLMAdvisor
from pipelines.scrape.state import SourceState, load_state, save_state, thompson_choice
from shopsense.text import NearDuplicateIndex, normalise_text
from shopsense.data.dataset import (
    DatasetNotFound,
    image_key,
    read_dataset,
    write_dataset,
)
from shopsense.errors import (
    ImageFetchFailed,
    ImageFetchRefused,
    InvalidImage,
    PayloadTooLarge,
    ShopsenseError,
)
from shopsense.schemas import DatasetManifest, ImageRef, Product, Review, Source, rating_to_label
from shopsense.images.fetch import parse_retry_after
from shopsense.store import ObjectNotFound, ObjectStore, join_key, open_store

log = logging.getLogger(__name__)

__all__ = [
    "CHROMIUM_ARGS",
    "ScrapeConfig",
    "ScrapeInterrupted",
    "ScrapeResult",
    "run_scrape",
]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]
_BLOCK = re.compile(r"\.(png|jpe?g|gif|webp|svg|ico|css|woff2?|ttf|mp4|webm)(\?|$)", re.IGNORECASE)
_CLASS_ATTR = re.compile(r"""class\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_SKIP_LINK = re.compile(r"\.(png|jpe?g|gif|webp|svg|ico|css|js|pdf|zip|mp4)(\?|$)", re.IGNORECASE)


class ScrapeInterrupted(ShopsenseError):
    """The run stopped before publishing (the checkpoint lets the next run resume)."""


class ScrapeConfig(BaseModel):
    """One scraping run."""

    seeds: list[str] = Field(description="start URLs; each distinct host:port is a source")
    store_uri: str | None = Field(None, description="object store root; default from settings")
    dataset: str = Field("scraped/reviews", description="dataset prefix in the store")
    state_prefix: str = Field("scrape/state", description="where per-source state lives")
    checkpoint_prefix: str = Field("scrape/checkpoints", description="where a run checkpoints")
    max_pages: int = Field(200, ge=1, description="page budget of this run (distinct URLs)")
    concurrency: int = Field(4, ge=1, description="browser tabs working at once")
    per_host_concurrency: int = Field(2, ge=1)
    min_interval_s: float = Field(0.05, ge=0, description="per-host gap between requests; "
                                  "raised by Crawl-delay and on 429")
    max_interval_s: float = Field(2.0, description="ceiling of the adaptive interval")
    max_retries: int = Field(3, ge=0, description="retries of a page on 429/5xx/timeouts")
    backoff_s: float = Field(0.2, description="first retry delay; doubles, with jitter")
    max_retry_after_s: float = Field(
        120.0, description="longest Retry-After honoured; a server asking for more ends that "
        "host's run (never retried sooner than asked)")
    max_crawl_delay_s: float = Field(
        30.0, description="longest robots.txt Crawl-delay honoured; a source asking for more "
        "is not crawled")
    allow_hosts: list[str] = Field(
        default_factory=list, description="private hosts, host:port origins or CIDRs photos "
        "may come from, beside the seeds' own host:port origins (always allowed)")
    timeout_s: float = Field(15.0, description="page load timeout")
    render_timeout_s: float = Field(5.0, description="wait for script-rendered reviews")
    user_agent: str = "shopsense-bot/0.1"
    download_images: bool = True
    max_image_bytes: int = Field(2 * 1024 * 1024, description="larger photos are skipped")
    min_text_chars: int = 20
    near_duplicate_threshold: float = 0.7
    learn: bool = Field(True, description="use and update per-source state across runs")
    bandit: Literal["thompson", "uniform"] = "thompson"
    decay: float = Field(0.8, ge=0, le=1, description="weight of past runs' bandit evidence")
    checkpoint_every: int = Field(10, ge=1)
    max_llm_proposals: int = Field(3, description="LLM selector proposals tried per site "
                                   "(only on pages that show ratings)")
    seed: int | None = None
    chromium: str = "/usr/bin/chromium"
    chromium_args: list[str] = Field(default_factory=lambda: list(CHROMIUM_ARGS))
    progress: bool = False
    record_extractions: bool = Field(False, description="return every extracted record "
                                     "(before dedupe) in the result, for measurement")


class SourceRun(BaseModel):
    pages: int = 0
    requests: int = 0
    extracted: int = 0
    new_reviews: int = 0
    duplicates: int = 0
    invalid: int = 0
    failures: int = 0
    rate_limited: int = 0
    retries: int = 0
    robots_blocked: int = 0
    images: int = 0
    images_skipped: int = 0
    methods: dict[str, int] = Field(default_factory=dict)


class ScrapeResult(BaseModel):
    dataset_uri: str
    manifest: DatasetManifest
    run_id: str
    resumed: bool
    pages: int
    requests: int
    new_reviews: int
    duplicates: int
    failures: int
    seconds: float
    pages_per_second: float
    new_reviews_per_page: float
    per_source: dict[str, SourceRun]
    llm_calls: int = 0
    extractions: list[dict[str, Any]] = Field(default_factory=list, repr=False)


# ----------------------------------------------------------------------------------- helpers

_ROBOTS_MAX_CHARS = 512 * 1024  # RFC 9309: parse at least the first 500 KiB


def _fetch_settings(config: ScrapeConfig):
    """The safe fetcher's settings for photos: the scrape's size cap and timeout, redirects
    checked hop by hop, and private addresses only for the seeds' own origins and
    ``allow_hosts``."""
    from shopsense.settings import ImageSettings

    origins = sorted({_source_of(s) for s in config.seeds})
    return ImageSettings(max_bytes=config.max_image_bytes, fetch_timeout_s=config.timeout_s,
                         max_redirects=3, allow_hosts=[*origins, *config.allow_hosts])



def _source_of(url: str) -> str:
    return urlparse(url).netloc


def _normal_url(url: str) -> str:
    url, _ = urldefrag(url)
    p = urlparse(url)
    return p._replace(path=p.path or "/").geturl()


def _pattern(url: str) -> str:
    p = urlparse(url)
    first = p.path.strip("/").split("/")[0] if p.path.strip("/") else ""
    return first + ("?page" if "page=" in p.query else "")


def _parse_crawl_delay(text: str, agent: str) -> float | None:
    """``Crawl-delay`` for ``agent`` (or ``*``), as a float, read by protego."""
    delay = Protego.parse(text).crawl_delay(agent)
    return None if delay is None else float(delay)


@dataclass
class _Host:
    sem: asyncio.Semaphore
    interval: float
    floor: float  # the Crawl-delay (or min_interval_s): the interval never goes below it
    next_at: float = 0.0
    gave_up: bool = False  # asked to wait longer than max_retry_after_s: done for this run
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait_turn(self) -> None:
        async with self.lock:
            now = time.monotonic()
            wait = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)

    def back_off(self, seconds: float) -> None:
        """Nobody sends to this host for ``seconds`` (a Retry-After)."""
        self.next_at = max(self.next_at, time.monotonic() + seconds)

    def slow_down(self, ceiling: float) -> None:
        self.interval = min(max(ceiling, self.floor), max(self.interval * 2, 0.05))


class _Robots:
    """One host's robots.txt, read by protego (RFC 9309, with ``*`` and ``$`` wildcards)."""

    def __init__(self, text: str | None, allow_all: bool = False, deny_all: bool = False):
        self.parser = Protego.parse(text or "")
        self.allow_all, self.deny_all = allow_all, deny_all
        self.text = text or ""

    def allowed(self, agent: str, url: str) -> bool:
        if self.deny_all:
            return False
        if self.allow_all:
            return True
        return self.parser.can_fetch(url, agent)

    def crawl_delay(self, agent: str) -> float | None:
        if self.deny_all or self.allow_all:
            return None
        delay = self.parser.crawl_delay(agent)
        return None if delay is None else float(delay)


# ------------------------------------------------------------------------------------ crawler


class _Crawler:
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
        self.jitter = random.Random(config.seed)
        self.sources: dict[str, SourceState] = {}
        self.runs: dict[str, SourceRun] = {}
        self.hosts: dict[str, _Host] = {}
        self.robots: dict[str, _Robots] = {}
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
        self.ckpt_prefix = join_key(config.checkpoint_prefix,
                                    re.sub(r"[^A-Za-z0-9._-]+", "_", config.dataset))
        self.previous: list[Review] = []
        self.extractions: list[dict[str, Any]] = []
        self.learning: dict[str, asyncio.Lock] = {}
        self._fetch_settings = _fetch_settings(config)

    # ----------------------------------------------------------------- state and checkpoints

    def _load(self) -> None:
        cfg = self.cfg
        try:
            _, reviews = read_dataset(self.store, cfg.dataset)
            self.previous = list(reviews)
        except DatasetNotFound:
            self.previous = []
        for r in self.previous:
            self.ids.add(r.id)
            self.dedupe.force_add(r.id, r.text)
        ckpt = self._read_checkpoint()
        seeds = [_normal_url(s) for s in cfg.seeds]
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
            for sha in ckpt.get("images", []):
                try:
                    self.images[sha] = self.store.get_bytes(join_key(self.ckpt_prefix,
                                                                     "images", sha))
                except ObjectNotFound:
                    pass
            log.info("resuming run %s after %d pages (%d reviews collected)", self.run_id,
                     self.pages_done, len(self.new))
        else:
            for seed in seeds:
                src = _source_of(seed)
                if src in self.sources:
                    continue
                st = (load_state(self.store, cfg.state_prefix, src) if cfg.learn
                      else SourceState(source=src))
                st.bandit_pages *= cfg.decay
                st.bandit_reviews *= cfg.decay
                st.patterns = {k: [v[0] * cfg.decay, v[1] * cfg.decay]
                               for k, v in st.patterns.items()}
                st.runs += 1
                self.sources[src] = st
                self.runs[src] = SourceRun()
        for seed in seeds:
            st = self.sources[_source_of(seed)]
            if seed not in st.visited and not any(u == seed for u, _ in st.frontier):
                st.frontier.append([seed, 0])
        for st in self.sources.values():
            self.queued[st.source] = {u for u, _ in st.frontier}

    def _read_checkpoint(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(join_key(self.ckpt_prefix, "checkpoint.json")))
        except ObjectNotFound:
            return None

    def _checkpoint(self) -> None:
        for sha, data in self.images.items():
            key = join_key(self.ckpt_prefix, "images", sha)
            if not self.store.exists(key):
                self.store.put_bytes(key, data)
        body = {
            "run_id": self.run_id,
            "pages": self.pages_done,
            "states": {k: v.model_dump(mode="json") for k, v in self.sources.items()},
            "runs": {k: v.model_dump(mode="json") for k, v in self.runs.items()},
            "reviews": [r.model_dump(mode="json") for r in self.new],
            "images": sorted(self.images),
        }
        self.store.put_bytes(join_key(self.ckpt_prefix, "checkpoint.json"),
                             json.dumps(body).encode(), content_type="application/json")

    # ------------------------------------------------------------------------------- robots

    async def _fetch_robots(self, client: Any) -> None:
        for src in self.sources:
            url = f"http://{src}/robots.txt"
            try:
                r = await client.get(url, timeout=self.cfg.timeout_s, follow_redirects=True)
            except Exception as exc:  # unreachable: be conservative
                log.warning("robots.txt of %s unreachable (%s): not crawling it", src, exc)
                self._set_robots(src, _Robots(None, deny_all=True))
                continue
            if r.status_code >= 500:
                self._set_robots(src, _Robots(None, deny_all=True))
            elif r.status_code >= 400:
                self._set_robots(src, _Robots(None, allow_all=True))
            else:
                self._set_robots(src, _Robots(r.text[:_ROBOTS_MAX_CHARS]))

    def _set_robots(self, src: str, robots: _Robots) -> None:
        """Record a host's robots.txt and set up its politeness (interval from Crawl-delay)."""
        cfg = self.cfg
        delay = robots.crawl_delay(cfg.user_agent)
        if delay is not None and delay > cfg.max_crawl_delay_s:
            log.warning("%s asks for a Crawl-delay of %gs, over max_crawl_delay_s=%gs: not "
                        "crawling it", src, delay, cfg.max_crawl_delay_s)
            robots = _Robots(None, deny_all=True)
            delay = None
        self.robots[src] = robots
        floor = max(cfg.min_interval_s, delay or 0.0)
        st = self.sources.get(src)
        learned = st.interval_s if (st is not None and cfg.learn) else None
        interval = max(floor, learned or 0.0)
        self.hosts[src] = _Host(asyncio.Semaphore(cfg.per_host_concurrency), interval, floor)

    async def _photo_robots(self, src: str) -> _Robots:
        """The robots.txt of a photo host that is not a source, fetched once through the safe
        fetcher (a page could name any host; its robots.txt is fetched under the same SSRF
        guard as the photo)."""
        if src in self.robots:
            return self.robots[src]
        async with self.learning.setdefault(f"robots:{src}", asyncio.Lock()):
            if src in self.robots:
                return self.robots[src]
            from shopsense.images.fetch import safe_get

            settings = self._fetch_settings.model_copy(update={"max_bytes": _ROBOTS_MAX_CHARS})
            try:
                text = await asyncio.to_thread(
                    safe_get, f"http://{src}/robots.txt", settings, accept="text/plain",
                    user_agent=self.cfg.user_agent)
                robots = _Robots(text.decode("utf-8", errors="replace"))
            except ImageFetchFailed as exc:
                status = exc.status or 0
                robots = _Robots(None, allow_all=400 <= status < 500, deny_all=not
                                 400 <= status < 500)
            except (ImageFetchRefused, PayloadTooLarge) as exc:
                log.info("photo host %s refused: %s", src, exc)
                robots = _Robots(None, deny_all=True)
            self._set_robots(src, robots)
            return self.robots[src]

    # ------------------------------------------------------------------------------ choosing

    def _available(self) -> list[SourceState]:
        return [s for s in self.sources.values() if s.frontier and
                not self.robots[s.source].deny_all and not self.hosts[s.source].gave_up]

    def _choose(self) -> tuple[SourceState, str, int] | None:
        avail = self._available()
        if not avail:
            return None
        if self.cfg.bandit == "uniform":  # ablation: a random source, its oldest URL
            st = avail[int(self.rng.integers(len(avail)))]
            url, depth = st.frontier.pop(0)
            return st, url, int(depth)
        arms = []
        for st in avail:
            prior = st.rate_mean()
            for pattern in {_pattern(u) for u, _ in st.frontier}:
                pages, reviews = st.patterns.get(pattern, [0.0, 0.0])
                arms.append(((st.source, pattern), reviews, pages, prior))
        source, pattern = thompson_choice(arms, self.rng)
        st = self.sources[source]
        best_i = min((i for i, (u, _) in enumerate(st.frontier) if _pattern(u) == pattern),
                     key=lambda i: (st.frontier[i][1], i))
        url, depth = st.frontier.pop(best_i)
        return st, url, int(depth)

    # ------------------------------------------------------------------------------ fetching

    async def _goto(self, page: Any, st: SourceState, url: str) -> tuple[int, Any]:
        """Load ``url`` with retries; ``(status, response)``; status 0 = network failure."""
        from playwright.async_api import Error as PWError

        host = self.hosts[st.source]
        run = self.runs[st.source]
        status, resp = 0, None
        for attempt in range(self.cfg.max_retries + 1):
            async with host.sem:
                await host.wait_turn()
                run.requests += 1
                st.requests += 1
                try:
                    resp = await page.goto(url, wait_until="load",
                                           timeout=self.cfg.timeout_s * 1000)
                    status = resp.status if resp is not None else 0
                except PWError as exc:
                    log.debug("%s: %s", url, str(exc).splitlines()[0])
                    status, resp = 0, None
            if status == 429:
                run.rate_limited += 1
                st.rate_limited += 1
                after = parse_retry_after(await resp.header_value("retry-after"))
                if not self._honour_retry_after(host, st.source, 1.0 if after is None else after):
                    return status, resp
                if attempt < self.cfg.max_retries:
                    run.retries += 1
                    continue  # the next wait_turn waits out the Retry-After
                return status, resp
            if status == 0 or status >= 500:
                if attempt < self.cfg.max_retries:
                    run.retries += 1
                    delay = self.cfg.backoff_s * 2**attempt
                    await asyncio.sleep(delay * (0.5 + self.jitter.random()))
                    continue
                return status, resp
            host.interval = max(host.floor, host.interval * 0.95)
            return status, resp
        return status, resp

    def _honour_retry_after(self, host: _Host, src: str, after: float) -> bool:
        """Hold every request to ``host`` for ``after`` seconds and slow it down; ``False``
        when ``after`` is over ``max_retry_after_s`` (the host is done for this run)."""
        host.slow_down(self.cfg.max_interval_s)
        if after > self.cfg.max_retry_after_s:
            log.warning("%s asks to wait %.0fs (Retry-After), over max_retry_after_s=%gs: no "
                        "more requests to it this run", src, after, self.cfg.max_retry_after_s)
            host.gave_up = True
            return False
        host.back_off(after)
        return True

    async def _learn(self, page: Any, st: SourceState, url: str, raw_html: str) -> None:
        """Give the site selectors: the LLM's proposal if valid, else the heuristic's."""
        if "<script" in raw_html.replace('type="application/ld+json"', ""):
            try:  # script-rendered content: let it arrive before looking
                await page.wait_for_load_state("networkidle", timeout=3000)
            except Exception:
                pass
        proposals: list[SelectorSet] = []
        asked = sum(f.startswith("llm:") for f in st.selector_failures)
        if self.advisor is not None and asked < self.cfg.max_llm_proposals and \
                await page.evaluate(RATING_HINT_JS):
            html = await page.content()
            prop = await asyncio.to_thread(self.advisor.propose_selectors, site=st.source,
                                           url=url, html=html)
            if prop is not None:
                proposals.append(prop)
        learned = await page.evaluate(LEARN_JS)
        if learned:
            proposals.append(SelectorSet(**{k: v for k, v in learned.items()
                                            if k != "count" and v}, origin="heuristic"))
        for prop in proposals:
            result = await page.evaluate(SELECTOR_JS, prop.model_dump())
            ok, why = validate_selectors(result, prop, min_text=self.cfg.min_text_chars)
            if ok:
                cls = set(re.findall(r"\.([\w-]+)", prop.container))
                served = {tok for value in _CLASS_ATTR.findall(raw_html) for tok in value.split()}
                st.selectors = prop
                # reviews whose container class is not in the served HTML were made by scripts
                st.dynamic = bool(cls) and not cls <= served
                log.info("%s: using %s selectors %s (%s)%s", st.source, prop.origin,
                         prop.container, why, " [dynamic]" if st.dynamic else "")
                return
            st.selector_failures = (st.selector_failures + [f"{prop.origin}: {why}"])[-10:]
            log.info("%s: rejected %s selectors %s: %s", st.source, prop.origin,
                     prop.container, why)

    async def _expand(self, page: Any, sel: SelectorSet) -> None:
        """Dynamic site: wait for the first reviews, then click "load more" until it is gone."""
        if sel.list_root:
            try:  # no list on this page (a listing, a help page): nothing will render here
                if await page.locator(sel.list_root).count() == 0:
                    return
            except Exception:
                pass
        try:
            await page.wait_for_selector(sel.container, timeout=self.cfg.render_timeout_s * 1000)
        except Exception:
            return
        if not sel.load_more:
            return
        for _ in range(100):
            button = page.locator(sel.load_more).first
            try:
                if not await button.is_visible():
                    return
                n = await page.locator(sel.container).count()
                await button.click(timeout=self.cfg.render_timeout_s * 1000)
                await page.wait_for_function(
                    "([s, n]) => document.querySelectorAll(s).length > n",
                    arg=[sel.container, n], timeout=self.cfg.render_timeout_s * 1000)
            except Exception:
                return

    async def _extract(self, page: Any, st: SourceState, url: str, raw_html: str
                       ) -> list[ExtractedReview]:
        structured = await page.evaluate(STRUCTURED_JS)
        found = reviews_from_structured(structured, url)
        if found:
            st.structured = True
            return found
        if st.selectors is None:
            async with self.learning.setdefault(st.source, asyncio.Lock()):
                if st.selectors is None:
                    await self._learn(page, st, url, raw_html)
            if st.selectors is None:
                return []
        if st.dynamic:
            await self._expand(page, st.selectors)
        result = await page.evaluate(SELECTOR_JS, st.selectors.model_dump())
        return reviews_from_selectors(result, st.selectors)

    async def _image(self, client: Any, url: str, run: SourceRun) -> ImageRef | None:
        """Download one photo through the safe fetcher, if its host's robots.txt allows it,
        under that host's politeness; ``None`` (counted as skipped) when it cannot be had."""
        from shopsense.images.fetch import fetch_image

        cfg = self.cfg
        src = _source_of(url)
        if not url.startswith(("http://", "https://")) or not src:
            run.images_skipped += 1
            return None
        robots = await self._photo_robots(src)
        if not robots.allowed(cfg.user_agent, url):
            run.robots_blocked += 1
            run.images_skipped += 1
            return None
        host = self.hosts[src]
        data = None
        failure: ImageFetchFailed | None = None
        for attempt in range(cfg.max_retries + 1):
            if host.gave_up:
                break
            async with host.sem:
                await host.wait_turn()
                run.requests += 1
                try:
                    data = await asyncio.to_thread(
                        fetch_image, url, self._fetch_settings, check_url=self._check_redirect,
                        user_agent=cfg.user_agent)
                    host.interval = max(host.floor, host.interval * 0.95)
                    break
                except ImageFetchFailed as exc:
                    failure = exc
                except (ImageFetchRefused, PayloadTooLarge) as exc:
                    log.debug("image %s: %s", url, exc)
                    break
            told_to_wait = failure.status == 429 or (
                failure.status == 503 and failure.retry_after_s is not None)
            if told_to_wait:
                run.rate_limited += 1
                after = failure.retry_after_s if failure.retry_after_s is not None else 1.0
                if not self._honour_retry_after(host, src, after):
                    break
            elif failure.status is not None and failure.status < 500:
                break  # 404 and the like: no retry
            elif attempt < cfg.max_retries:
                await asyncio.sleep(cfg.backoff_s * 2**attempt * (0.5 + self.jitter.random()))
            log.debug("image %s: %s", url, failure)
        if data is None:
            run.images_skipped += 1
            return None
        try:
            from shopsense.images.decode import ImageLimits, probe_image

            _, width, height = probe_image(data, ImageLimits(max_bytes=cfg.max_image_bytes,
                                                             max_pixels=40_000_000))
        except (InvalidImage, PayloadTooLarge):
            run.images_skipped += 1
            return None
        sha = hashlib.sha256(data).hexdigest()
        self.images[sha] = data
        run.images += 1
        return ImageRef(uri=image_key(sha, data), sha256=sha, width=width, height=height)

    def _check_redirect(self, url: Any) -> None:
        """Each hop of a photo download (called on the fetch thread): the target's host must
        be one whose robots.txt was read and that allows the URL (no blind redirects)."""
        src = url.netloc.decode("ascii")
        robots = self.robots.get(src)
        if robots is None:
            raise ImageFetchRefused(f"redirect to {src}, whose robots.txt was not read")
        if not robots.allowed(self.cfg.user_agent, str(url)):
            raise ImageFetchRefused(f"robots.txt of {src} disallows {url.path}")

    async def _process(self, client: Any, page: Any, st: SourceState, url: str, depth: int
                       ) -> None:
        cfg = self.cfg
        run = self.runs[st.source]
        status, resp = await self._goto(page, st, url)
        st.visited[url] = status
        run.pages += 1
        st.pages += 1
        pattern = _pattern(url)
        if status != 200:
            run.failures += 1
            st.failures += 1
            self._reward(st, pattern, 0)
            return
        raw_html = ""
        try:
            raw_html = await resp.text()
        except Exception:
            pass
        info = await page.evaluate(PAGE_JS)
        canonical = _normal_url(info["canonical"]) if info.get("canonical") else None
        if canonical and canonical != url and _source_of(canonical) == st.source:
            if canonical in st.visited:  # the same page under another URL (?page=1 …)
                self._reward(st, pattern, 0)
                return
            st.visited[canonical] = status
            self.queued[st.source].discard(canonical)
            st.frontier = [f for f in st.frontier if f[0] != canonical]
        extracted = await self._extract(page, st, url, raw_html)
        robots = self.robots[st.source]
        for link in info["links"]:
            href = _normal_url(urljoin(url, link["href"]))
            if _source_of(href) != st.source or not href.startswith(("http://", "https://")):
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
            source_id = f"{product_id}:{hashlib.sha256(normalise_text(text).encode()).hexdigest()[:16]}"
            source = Source(kind="scraped", name=st.source, source_id=source_id, url=url,
                            generator="shopsense-scrape")
            review = Review.make(
                source=source, text=text, title=er.title, rating=er.rating,
                label=rating_to_label(er.rating),
                label_source="rating" if er.rating is not None else None,
                product=Product(id=product_id, name=er.product_name or info.get("h1"),
                                category=(er.category or "").lower() or None),
                created_at=_date(er.date),
            )
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
        self._reward(st, pattern, new)

    def _reward(self, st: SourceState, pattern: str, new: int) -> None:
        st.bandit_pages += 1
        st.bandit_reviews += new
        p = st.patterns.setdefault(pattern, [0.0, 0.0])
        p[0] += 1
        p[1] += new

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

    def _publish(self) -> DatasetManifest:
        cfg = self.cfg
        provenance = {
            "step": "scrape", "run_id": self.run_id, "resumed": self.resumed,
            "seeds": cfg.seeds, "pages": sum(r.pages for r in self.runs.values()),
            "new_reviews": len(self.new), "previous_reviews": len(self.previous),
            "per_source": {k: {"pages": v.pages, "new_reviews": v.new_reviews,
                               "duplicates": v.duplicates, "failures": v.failures}
                           for k, v in self.runs.items()},
            "at": datetime.now(UTC).isoformat(),
        }
        try:
            old = _read_provenance(self.store, cfg.dataset)
        except DatasetNotFound:
            old = []
        manifest = write_dataset(self.store, cfg.dataset, [*self.previous, *self.new],
                                 name=cfg.dataset, provenance=[*old[-20:], provenance],
                                 images=self.images)
        if cfg.learn:
            for st in self.sources.values():
                save_state(self.store, cfg.state_prefix, st)
        self.store.delete_prefix(self.ckpt_prefix)
        return manifest


def _read_provenance(store: ObjectStore, prefix: str) -> list[dict[str, Any]]:
    from shopsense.data.dataset import read_manifest

    return list(read_manifest(store, prefix).provenance)


def _date(value: str | None) -> datetime:
    if value:
        try:
            d = datetime.fromisoformat(value[:10])
            return d.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def run_scrape(config: ScrapeConfig, *, chat: Any = None,
               on_page: Callable[[int, str], None] | None = None,
               store: ObjectStore | None = None) -> ScrapeResult:
    """Run one scraping step (see the module docstring) and publish its dataset.

    ``chat``: a LangChain chat model for selector proposals and source priors (default: none;
    :func:`~shopsense.llm.chat_model_from_env` builds one from the environment).
    ``on_page(n, url)`` is called after each page (progress; tests use it to interrupt)."""
    return asyncio.run(_Crawler(config, chat=chat, on_page=on_page, store=store).run())
