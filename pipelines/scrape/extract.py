"""Review extraction from a live page: structured data first, then learned CSS selectors.

The JavaScript snippets run inside the browser page (Playwright ``page.evaluate``), so they see
the DOM after scripts ran; the Python side turns what they return into
:class:`ExtractedReview` records. Nothing here fetches anything.

Order of strategies (:func:`extract_reviews`):

1. JSON-LD: every ``<script type="application/ld+json">`` (``@graph`` and arrays included);
   ``Product`` objects with ``review``; a block that does not parse is counted, not fatal.
2. Microdata: the HTML microdata algorithm over top-level ``itemscope`` items
   (``meta``→content, ``img``→src, ``a``/``link``→href, ``time``→datetime, nested items).
3. CSS selectors: a :class:`SelectorSet` learned for the site (by :func:`learn_selectors`, or
   proposed by an LLM and validated with :func:`validate_selectors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LEARN_JS",
    "RATING_HINT_JS",
    "PAGE_JS",
    "SELECTOR_JS",
    "STRUCTURED_JS",
    "ExtractedReview",
    "SelectorSet",
    "parse_rating",
    "reviews_from_selectors",
    "reviews_from_structured",
    "validate_selectors",
]


@dataclass
class ExtractedReview:
    text: str
    rating: float | None
    title: str | None = None
    author: str | None = None
    date: str | None = None
    images: list[str] = field(default_factory=list)
    product_id: str | None = None
    product_name: str | None = None
    category: str | None = None
    method: str = "selectors"


class SelectorSet(BaseModel):
    """Per-site CSS selectors. ``container`` matches one element per review; the others are
    relative to it (``text`` required). Page-level: ``product_name``, ``category``,
    ``load_more`` (a button that reveals more reviews)."""

    model_config = ConfigDict(extra="ignore")

    container: str
    text: str
    title: str | None = None
    rating: str | None = None
    author: str | None = None
    image: str | None = None
    product_name: str | None = None
    category: str | None = None
    load_more: str | None = None
    list_root: str | None = Field(None, description="served element the reviews render into")
    origin: str = Field("heuristic", description="heuristic | llm | configured")


# ----------------------------------------------------------------------- browser snippets

STRUCTURED_JS = r"""
() => {
  const out = {jsonld: [], jsonld_errors: 0, microdata: []};
  for (const s of document.querySelectorAll('script[type="application/ld+json"]')) {
    try { out.jsonld.push(JSON.parse(s.textContent)); } catch (e) { out.jsonld_errors += 1; }
  }
  function value(el) {
    if (el.hasAttribute('itemscope')) return item(el);
    const tag = el.tagName.toLowerCase();
    if (tag === 'meta') return el.getAttribute('content') || '';
    if (['img','audio','video','source','embed','iframe'].includes(tag)) return el.src || '';
    if (['a','area','link'].includes(tag)) return el.href || '';
    if (tag === 'time') return el.getAttribute('datetime') || el.textContent.trim();
    if (['data','meter'].includes(tag)) return el.getAttribute('value') || '';
    return el.textContent.replace(/\s+/g, ' ').trim();
  }
  function item(root) {
    const obj = {'@type': (root.getAttribute('itemtype') || '').trim()};
    const walk = (el) => {
      for (const child of el.children) {
        if (child.hasAttribute('itemprop')) {
          for (const name of child.getAttribute('itemprop').split(/\s+/)) {
            if (!name) continue;
            (obj[name] = obj[name] || []).push(value(child));
          }
        }
        if (!child.hasAttribute('itemscope')) walk(child);
      }
    };
    walk(root);
    return obj;
  }
  for (const el of document.querySelectorAll('[itemscope]')) {
    if (!el.hasAttribute('itemprop')) out.microdata.push(item(el));
  }
  return out;
}
"""

PAGE_JS = r"""
() => {
  const links = [];
  for (const a of document.querySelectorAll('a[href]')) {
    links.push({href: a.href, rel: (a.getAttribute('rel') || ''), text: a.textContent.trim()});
  }
  const canon = document.querySelector('link[rel="canonical"]');
  const h1 = document.querySelector('h1');
  return {links, canonical: canon ? canon.href : null,
          h1: h1 ? h1.textContent.trim() : null, title: document.title};
}
"""

# does the page show anything rating-like? (gates the LLM: no calls on listing/help pages)
RATING_HINT_JS = r"""
() => {
  const t = document.body ? document.body.innerText : '';
  if (/[★☆]|\b[1-5](\.\d)?\s*(\/|out of)\s*(5|10)\b/i.test(t)) return true;
  return !!document.querySelector('[data-rating],[data-score],[data-stars],[class*="star"],' +
    '[class*="rating"],[class*="score"],[aria-label*="star"],[itemprop="ratingValue"]');
}
"""

# selectors -> one record per container; a rating element is returned as a bag of clues
SELECTOR_JS = r"""
(sel) => {
  const clean = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const one = (root, q) => { if (!q) return null; try { return root.querySelector(q); }
                              catch (e) { return null; } };
  let boxes = [];
  try { boxes = Array.from(document.querySelectorAll(sel.container)); } catch (e) { return null; }
  const page = {};
  for (const k of ['product_name', 'category']) {
    const el = one(document, sel[k]); page[k] = el ? clean(el.textContent) : null;
  }
  const rows = boxes.map((box) => {
    const t = one(box, sel.text), ti = one(box, sel.title), r = one(box, sel.rating);
    const au = one(box, sel.author);
    let imgs = [];
    if (sel.image) { try { imgs = Array.from(box.querySelectorAll(sel.image))
                                 .map((i) => i.src).filter(Boolean); } catch (e) {} }
    let bag = null;
    if (r) {
      const attrs = {};
      for (const a of r.attributes) attrs[a.name] = a.value;
      bag = {text: clean(r.textContent), attrs, cls: r.className || ''};
    }
    return {text: t ? clean(t.textContent) : '', title: ti ? clean(ti.textContent) : null,
            author: au ? clean(au.textContent) : null, rating: bag, images: imgs};
  });
  return {rows, page};
}
"""

# Heuristic selector learning: the repeated element (by class) whose instances each hold a
# rating clue and a long text; inside it, the classes of the text, title, rating and photo.
LEARN_JS = r"""
() => {
  const clean = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const ratingRe = /(★|☆|\b[1-5](\.\d)?\s*(\/|out of|of)\s*(5|10)\b|\b(score|stars?|rating|rate)[-_]?\d\b)/i;
  const hasRatingClue = (el) => {
    for (const a of el.attributes) {
      if (/^(data-(rating|score|stars|value)|aria-label|title|content)$/.test(a.name) &&
          /\d/.test(a.value)) return true;
    }
    return ratingRe.test(el.className || '') || ratingRe.test(clean(el.textContent).slice(0, 40));
  };
  const cssClass = (el) => {
    const c = Array.from(el.classList).filter((x) => /^[A-Za-z_-][\w-]*$/.test(x) &&
                                                    !/\d/.test(x));
    return c.length ? el.tagName.toLowerCase() + '.' + c[0] : null;
  };
  const groups = {};
  for (const el of document.body.querySelectorAll('*')) {
    const k = cssClass(el); if (!k) continue;
    (groups[k] = groups[k] || []).push(el);
  }
  let best = null;
  for (const [key, els] of Object.entries(groups)) {
    let rated = 0, texty = 0, total = 0;
    for (const el of els) {
      const len = clean(el.textContent).length; total += len;
      const desc = Array.from(el.querySelectorAll('*'));
      if (desc.some(hasRatingClue)) rated += 1;
      if (desc.some((d) => d.children.length === 0 && clean(d.textContent).length >= 40)) texty += 1;
    }
    const n = els.length;
    if (rated < 0.8 * n || texty < 0.8 * n) continue;
    const avg = total / n;
    const score = n * 1000 - avg;  // many instances; among equals the tightest wrapper
    if (!best || score > best.score) best = {key, els, score};
  }
  if (!best) return null;
  const rel = (box, el) => {
    const c = cssClass(el); if (c) return c;
    return el.tagName.toLowerCase();
  };
  const first = best.els[0];
  const desc = Array.from(first.querySelectorAll('*'));
  let text = null, title = null, rating = null, image = null;
  let longest = 0;
  for (const d of desc) {
    const len = clean(d.textContent).length;
    if (d.querySelector('*') && !d.querySelector('br,b,i,em,strong')) continue;
    if (len > longest) { longest = len; text = rel(first, d); }
  }
  // the element that carries the clue itself: the innermost one, not a wrapper around it
  let ratingEl = null;
  for (const d of desc) {
    if (hasRatingClue(d) && clean(d.textContent).length <= 60 &&
        (!ratingEl || ratingEl.contains(d))) ratingEl = d;
  }
  if (ratingEl) rating = rel(first, ratingEl);
  for (const d of desc) {
    const tag = d.tagName.toLowerCase();
    const len = clean(d.textContent).length;
    const k = rel(first, d);
    if (k === text || k === rating) continue;
    if (/^(h[1-6]|strong|b|em)$/.test(tag) && len > 0 && len <= 200) { title = k; break; }
  }
  for (const d of desc) if (d.tagName === 'IMG') { image = rel(first, d); break; }
  let load_more = null;
  for (const b of document.querySelectorAll('button, a')) {
    if (/^(load|show|see|view) more( reviews)?$/i.test(clean(b.textContent))) {
      load_more = b.id ? '#' + b.id : cssClass(b); break;
    }
  }
  const parent = first.parentElement;
  const list_root = parent ? (parent.id ? '#' + parent.id : cssClass(parent)) : null;
  const h1 = document.querySelector('h1');
  const crumbs = document.querySelector('[class*="crumb"] a:last-child, [class*="crumb"] span:last-child');
  return {container: best.key, text, title, rating, image, load_more, list_root,
          product_name: h1 ? (cssClass(h1) || 'h1') : null,
          category: crumbs ? '[class*="crumb"] ' + crumbs.tagName.toLowerCase() + ':last-child' : null,
          count: best.els.length};
}
"""


# ----------------------------------------------------------------------------- parsing

_OF = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of|of)\s*(\d+)", re.IGNORECASE)
_NUM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
_CLASS = re.compile(r"(?:score|stars?|rating|rate|s)[-_]?(\d(?:\.\d)?)\b", re.IGNORECASE)


def _scaled(value: float, best: float | None) -> float | None:
    if best and best > 0 and best != 5:
        value = value / best * 5
    if 0 < value <= 5.0001:
        return round(max(1.0, min(5.0, value)), 2)
    return None


def parse_rating(bag: dict[str, Any] | None) -> float | None:
    """A 1-5 rating from a bag of clues ``{text, attrs, cls}`` (see ``SELECTOR_JS``).

    Tries, in order: numeric attributes (``data-rating``/``data-score``/``content``/…, with
    ``data-max``/``data-best`` as the scale), "n out of m" / "n/m" in ``aria-label`` or
    ``title``, a class such as ``score-4`` or ``s4``, a row of ★/☆, "n out of m" in the text,
    a bare number in the text."""
    if not bag:
        return None
    attrs = {k.lower(): str(v) for k, v in (bag.get("attrs") or {}).items()}
    text = str(bag.get("text") or "")
    best = None
    for key in ("data-max", "data-best", "data-scale"):
        if key in attrs and _NUM.match(attrs[key]):
            best = float(attrs[key])
    for key in ("data-rating", "data-score", "data-stars", "data-value", "content", "value"):
        if key in attrs and _NUM.match(attrs[key]):
            return _scaled(float(attrs[key]), best)
    for src in (attrs.get("aria-label", ""), attrs.get("title", "")):
        m = _OF.search(src)
        if m:
            return _scaled(float(m.group(1)), float(m.group(2)))
    m = _CLASS.search(str(bag.get("cls") or ""))
    if m:
        return _scaled(float(m.group(1)), best)
    if "★" in text or "☆" in text:
        filled = text.count("★")
        return float(filled) if filled else None
    m = _OF.search(text)
    if m:
        return _scaled(float(m.group(1)), float(m.group(2)))
    m = _NUM.match(text)
    if m:
        return _scaled(float(m.group(1)), best)
    return None


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(value: Any) -> str | None:
    value = _first(value)
    if isinstance(value, dict):
        value = _first(value.get("name"))
    if value is None:
        return None
    s = " ".join(str(value).split())
    return s or None


def _is_type(obj: dict[str, Any], name: str) -> bool:
    t = obj.get("@type")
    types = t if isinstance(t, list) else [t]
    return any(isinstance(x, str) and (x == name or x.rstrip("/").endswith("/" + name))
               for x in types)


def _walk_jsonld(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, list):
        for n in node:
            out += _walk_jsonld(n)
    elif isinstance(node, dict):
        out.append(node)
        if "@graph" in node:
            out += _walk_jsonld(node["@graph"])
    return out


def _rating_of(review: dict[str, Any]) -> float | None:
    rr = _first(review.get("reviewRating"))
    if isinstance(rr, dict):
        try:
            value = float(_first(rr.get("ratingValue")))
        except (TypeError, ValueError):
            return None
        try:
            best = float(_first(rr.get("bestRating")) or 5)
        except (TypeError, ValueError):
            best = 5.0
        return _scaled(value, best)
    try:
        return _scaled(float(rr), None) if rr is not None else None
    except (TypeError, ValueError):
        return None


def _images(value: Any, base: str) -> list[str]:
    vals = value if isinstance(value, list) else [value] if value else []
    out = []
    for v in vals:
        if isinstance(v, dict):
            v = _first(v.get("url") or v.get("contentUrl"))
        if isinstance(v, str) and v:
            out.append(urljoin(base, v))
    return out


def reviews_from_structured(data: dict[str, Any], page_url: str) -> list[ExtractedReview]:
    """Reviews of every schema.org Product in ``STRUCTURED_JS``'s result (JSON-LD, microdata)."""
    out: list[ExtractedReview] = []
    sources = [("jsonld", o) for o in _walk_jsonld(data.get("jsonld") or [])]
    sources += [("microdata", o) for o in data.get("microdata") or []]
    for method, obj in sources:
        if not _is_type(obj, "Product"):
            continue
        pid = _text(obj.get("sku")) or _text(obj.get("productID")) or _text(obj.get("gtin13"))
        name = _text(obj.get("name"))
        category = _text(obj.get("category"))
        reviews = obj.get("review") or obj.get("reviews") or []
        if isinstance(reviews, dict):
            reviews = [reviews]
        for r in reviews:
            if not isinstance(r, dict):
                continue
            body = _text(r.get("reviewBody")) or _text(r.get("description"))
            if not body:
                continue
            out.append(ExtractedReview(
                text=body, rating=_rating_of(r), title=_text(r.get("name")),
                author=_text(r.get("author")), date=_text(r.get("datePublished")),
                images=_images(r.get("image"), page_url), product_id=pid,
                product_name=name, category=category, method=method,
            ))
    return out


