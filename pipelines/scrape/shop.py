"""A demo shop to scrape: several small "sites" built from the real Blitzer products and reviews.

Nothing outside this machine can be reached, so the scraping agent is developed and measured
against this shop. Each site is its own HTTP server on 127.0.0.1 (its own host:port, so
per-host politeness applies) and marks its reviews up in one style a real scraper meets:

==============  =============  =============================================================
site            style          how its reviews are marked up
==============  =============  =============================================================
northwind       ``jsonld``     schema.org ``Product``/``Review``/``AggregateRating`` JSON-LD,
                               plus visible HTML (one malformed JSON-LD block per ~30 pages)
microshop       ``microdata``  schema.org microdata (``itemscope``/``itemprop``)
plainmart       ``html``       plain HTML with site-specific classes, stars as ★/☆ + title
dynamo          ``js``         nothing in the HTML: a script fetches ``/api/reviews`` after
                               load and renders 2 at a time behind a "Load more" button;
                               ratings are ``data-score`` out of 10
bargainbin      ``html``       other classes; most of its reviews are near-copies of other
                               sites' reviews and a quarter of its product pages are broken
==============  =============  =============================================================

Every site has ``/robots.txt`` (disallows ``/outlet/`` and ``/account/``; the outlet holds
extra products a polite crawler never sees), a token-bucket rate limit on HTML pages that
answers ``429`` with ``Retry-After``, and broken pages chosen by a hash of the product: 404,
permanent 500, transient 500 (the first request fails, later ones succeed) and malformed HTML
(unclosed tags, stray closers, raw ``&``; the reviews are still there). Static files and the
review API are not rate limited. Some reviews carry a customer photo (a procedural render that
matches the rating: damaged products for low ratings); one photo per site is oversized, to
exercise the crawler's download cap.

:meth:`DemoShop.ground_truth` lists every review a polite crawler can reach (robots-allowed,
not on a page that is permanently broken), with its site, style and product: the reference for
precision and recall. Content is deterministic for a given configuration.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)

Style = Literal["jsonld", "microdata", "html", "js"]
STYLES: tuple[str, ...] = ("jsonld", "microdata", "html", "js")
CATEGORIES = ("books", "dvd", "electronics")


@dataclass(frozen=True)
class SiteSpec:
    name: str
    style: Style
    title: str
    broken_rate: float = 0.08  # share of product pages that are 404 / 500 / transient 500
    malformed_rate: float = 0.06
    duplicate_source: bool = False  # reviews are near-copies of other sites' reviews


DEFAULT_SITES: tuple[SiteSpec, ...] = (
    SiteSpec("northwind", "jsonld", "Northwind Books & Media"),
    SiteSpec("microshop", "microdata", "MicroShop"),
    SiteSpec("plainmart", "html", "PlainMart"),
    SiteSpec("dynamo", "js", "Dynamo Store"),
    SiteSpec("bargainbin", "html", "Bargain Bin", broken_rate=0.25, duplicate_source=True),
)


@dataclass
class ShopReview:
    id: str
    title: str | None
    text: str
    rating: int
    author: str
    date: str  # ISO
    photo: bool = False
    oversized_photo: bool = False


@dataclass
class ShopProduct:
    asin: str
    name: str
    category: str
    reviews: list[ShopReview]
    condition: str = "ok"  # ok | missing (404) | error (500) | flaky (transient 500) | malformed
    outlet: bool = False  # only linked from the robots-disallowed outlet


@dataclass
class Site:
    spec: SiteSpec
    products: list[ShopProduct]
    port: int = 0
    server: ThreadingHTTPServer | None = None
    hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    log: list[tuple[str, int]] = field(default_factory=list)  # (path with query, status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def product(self, asin: str, *, outlet: bool = False) -> ShopProduct | None:
        for p in self.products:
            if p.asin == asin and p.outlet == outlet:
                return p
        return None


def _h(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _perturb(text: str, seed: str) -> str:
    """A near-copy: a few words dropped or changed, a seller's sign-off appended."""
    words = text.split()
    out = []
    for i, w in enumerate(words):
        u = _h(seed, i)
        if u < 0.03:
            continue
        out.append(w.upper() if u > 0.985 else w)
    sign = ["", " Bought it here, shipping was quick.", " (copied from my other review)"]
    return " ".join(out) + sign[int(_h(seed, "sign") * len(sign))]


