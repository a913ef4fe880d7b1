"""Extraction from a loaded page: structured data (JSON-LD, microdata) first; else the site's
learned selectors (waiting for script-rendered reviews and clicking "load more" on dynamic
sites); a site without selectors gets them from the LLM (validated on the page) or from the
heuristic learner. The page scripts and the parsing live in :mod:`pipelines.scrape.extract`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import UTC, datetime
from typing import Any

from pipelines.scrape.config import ScrapeConfig
from pipelines.scrape.extract import (
    LEARN_JS,
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
from pipelines.scrape.state import SourceState
from shopsense.schemas import Product, Review, Source, rating_to_label
from shopsense.text import normalise_text

log = logging.getLogger("pipelines.scrape.agent")

__all__ = ["PageReader", "page_date", "review_of"]

_CLASS_ATTR = re.compile(r"""class\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


class PageReader:
    """Reads reviews off a page; learns a site's selectors once (one site at a time)."""

    def __init__(self, config: ScrapeConfig, advisor: LLMAdvisor | None) -> None:
        self.cfg = config
        self.advisor = advisor
        self._learning: dict[str, asyncio.Lock] = {}

    async def learn(self, page: Any, st: SourceState, url: str, raw_html: str) -> None:
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
        checked = []
        for prop in proposals:
            result = await page.evaluate(SELECTOR_JS, prop.model_dump())
            ok, why = validate_selectors(result, prop, min_text=self.cfg.min_text_chars)
            checked.append((prop, ok, why, len((result or {}).get("rows") or []) if ok else 0))
        # a valid proposal that finds fewer reviews on this page than another valid one is a
        # partial match (seen: an LLM container that held a third of a site's reviews)
        most = max((n for _, ok, _, n in checked if ok), default=0)
        for prop, ok, why, n in checked:
            if ok and n < most:
                ok, why = False, f"finds {n} of the {most} reviews other selectors find"
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

    async def expand(self, page: Any, sel: SelectorSet) -> None:
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

    async def extract(self, page: Any, st: SourceState, url: str, raw_html: str
                       ) -> list[ExtractedReview]:
        structured = await page.evaluate(STRUCTURED_JS)
        found = reviews_from_structured(structured, url)
        if found:
            st.structured = True
            return found
        if st.selectors is None:
            async with self._learning.setdefault(st.source, asyncio.Lock()):
                if st.selectors is None:
                    await self.learn(page, st, url, raw_html)
            if st.selectors is None:
                return []
        if st.dynamic:
            await self.expand(page, st.selectors)
        result = await page.evaluate(SELECTOR_JS, st.selectors.model_dump())
        return reviews_from_selectors(result, st.selectors)


def review_of(er: ExtractedReview, *, text: str, product_id: str, site: str, url: str,
              page_title: str | None) -> Review:
    """The review record of one extracted review (``text`` already checked and whitespace
    folded); its id is stable: the site, the product and a hash of the normalised text."""
    source_id = f"{product_id}:{hashlib.sha256(normalise_text(text).encode()).hexdigest()[:16]}"
    source = Source(kind="scraped", name=site, source_id=source_id, url=url,
                    generator="shopsense-scrape")
    return Review.make(
        source=source, text=text, title=er.title, rating=er.rating,
        label=rating_to_label(er.rating),
        label_source="rating" if er.rating is not None else None,
        product=Product(id=product_id, name=er.product_name or page_title,
                        category=(er.category or "").lower() or None),
        created_at=page_date(er.date),
    )


def page_date(value: str | None) -> datetime:
    if value:
        try:
            d = datetime.fromisoformat(value[:10])
            return d.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)