def reviews_from_selectors(result: dict[str, Any] | None, sel: SelectorSet) -> list[ExtractedReview]:
    """Records of ``SELECTOR_JS``'s result (``None`` when the container selector is invalid)."""
    if not result:
        return []
    page = result.get("page") or {}
    out = []
    for row in result.get("rows") or []:
        text = row.get("text") or ""
        if not text:
            continue
        out.append(ExtractedReview(
            text=text, rating=parse_rating(row.get("rating")), title=row.get("title") or None,
            author=row.get("author") or None, images=list(row.get("images") or []),
            product_name=page.get("product_name"), category=page.get("category"),
            method=f"selectors:{sel.origin}",
        ))
    return out


def validate_selectors(result: dict[str, Any] | None, sel: SelectorSet, *,
                       min_text: int = 20) -> tuple[bool, str]:
    """Is a selector proposal usable on this page? ``(ok, why)``.

    Requires: the container is valid CSS and matches at least one element, every match yields
    a text of at least ``min_text`` characters, texts are not all the same, and when a rating
    selector is given, at least 80 % of matches yield a 1-5 rating."""
    if result is None:
        return False, "invalid CSS or the script failed"
    rows = result.get("rows") or []
    if not rows:
        return False, f"container {sel.container!r} matches nothing"
    texts = [r.get("text") or "" for r in rows]
    short = sum(len(t) < min_text for t in texts)
    if short:
        return False, f"{short}/{len(rows)} matches have no text of {min_text}+ chars"
    if len(rows) > 1 and len(set(texts)) == 1:
        return False, "every match has the same text (a page-level element, not a review)"
    if sel.rating:
        rated = sum(parse_rating(r.get("rating")) is not None for r in rows)
        if rated < 0.8 * len(rows):
            return False, f"rating selector parses for {rated}/{len(rows)} matches"
    return True, f"{len(rows)} reviews"