def build_catalogue(
    data_dir: str | Path | None = None,
    *,
    sites: tuple[SiteSpec, ...] = DEFAULT_SITES,
    products_per_site: int = 40,
    outlet_per_site: int = 4,
    seed: int = 7,
) -> list[Site]:
    """Assign real Blitzer products (most-reviewed first, categories interleaved) to the sites."""
    from shopsense.data.loaders import load_blitzer

    by_product: dict[tuple[str, str], list] = defaultdict(list)
    names: dict[tuple[str, str], str] = {}
    for category in CATEGORIES:
        for r in load_blitzer(data_dir, category):
            key = (category, r.product.id)
            by_product[key].append(r)
            names[key] = (r.product.name or r.product.id).split(":")[0].strip()
    per_cat: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in by_product:
        per_cat[key[0]].append(key)
    for cat in per_cat:  # most reviews first, then a seeded order
        per_cat[cat].sort(key=lambda k: (-len(by_product[k]), _h(seed, k)))
    ordered = [k for trio in zip(*(per_cat[c] for c in CATEGORIES)) for k in trio]

    originals = [s for s in sites if not s.duplicate_source]
    need = products_per_site + outlet_per_site
    out: list[Site] = []
    cursor = 0
    for spec in originals:
        chunk, cursor = ordered[cursor : cursor + need], cursor + need
        out.append(Site(spec, [_product(spec, k, by_product[k], names[k], i >= products_per_site,
                                        seed) for i, k in enumerate(chunk)]))
    for spec in sites:
        if not spec.duplicate_source:
            continue
        # near-copies of reviews the original sites show, plus a few products of its own
        pool = [p for s in out for p in s.products if not p.outlet]
        pool.sort(key=lambda p: _h(seed, spec.name, p.asin))
        own, cursor = ordered[cursor : cursor + need // 4], cursor + need // 4
        products = []
        for i, p in enumerate(pool[: products_per_site - len(own)]):
            reviews = [ShopReview(f"{r.id}-c", r.title, _perturb(r.text, r.id), r.rating,
                                  r.author, r.date) for r in p.reviews]
            products.append(ShopProduct(p.asin, p.name, p.category, reviews,
                                        _condition(spec, p.asin, seed)))
        for k in own:
            products.append(_product(spec, k, by_product[k], names[k], False, seed))
        for k in ordered[cursor : cursor + outlet_per_site]:
            products.append(_product(spec, k, by_product[k], names[k], True, seed))
        cursor += outlet_per_site
        out.append(Site(spec, products))
    return out


def _condition(spec: SiteSpec, asin: str, seed: int) -> str:
    u = _h(seed, spec.name, asin, "condition")
    b = spec.broken_rate
    if u < b * 0.35:
        return "missing"
    if u < b * 0.6:
        return "error"
    if u < b:
        return "flaky"
    if u < b + spec.malformed_rate:
        return "malformed"
    return "ok"


def _product(spec: SiteSpec, key: tuple[str, str], reviews: list, name: str, outlet: bool,
             seed: int) -> ShopProduct:
    category, asin = key
    shop_reviews = []
    for n, r in enumerate(reviews):
        rid = hashlib.sha256(f"{spec.name}:{r.source.source_id}".encode()).hexdigest()[:12]
        photo = _h(seed, rid, "photo") < 0.15
        shop_reviews.append(ShopReview(
            id=rid,
            title=r.title,
            text=" ".join(r.text.split()),
            rating=int(r.rating or (5 if r.label == "positive" else 1)),
            author=f"customer{int(_h(seed, rid, 'a') * 9000) + 1000}",
            date=r.created_at.date().isoformat(),
            photo=photo,
        ))
    if shop_reviews and not outlet:
        with_photo = [r for r in shop_reviews if r.photo]
        if with_photo and _h(seed, spec.name, asin, "oversized") < 0.08:
            with_photo[0].oversized_photo = True
    condition = "ok" if outlet else _condition(spec, asin, seed)
    return ShopProduct(asin, name, category, shop_reviews, condition, outlet)


# ----------------------------------------------------------------------------- rendering

PAGE_SIZE = 3  # reviews per product page on the static sites
JS_BATCH = 2  # reviews per "load more" on the js site
LIST_SIZE = 12  # products per listing page

_CSS = "body{font-family:sans-serif;max-width:60em;margin:auto}.price{color:#b00}"


def _esc(s: str | None) -> str:
    return html.escape(s or "", quote=True)


def _layout(site: Site, title: str, body: str, head: str = "", canonical: str | None = None
            ) -> str:
    if canonical:
        head += f"<link rel='canonical' href='{site.url}{canonical}'>"
    cats = " | ".join(f'<a href="/c/{c}">{c.title()}</a>' for c in CATEGORIES)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)} - "
        f"{_esc(site.spec.title)}</title><style>{_CSS}</style>{head}</head><body>"
        f"<header><a href='/'>{_esc(site.spec.title)}</a> <nav class='menu'>{cats} | "
        f"<a href='/outlet/'>Outlet</a> | <a href='/account/login'>Sign in</a></nav></header>"
        f"<main>{body}</main><footer><a href='/about'>About us</a> "
        f"<a href='/help'>Help</a></footer></body></html>"
    )


