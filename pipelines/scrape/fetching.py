"""Fetching and politeness: each host's robots.txt (protego, RFC 9309), its pace (interval,
``Crawl-delay``, ``Retry-After``, adaptive slow-down) and concurrency; pages through a browser
tab with retries, photos through the API's safe fetcher (``shopsense.images.fetch``)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urlparse

from protego import Protego

from pipelines.scrape.config import ScrapeConfig, SourceRun
from pipelines.scrape.state import SourceState
from shopsense.errors import ImageFetchFailed, ImageFetchRefused, PayloadTooLarge
from shopsense.images.fetch import parse_retry_after

log = logging.getLogger("pipelines.scrape.agent")

ROBOTS_MAX_CHARS = 512 * 1024  # RFC 9309: parse at least the first 500 KiB


def fetch_settings(config: ScrapeConfig):
    """The safe fetcher's settings for photos: the scrape's size cap and timeout, redirects
    checked hop by hop, and private addresses only for the seeds' own origins and
    ``allow_hosts``."""
    from shopsense.settings import ImageSettings

    origins = sorted({source_of(s) for s in config.seeds})
    return ImageSettings(max_bytes=config.max_image_bytes, fetch_timeout_s=config.timeout_s,
                         max_redirects=3, allow_hosts=[*origins, *config.allow_hosts])


def source_of(url: str) -> str:
    return urlparse(url).netloc


def normal_url(url: str) -> str:
    url, _ = urldefrag(url)
    p = urlparse(url)
    return p._replace(path=p.path or "/").geturl()


def parse_crawl_delay(text: str, agent: str) -> float | None:
    """``Crawl-delay`` for ``agent`` (or ``*``), as a float, read by protego."""
    delay = Protego.parse(text).crawl_delay(agent)
    return None if delay is None else float(delay)


@dataclass
class Host:
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


class Robots:
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


class Fetcher:
    """The politeness of one run: a :class:`Host` and :class:`Robots` per host (sources and
    photo hosts), and the two ways a run fetches (pages, photos) under them.

    ``learned_interval(src)``: the request interval past runs learnt for a source (``None``:
    none), the starting point of its pace above the Crawl-delay floor."""

    def __init__(self, config: ScrapeConfig, *, jitter: random.Random,
                 learned_interval: Callable[[str], float | None]) -> None:
        self.cfg = config
        self.jitter = jitter
        self.learned_interval = learned_interval
        self.hosts: dict[str, Host] = {}
        self.robots: dict[str, Robots] = {}
        self.settings = fetch_settings(config)
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------------------- robots

    async def fetch_robots(self, client: Any, sources: list[str]) -> None:
        """The sources' robots.txt, through ``client`` (an ``httpx.AsyncClient``)."""
        for src in sources:
            url = f"http://{src}/robots.txt"
            try:
                r = await client.get(url, timeout=self.cfg.timeout_s, follow_redirects=True)
            except Exception as exc:  # unreachable: be conservative
                log.warning("robots.txt of %s unreachable (%s): not crawling it", src, exc)
                self.set_robots(src, Robots(None, deny_all=True))
                continue
            if r.status_code >= 500:
                self.set_robots(src, Robots(None, deny_all=True))
            elif r.status_code >= 400:
                self.set_robots(src, Robots(None, allow_all=True))
            else:
                self.set_robots(src, Robots(r.text[:ROBOTS_MAX_CHARS]))

    def set_robots(self, src: str, robots: Robots) -> None:
        """Record a host's robots.txt and set up its politeness (interval from Crawl-delay)."""
        cfg = self.cfg
        delay = robots.crawl_delay(cfg.user_agent)
        if delay is not None and delay > cfg.max_crawl_delay_s:
            log.warning("%s asks for a Crawl-delay of %gs, over max_crawl_delay_s=%gs: not "
                        "crawling it", src, delay, cfg.max_crawl_delay_s)
            robots = Robots(None, deny_all=True)
            delay = None
        self.robots[src] = robots
        floor = max(cfg.min_interval_s, delay or 0.0)
        learned = self.learned_interval(src)
        interval = max(floor, learned or 0.0)
        self.hosts[src] = Host(asyncio.Semaphore(cfg.per_host_concurrency), interval, floor)

    async def photo_robots(self, src: str) -> Robots:
        """The robots.txt of a photo host that is not a source, fetched once through the safe
        fetcher (a page could name any host; its robots.txt is fetched under the same SSRF
        guard as the photo)."""
        if src in self.robots:
            return self.robots[src]
        async with self._locks.setdefault(src, asyncio.Lock()):
            if src in self.robots:
                return self.robots[src]
            from shopsense.images.fetch import safe_get

            settings = self.settings.model_copy(update={"max_bytes": ROBOTS_MAX_CHARS})
            try:
                text = await asyncio.to_thread(
                    safe_get, f"http://{src}/robots.txt", settings, accept="text/plain",
                    user_agent=self.cfg.user_agent)
                robots = Robots(text.decode("utf-8", errors="replace"))
            except ImageFetchFailed as exc:
                status = exc.status or 0
                robots = Robots(None, allow_all=400 <= status < 500, deny_all=not
                                400 <= status < 500)
            except (ImageFetchRefused, PayloadTooLarge) as exc:
                log.info("photo host %s refused: %s", src, exc)
                robots = Robots(None, deny_all=True)
            self.set_robots(src, robots)
            return self.robots[src]

    def crawlable(self, src: str) -> bool:
        """Whether the run may still send requests to ``src``."""
        return not self.robots[src].deny_all and not self.hosts[src].gave_up

    def honour_retry_after(self, host: Host, src: str, after: float) -> bool:
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

    # -------------------------------------------------------------------------------- pages

    async def goto(self, page: Any, st: SourceState, run: SourceRun, url: str
                   ) -> tuple[int, Any]:
        """Load ``url`` with retries; ``(status, response)``; status 0 = network failure."""
        from playwright.async_api import Error as PWError

        host = self.hosts[st.source]
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
                if not self.honour_retry_after(host, st.source, 1.0 if after is None else after):
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

    # ------------------------------------------------------------------------------- photos

    async def fetch_photo(self, url: str, run: SourceRun) -> bytes | None:
        """One photo's bytes through the safe fetcher, if its host's robots.txt allows it,
        under that host's politeness; ``None`` (counted as skipped) when it cannot be had."""
        from shopsense.images.fetch import fetch_image

        cfg = self.cfg
        src = source_of(url)
        if not url.startswith(("http://", "https://")) or not src:
            run.images_skipped += 1
            return None
        robots = await self.photo_robots(src)
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
                        fetch_image, url, self.settings, check_url=self.check_redirect,
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
                if not self.honour_retry_after(host, src, after):
                    break
            elif failure.status is not None and failure.status < 500:
                break  # 404 and the like: no retry
            elif attempt < cfg.max_retries:
                await asyncio.sleep(cfg.backoff_s * 2**attempt * (0.5 + self.jitter.random()))
            log.debug("image %s: %s", url, failure)
        if data is None:
            run.images_skipped += 1
        return data

    def check_redirect(self, url: Any) -> None:
        """Each hop of a photo download (called on the fetch thread): the target's host must
        be one whose robots.txt was read and that allows the URL (no blind redirects)."""
        src = url.netloc.decode("ascii")
        robots = self.robots.get(src)
        if robots is None:
            raise ImageFetchRefused(f"redirect to {src}, whose robots.txt was not read")
        if not robots.allowed(self.cfg.user_agent, str(url)):
            raise ImageFetchRefused(f"robots.txt of {src} disallows {url.path}")
