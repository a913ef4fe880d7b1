"""The scraper's photo downloads and politeness (issue 16): real HTTP servers on 127.0.0.1, the
crawler's own code (no browser needed: photos and robots.txt are plain HTTP)."""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
import time
from email.utils import formatdate
from urllib.robotparser import RobotFileParser

import httpx
import pytest
from PIL import Image

from pipelines.scrape.agent import ScrapeConfig, SourceRun, _Crawler, _parse_crawl_delay
from shopsense.images.fetch import parse_retry_after
from shopsense.store import LocalStore


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 20, 20)).save(buf, format="JPEG")
    return buf.getvalue()


class Site:
    """A tiny site: ``routes[path] = (status, headers, body)`` or a callable returning one;
    every request is logged with its time."""

    def __init__(self, robots: str = "User-agent: *\nDisallow: /private/\n") -> None:
        self.routes: dict = {"/robots.txt": (200, {"content-type": "text/plain"},
                                              robots.encode())}
        self.log: list[tuple[float, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.log.append((time.monotonic(), self.path))
                route = outer.routes.get(self.path, (404, {}, b"no"))
                status, headers, body = route() if callable(route) else route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"http://{self.origin}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def photo(self, path: str) -> None:
        self.routes[path] = (200, {"content-type": "image/jpeg"}, _jpeg())

    def hits(self, path: str) -> list[float]:
        return [t for t, p in self.log if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def sites():
    made: list[Site] = []

    def make(**kw) -> Site:
        made.append(Site(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _crawler(tmp_path, seeds: list[Site], **kw) -> _Crawler:
    cfg = ScrapeConfig(seeds=[s.url + "/" for s in seeds], store_uri=tmp_path.as_uri(),
                       min_interval_s=0.0, timeout_s=5, backoff_s=0.05, learn=False, **kw)
    crawler = _Crawler(cfg, store=LocalStore(tmp_path))
    crawler._load()
    return crawler


async def _robots(crawler: _Crawler) -> None:
    async with httpx.AsyncClient() as client:
        await crawler._fetch_robots(client)


def _download(crawler: _Crawler, urls: list[str]) -> tuple[list, SourceRun]:
    run = SourceRun()

    async def go():
        await _robots(crawler)
        return [await crawler._image(None, u, run) for u in urls]

    return asyncio.run(go()), run


def test_photos_only_from_the_seeds_origins_or_public_hosts(sites, tmp_path):
    shop, internal = sites(), sites()
    shop.photo("/img/a.jpg")
    internal.photo("/secret.jpg")  # a private service a page might point at
    shop.routes["/img/bounce.jpg"] = (302, {"location": f"{internal.url}/secret.jpg"}, b"")
    refs, run = _download(_crawler(tmp_path, [shop]), [
        f"{shop.url}/img/a.jpg", f"{internal.url}/secret.jpg", f"{shop.url}/img/bounce.jpg",
        "http://169.254.169.254/latest/meta-data/"])
    assert refs[0] is not None and refs[0].width == 40
    assert refs[1:] == [None, None, None] and run.images == 1 and run.images_skipped == 3
    assert internal.log == []  # neither its robots.txt nor the photo was requested


def test_photo_robots_rules_use_rfc9309_wildcards(sites, tmp_path):
    robots = "User-agent: *\nDisallow: /*.png$\nDisallow: /private/\n"
    shop = sites(robots=robots)
    for path in ("/img/a.jpg", "/img/b.png", "/private/c.jpg"):
        shop.photo(path)
    shop.routes["/img/to-private.jpg"] = (302, {"location": "/private/c.jpg"}, b"")
    refs, run = _download(_crawler(tmp_path, [shop]), [
        f"{shop.url}/img/a.jpg", f"{shop.url}/img/b.png", f"{shop.url}/private/c.jpg",
        f"{shop.url}/img/to-private.jpg"])
    assert [r is not None for r in refs] == [True, False, False, False]
    assert run.robots_blocked == 2
    assert shop.hits("/img/b.png") == [] and shop.hits("/private/c.jpg") == []
    # the standard library's parser ignores the wildcard and would have fetched b.png
    std = RobotFileParser()
    std.parse(robots.splitlines())
    assert std.can_fetch("shopsense-bot/0.1", f"{shop.url}/img/b.png")


def test_retry_after_is_honoured_for_photos(sites, tmp_path):
    shop = sites()
    answers = iter([(429, {"retry-after": "1"}, b"slow down")])
    ok = (200, {"content-type": "image/jpeg"}, _jpeg())
    shop.routes["/img/a.jpg"] = lambda: next(answers, ok)
    refs, run = _download(_crawler(tmp_path, [shop]), [f"{shop.url}/img/a.jpg"])
    assert refs[0] is not None and run.rate_limited == 1
    first, second = shop.hits("/img/a.jpg")
    assert second - first >= 0.9  # not retried before the server said


def test_a_retry_after_over_the_maximum_ends_the_hosts_run(sites, tmp_path):
    shop = sites()
    later = formatdate(time.time() + 3600, usegmt=True)  # an HTTP date an hour away
    shop.routes["/img/a.jpg"] = (429, {"retry-after": later}, b"come back later")
    shop.photo("/img/b.jpg")
    crawler = _crawler(tmp_path, [shop], max_retry_after_s=60)
    refs, run = _download(crawler, [f"{shop.url}/img/a.jpg", f"{shop.url}/img/b.jpg"])
    assert refs == [None, None]
    assert len(shop.hits("/img/a.jpg")) == 1 and shop.hits("/img/b.jpg") == []
    host = crawler.hosts[shop.origin]
    assert host.gave_up and crawler._available() == []


def test_crawl_delay_is_honoured_up_to_the_maximum(sites, tmp_path):
    polite = sites(robots="User-agent: *\nCrawl-delay: 4\n")
    greedy = sites(robots="User-agent: shopsense-bot\nCrawl-delay: 3600\n")
    crawler = _crawler(tmp_path, [polite, greedy], max_interval_s=2.0, max_crawl_delay_s=30)
    asyncio.run(_robots(crawler))
    host = crawler.hosts[polite.origin]
    assert host.floor == host.interval == 4.0
    host.slow_down(crawler.cfg.max_interval_s)  # a 429: doubled, past max_interval_s ...
    assert host.interval == 4.0  # ... but never below the Crawl-delay (the old cap made it 2)
    assert crawler.robots[greedy.origin].deny_all
    assert [s.source for s in crawler._available()] == [polite.origin]


def test_crawl_delay_and_retry_after_parsing():
    assert _parse_crawl_delay("User-agent: *\nCrawl-delay: 0.5\n", "shopsense-bot/1") == 0.5
    assert _parse_crawl_delay("User-agent: shopsense-bot\nCrawl-delay: 2\n\nUser-agent: *\n"
                              "Crawl-delay: 9\n", "shopsense-bot/0.1") == 2.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    assert 99 <= parse_retry_after(formatdate(now + 100, usegmt=True), now=now) <= 100