def _stars(rating: int) -> str:
    return "★" * rating + "☆" * (5 - rating)


def _description(p: ShopProduct) -> str:
    return (f"<section class='description'><h2>Product description</h2><p>{_esc(p.name)} in our "
            f"{_esc(p.category)} department. Free returns within 30 days. Ships from and sold by "
            f"us; see the help pages for delivery times to your area and for warranty terms."
            f"</p></section>")


def _qa(p: ShopProduct) -> str:
    # Long texts without ratings: a heuristic that keys on long text alone picks these up.
    return ("<section class='qa'><h2>Questions and answers</h2>"
            "<div class='qa-item'><p class='qa-q'>Does this come with a warranty card in the "
            "box, and is it valid outside the country of purchase?</p><p class='qa-a'>Yes, the "
            "manufacturer warranty applies worldwide; keep your receipt as proof of purchase."
            "</p></div><div class='qa-item'><p class='qa-q'>Is the version sold here the same as "
            "the one in the shops, including all accessories that are shown in the photos?</p>"
            "<p class='qa-a'>It is the same retail package with everything listed on the box."
            "</p></div></section>")


def _photo_url(r: ShopReview) -> str:
    return f"/img/r/{r.id}.jpg"


def _page_links(base: str, page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    parts = []
    if page > 1:
        parts.append(f'<a rel="prev" href="{base}?page={page - 1}">Previous</a>')
    parts.append(f"<span>Page {page} of {pages}</span>")
    if page < pages:
        parts.append(f'<a rel="next" class="next" href="{base}?page={page + 1}">Next</a>')
    return "<nav class='pager'>" + " ".join(parts) + "</nav>"


def _product_head(site: Site, p: ShopProduct) -> str:
    return (f"<nav class='crumbs'><a href='/'>Home</a> › <a href='/c/{p.category}'>"
            f"{p.category.title()}</a></nav><h1 class='product-title'>{_esc(p.name)}</h1>"
            f"<img class='product-image' src='/img/p/{p.asin}.jpg' alt='{_esc(p.name)}' "
            f"width='192' height='192'><p class='price'>$ {10 + int(_h(p.asin) * 90)}.99</p>")


def render_product(site: Site, p: ShopProduct, page: int, base: str) -> str:
    style = site.spec.style
    pages = max(1, -(-len(p.reviews) // PAGE_SIZE))
    chunk = p.reviews[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    avg = sum(r.rating for r in p.reviews) / max(1, len(p.reviews))
    head_html = ""
    if style == "jsonld":
        doc = {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": p.name,
            "sku": p.asin,
            "category": p.category,
            "image": f"{site.url}/img/p/{p.asin}.jpg",
            "aggregateRating": {"@type": "AggregateRating", "ratingValue": round(avg, 1),
                                "reviewCount": len(p.reviews)},
            "review": [
                {"@type": "Review", "name": r.title, "reviewBody": r.text,
                 "datePublished": r.date, "author": {"@type": "Person", "name": r.author},
                 "reviewRating": {"@type": "Rating", "ratingValue": r.rating, "bestRating": 5},
                 **({"image": f"{site.url}{_photo_url(r)}"} if r.photo else {})}
                for r in chunk
            ],
        }
        blob = json.dumps(doc).replace("</", "<\\/")
        if p.condition == "malformed":
            blob = blob[:-1] + ",}"  # a trailing comma: JSON.parse fails, the HTML remains
        head_html = f'<script type="application/ld+json">{blob}</script>'
        items = "".join(
            f"<div class='review-card'><div class='review-top'><span class='stars'>"
            f"{_stars(r.rating)}</span> <strong class='review-headline'>{_esc(r.title)}</strong>"
            f"</div><div class='byline'>{_esc(r.author)}, {r.date}</div><div class='review-content'>"
            f"{_esc(r.text)}</div>"
            + (f"<img class='review-photo' src='{_photo_url(r)}'>" if r.photo else "")
            + "</div>"
            for r in chunk
        )
        body = (f"{_product_head(site, p)}{_description(p)}<section id='reviews'><h2>Customer "
                f"reviews ({len(p.reviews)})</h2>{items}{_page_links(base, page, pages)}"
                f"</section>{_qa(p)}")
    elif style == "microdata":
        items = "".join(
            f"<div class='rev' itemprop='review' itemscope itemtype='https://schema.org/Review'>"
            f"<h3 itemprop='name'>{_esc(r.title)}</h3><div itemprop='reviewRating' itemscope "
            f"itemtype='https://schema.org/Rating'><meta itemprop='worstRating' content='1'>"
            f"<span itemprop='ratingValue'>{r.rating}</span>/<span itemprop='bestRating'>5</span>"
            f"</div><span itemprop='author' itemscope itemtype='https://schema.org/Person'>by "
            f"<span itemprop='name'>{_esc(r.author)}</span></span> <time itemprop='datePublished'"
            f" datetime='{r.date}'>{r.date}</time><div itemprop='reviewBody'>{_esc(r.text)}</div>"
            + (f"<img itemprop='image' src='{_photo_url(r)}'>" if r.photo else "")
            + "</div>"
            for r in chunk
        )
        body = (f"<div itemscope itemtype='https://schema.org/Product'>"
                f"<nav class='crumbs'><a href='/'>Home</a> › <span itemprop='category'>"
                f"{p.category}</span></nav><h1 itemprop='name'>{_esc(p.name)}</h1>"
                f"<meta itemprop='sku' content='{p.asin}'><img itemprop='image' "
                f"src='/img/p/{p.asin}.jpg'><div itemprop='aggregateRating' itemscope "
                f"itemtype='https://schema.org/AggregateRating'>Rated <span itemprop='ratingValue'>"
                f"{avg:.1f}</span> from <span itemprop='reviewCount'>{len(p.reviews)}</span> "
                f"reviews</div>{_description(p)}<section class='reviews'>{items}</section></div>"
                f"{_page_links(base, page, pages)}{_qa(p)}")
    elif style == "html" and not site.spec.duplicate_source:
        items = "".join(
            f"<div class='cmt'><div class='cmt-head'><span class='cmt-stars' "
            f"title='{r.rating} out of 5 stars'>{_stars(r.rating)}</span> <b class='cmt-ttl'>"
            f"{_esc(r.title)}</b></div><div class='cmt-meta'>by {_esc(r.author)} on {r.date}</div>"
            f"<p class='cmt-txt'>{_esc(r.text)}</p>"
            + (f"<img class='cmt-pic' src='{_photo_url(r)}'>" if r.photo else "")
            + "</div>"
            for r in chunk
        )
        body = (f"{_product_head(site, p)}{_description(p)}<div class='comments'><h2>What "
                f"customers say</h2>{items}</div>{_page_links(base, page, pages)}{_qa(p)}")
    elif style == "html":  # the duplicate-heavy site: other classes, rating as a class and n/5
        items = "".join(
            f"<li class='fb-item'><em class='fb-head'>{_esc(r.title)}</em> <span class='fb-score "
            f"score-{r.rating}'>{r.rating}/5</span><p class='fb-body'>{_esc(r.text)}</p></li>"
            for r in chunk
        )
        body = (f"{_product_head(site, p)}<ul class='feedback'>{items}</ul>"
                f"{_page_links(base, page, pages)}{_description(p)}{_qa(p)}")
    else:  # js: reviews only through the API, rendered by a script; "Load more" pages them
        body = (f"{_product_head(site, p)}{_description(p)}<section class='rv-section'><h2>"
                f"Reviews</h2><div id='rv-list' class='rv-list' data-asin='{p.asin}'></div>"
                f"<button id='rv-more' class='rv-more' style='display:none'>Load more reviews"
                f"</button></section>{_qa(p)}<script>{_JS}</script>")
    page_html = _layout(site, p.name, body, head_html,
                        canonical=base if page == 1 else f"{base}?page={page}")
    if p.condition == "malformed":
        # unclosed tags, a stray closer, raw ampersands, no closing </body></html>
        page_html = page_html.replace("</section>", "", 1).replace("<main>", "<main><div><span>")
        page_html = page_html.replace("</footer></body></html>", "</div></span> Terms & conditions"
                                      " & more </footer")
    return page_html


_JS = """
(function(){
  var list = document.getElementById('rv-list'), more = document.getElementById('rv-more');
  var asin = list.getAttribute('data-asin'), offset = 0;
  function esc(s){ var d=document.createElement('div'); d.textContent=s||''; return d.innerHTML; }
  function load(){
    more.disabled = true;
    fetch('/api/reviews?asin=' + asin + '&offset=' + offset + '&limit=%d')
      .then(function(r){ return r.json(); })
      .then(function(data){
        data.items.forEach(function(r){
          var a = document.createElement('article'); a.className = 'rv';
          a.innerHTML = '<div class="rv-stars" data-score="' + (2 * r.rating) +
            '" data-max="10"><i class="bar" style="width:' + (20 * r.rating) + '%%"></i></div>' +
            '<h3 class="rv-title">' + esc(r.title) + '</h3>' +
            '<div class="rv-who">' + esc(r.author) + ' &middot; ' + r.date + '</div>' +
            '<p class="rv-text">' + esc(r.text) + '</p>' +
            (r.photo ? '<img class="rv-img" src="' + r.photo + '">' : '');
          list.appendChild(a);
        });
        offset += data.items.length;
        more.style.display = data.more ? 'inline' : 'none';
        more.disabled = false;
      });
  }
  more.addEventListener('click', load);
  load();
})();
""" % JS_BATCH


def render_listing(site: Site, category: str, page: int, *, outlet: bool = False) -> str:
    products = [p for p in site.products if p.outlet == outlet and (outlet or
                p.category == category)]
    pages = max(1, -(-len(products) // LIST_SIZE))
    chunk = products[(page - 1) * LIST_SIZE : page * LIST_SIZE]
    prefix = "/outlet/p/" if outlet else "/p/"
    cards = "".join(
        f"<li class='tile'><a href='{prefix}{p.asin}'>{_esc(p.name)}</a> "
        f"<span class='price'>$ {10 + int(_h(p.asin) * 90)}.99</span></li>" for p in chunk
    )
    base = "/outlet/" if outlet else f"/c/{category}"
    title = "Outlet" if outlet else category.title()
    return _layout(site, title, f"<h1>{title}</h1><ul class='grid'>{cards}</ul>"
                   f"{_page_links(base, page, pages)}",
                   canonical=base if page == 1 else f"{base}?page={page}")


def render_home(site: Site) -> str:
    cats = "".join(f"<li><a href='/c/{c}'>{c.title()}</a></li>" for c in CATEGORIES)
    return _layout(site, "Home", f"<h1>Welcome to {_esc(site.spec.title)}</h1>"
                   f"<ul class='departments'>{cats}</ul><p><a href='/outlet/'>Outlet deals</a>"
                   f"</p>")


ROBOTS = """User-agent: *
Disallow: /outlet/
Disallow: /account/
Disallow: /api/
Allow: /

User-agent: BadBot
Disallow: /
"""


# ----------------------------------------------------------------------------------- images


class _Images:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str, make) -> bytes:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        data = make()
        with self._lock:
            self._cache[key] = data
        return data

    @staticmethod
    def _jpeg(image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=80)
        return buf.getvalue()

    def product(self, p: ShopProduct) -> bytes:
        from shopsense.images.render import PhotoSpec, render_photo

        def make() -> bytes:
            spec = PhotoSpec(category=_photo_category(p), packaging="none", lighting="good",
                             background="plain")
            return self._jpeg(render_photo(spec, seed=int(_h(p.asin) * 2**31), size=(192, 192)))

        return self.get(f"p:{p.asin}", make)

    def review(self, p: ShopProduct, r: ShopReview) -> bytes:
        import numpy as np

        from shopsense.images.render import render_photo, spec_for_label

        def make() -> bytes:
            rng = np.random.default_rng(int(_h(r.id) * 2**31))
            label = "negative" if r.rating <= 2 else "positive" if r.rating >= 4 else "neutral"
            spec = spec_for_label(label, rng).model_copy(update={"category": _photo_category(p)})
            data = self._jpeg(render_photo(spec, seed=int(_h(r.id, 1) * 2**31), size=(224, 224)))
            if r.oversized_photo:  # trailing bytes after the JPEG end: a 3 MB download
                data += b"\0" * (3 * 1024 * 1024)
            return data

        return self.get(f"r:{r.id}", make)


def _photo_category(p: ShopProduct) -> str:
    if p.category == "books":
        return "book"
    if p.category == "dvd":
        return "dvd"
    name = p.name.lower()
    for word, cat in (("headphone", "headphones"), ("earbud", "headphones"), ("phone", "phone"),
                      ("laptop", "laptop"), ("notebook", "laptop")):
        if word in name:
            return cat
    return "box"


# ----------------------------------------------------------------------------------- server


class _Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.t = burst, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


_PRODUCT = re.compile(r"^/(outlet/)?p/([A-Za-z0-9]+)$")


def _handler(site: Site, shop: DemoShop) -> type[BaseHTTPRequestHandler]:
    bucket = _Bucket(shop.rate_limit, shop.burst) if shop.rate_limit else None

    class Handler(BaseHTTPRequestHandler):
        server_version = "DemoShop/1.0"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes | str, ctype: str = "text/html; charset=utf-8",
                  headers: dict[str, str] | None = None) -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            site.log.append((self.path, status))

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlparse(self.path)
            path, query = url.path, parse_qs(url.query)
            site.hits[self.path] += 1
            try:
                page = max(1, int(query.get("page", ["1"])[0]))
            except ValueError:
                page = 1
            if path == "/robots.txt":
                return self._send(200, ROBOTS, "text/plain")
            if path.startswith("/img/"):
                return self._image(path)
            if path == "/api/reviews":
                return self._api(query)
            if bucket is not None and not bucket.take():
                return self._send(429, "<h1>429 Too Many Requests</h1>",
                                  headers={"Retry-After": "1"})
            if path == "/":
                return self._send(200, render_home(site))
            if path.startswith("/c/") and path[3:] in CATEGORIES:
                return self._send(200, render_listing(site, path[3:], page))
            if path in ("/outlet", "/outlet/"):
                return self._send(200, render_listing(site, "", page, outlet=True))
            m = _PRODUCT.match(path)
            if m:
                p = site.product(m.group(2), outlet=bool(m.group(1)))
                if p is None or p.condition == "missing":
                    return self._send(404, _layout(site, "Not found", "<h1>Page not found</h1>"))
                if p.condition == "error" or (p.condition == "flaky" and
                                              site.hits[self.path] == 1):
                    return self._send(500, "<h1>Internal Server Error</h1>")
                return self._send(200, render_product(site, p, page, path))
            if path in ("/about", "/help", "/account/login"):
                return self._send(200, _layout(site, path[1:], f"<h1>{path[1:]}</h1>"
                                               "<p>Nothing to see here.</p>"))
            return self._send(404, _layout(site, "Not found", "<h1>Page not found</h1>"))

        def _api(self, query: dict[str, list[str]]) -> None:
            p = site.product(query.get("asin", [""])[0])
            if p is None or site.spec.style != "js":
                return self._send(404, '{"error": "no such product"}', "application/json")
            offset = int(query.get("offset", ["0"])[0])
            limit = min(10, int(query.get("limit", [str(JS_BATCH)])[0]))
            items = [{"title": r.title, "text": r.text, "rating": r.rating, "author": r.author,
                      "date": r.date, "photo": _photo_url(r) if r.photo else None}
                     for r in p.reviews[offset : offset + limit]]
            body = {"items": items, "more": offset + limit < len(p.reviews)}
            return self._send(200, json.dumps(body), "application/json")

        def _image(self, path: str) -> None:
            m = re.match(r"^/img/(p|r)/([A-Za-z0-9]+)\.jpg$", path)
            if m and m.group(1) == "p":
                p = next((x for x in site.products if x.asin == m.group(2)), None)
                if p:
                    return self._send(200, shop.images.product(p), "image/jpeg")
            elif m:
                for p in site.products:
                    for r in p.reviews:
                        if r.id == m.group(2) and r.photo:
                            return self._send(200, shop.images.review(p, r), "image/jpeg")
            return self._send(404, b"", "image/jpeg")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that hung up (a browser closing its tabs) is not an error
        super().handle_error(request, client_address)


class DemoShop:
    """All demo sites, each an HTTP server on 127.0.0.1 in a background thread.

    ``base_port=0`` picks free ports; otherwise site *i* listens on ``base_port + i``. Use as a
    context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        sites: tuple[SiteSpec, ...] = DEFAULT_SITES,
        products_per_site: int = 40,
        outlet_per_site: int = 4,
        rate_limit: float | None = 20.0,
        burst: float = 10.0,
        base_port: int = 0,
        seed: int = 7,
    ) -> None:
        self.sites = build_catalogue(data_dir, sites=sites, products_per_site=products_per_site,
                                     outlet_per_site=outlet_per_site, seed=seed)
        self.rate_limit, self.burst = rate_limit, burst
        self.base_port = base_port
        self.images = _Images(seed)
        self._threads: list[threading.Thread] = []

    def start(self) -> DemoShop:
        for i, site in enumerate(self.sites):
            port = self.base_port + i if self.base_port else 0
            server = _Server(("127.0.0.1", port), _handler(site, self))
            site.server, site.port = server, server.server_address[1]
            t = threading.Thread(target=server.serve_forever, name=f"shop-{site.spec.name}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for site in self.sites:
            if site.server is not None:
                site.server.shutdown()
                site.server.server_close()
                site.server = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> DemoShop:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.sites]

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.spec.name == name)

    def ground_truth(self) -> list[dict[str, Any]]:
        """Every review a polite crawler can reach: not in the outlet, not on a 404 or a
        permanently failing page. One dict per review: site, style, url, product, text, rating,
        title, photo."""
        out = []
        for site in self.sites:
            for p in site.products:
                if p.outlet or p.condition in ("missing", "error"):
                    continue
                for r in p.reviews:
                    out.append({
                        "site": site.spec.name,
                        "style": site.spec.style,
                        "host": f"127.0.0.1:{site.port}",
                        "product_id": p.asin,
                        "product_name": p.name,
                        "category": p.category,
                        "text": r.text,
                        "title": r.title,
                        "rating": r.rating,
                        "photo": r.photo,
                        "duplicate_of_other_site": site.spec.duplicate_source and
                        r.id.endswith("-c"),
                    })
        return out

    def requests_to(self, prefix: str) -> list[str]:
        """Paths requested on any site that start with ``prefix`` (robots checks in tests)."""
        return [path for s in self.sites for path, _ in s.log if path.startswith(prefix)]
