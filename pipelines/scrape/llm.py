"""The scraping agent's optional LLM: selector proposals for unseen sites, priors for sources.

Any LangChain chat model works (``BaseChatModel``). :func:`shopsense.llm.chat_model_from_env` builds
``langchain_openai.ChatOpenAI`` against any OpenAI-compatible endpoint (the platform's own vLLM
in a cluster) when ``SHOPSENSE_LLM_BASE_URL`` is set; otherwise there is no LLM and the agent
uses its deterministic strategies. Nothing the LLM says is trusted: selector proposals are
validated on the page before use (:func:`~pipelines.scrape.extract.validate_selectors`), source
priors are clipped to [0.05, 0.95] and only shift the bandit's starting belief.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pipelines.scrape.extract import SelectorSet

log = logging.getLogger(__name__)

__all__ = ["LLMAdvisor", "parse_json_reply"]

SELECTOR_PROMPT = """You are helping a web scraper extract customer reviews from a shop page.
Site: {site}
URL: {url}
Below is a sample of the page's HTML (scripts removed, may be truncated).
Reply with ONE JSON object and nothing else, with CSS selectors:
{{"container": "<one element per review>", "text": "<review body, relative to container>",
  "title": "<review title or null>", "rating": "<element holding the star rating or null>",
  "author": "<author or null>", "image": "<customer photo img or null>",
  "load_more": "<button that loads more reviews, or null>"}}

HTML:
{html}
"""

SOURCE_PROMPT = """You are planning a review-scraping crawl. For each source below, estimate the
probability (0..1) that a page fetched from it yields new, valid, non-duplicate product reviews.
Past statistics per source (may be empty for new sources):
{stats}
Reply with ONE JSON object mapping each source name to a number, and nothing else.
"""


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json_reply(content: Any) -> dict[str, Any] | None:
    """The first JSON object in a chat reply (code fences and chatter around it tolerated)."""
    if isinstance(content, list):  # content blocks
        content = "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    text = str(content or "")
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(text[start : i + 1])
                    except json.JSONDecodeError:
                        break
                    return obj if isinstance(obj, dict) else None
        start = text.find("{", start + 1)
    return None


_SCRIPT = re.compile(r"<(script|style)\b.*?</\1>", re.DOTALL | re.IGNORECASE)


def page_sample(html: str, limit: int = 6000) -> str:
    """The HTML with scripts and styles removed, whitespace squeezed, cut to ``limit`` chars
    around the middle of the body (where reviews usually are)."""
    text = re.sub(r"\s+", " ", _SCRIPT.sub("", html))
    if len(text) <= limit:
        return text
    body = text.find("<main")
    start = max(0, body if body != -1 else 0)
    return text[start : start + limit]


class LLMAdvisor:
    """Wraps a chat model; every method returns ``None``/``{}`` instead of raising when the
    model fails or answers nonsense (the agent then uses its deterministic strategy)."""

    def __init__(self, chat: Any) -> None:
        self.chat = chat
        self.calls = 0
        self.errors = 0

    def _ask(self, prompt: str) -> dict[str, Any] | None:
        self.calls += 1
        try:
            reply = self.chat.invoke(prompt)
        except Exception as exc:  # an unreachable or failing model must not stop the crawl
            self.errors += 1
            log.warning("LLM call failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return None
        obj = parse_json_reply(getattr(reply, "content", reply))
        if obj is None:
            self.errors += 1
        return obj

    def propose_selectors(self, *, site: str, url: str, html: str) -> SelectorSet | None:
        obj = self._ask(SELECTOR_PROMPT.format(site=site, url=url, html=page_sample(html)))
        if not obj or not isinstance(obj.get("container"), str) or not isinstance(
                obj.get("text"), str):
            return None
        clean = {k: v for k, v in obj.items() if isinstance(v, str) and v.strip()}
        try:
            return SelectorSet(**{**clean, "origin": "llm"})
        except Exception:
            return None

    def source_priors(self, stats: dict[str, dict[str, Any]]) -> dict[str, float]:
        obj = self._ask(SOURCE_PROMPT.format(stats=json.dumps(stats, indent=1, sort_keys=True)))
        out: dict[str, float] = {}
        for name, value in (obj or {}).items():
            if name in stats:
                try:
                    out[name] = min(0.95, max(0.05, float(value)))
                except (TypeError, ValueError):
                    continue
        return out
