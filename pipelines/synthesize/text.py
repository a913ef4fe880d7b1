"""Review text generators: grounded in mined real phrasing (CPU default) or an LLM.

:class:`PhraseBank` mines sentences from shared review sets: sentences of 6-35 words from
reviews with at least three sentences, each tagged with the aspects it mentions and a polarity
that both the review's label and VADER agree on (neutral: VADER near zero). Product-specific
nouns are replaced by the target category's noun.

:class:`GroundedGenerator` writes one review from a label and controls (aspect focus,
intensity, negation, product name): an opener, one or two mined sentences of that polarity
(about the focus aspect when the bank has some, each from a different real review), an
optional negated aspect clause, and a closer. A result whose normalised text equals a real
review, or that is a single mined sentence, is never returned.

:class:`LLMGenerator` asks a LangChain chat model (``ChatOpenAI`` against vLLM serving
Llama-3.1 in a cluster) for ``{"title", "text"}`` with a few mined sentences as style
examples; on a failure or an unusable answer it falls back to the grounded generator.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from shopsense.text import normalise_text

log = logging.getLogger(__name__)

__all__ = ["Generated", "GroundedGenerator", "LLMGenerator", "PhraseBank"]

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_GENERIC_NOUNS = re.compile(
    r"\b(this|the|that)\s+(book|novel|movie|film|dvd|product|item|unit|device|camera|phone|"
    r"player|thing|cd|album|headset|radio|speaker|router)\b", re.IGNORECASE)
_POS = ["great", "excellent", "superb", "really good", "fantastic"]
_NEG = ["poor", "terrible", "awful", "disappointing", "really bad"]


@dataclass
class Phrase:
    text: str
    polarity: str
    aspects: tuple[str, ...]
    origin: str  # review id it came from


@dataclass
class Generated:
    title: str
    text: str
    controls: dict[str, Any]
    generator: str


class PhraseBank:
    def __init__(self, phrases: list[Phrase], real_texts: set[str], noun: str) -> None:
        self.phrases = phrases
        self.real_texts = real_texts
        self.noun = noun
        self.by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, p in enumerate(phrases):
            self.by_key[(p.polarity, "")].append(i)
            for a in p.aspects:
                self.by_key[(p.polarity, a)].append(i)

    @classmethod
    def mine(cls, sets: list[str], aspects: list[str], noun: str,
             data_dir: Any = None) -> PhraseBank:
        """Mine (cached per process for the same arguments: the bank is read-only)."""
        return _mine_cached(tuple(sets), tuple(aspects), noun, str(data_dir or ""))

    @classmethod
    def _mine(cls, sets: list[str], aspects: list[str], noun: str,
              data_dir: Any = None) -> PhraseBank:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        from shopsense.data.loaders import load_set

        phrases: list[Phrase] = []
        real: set[str] = set()
        candidates: list[tuple[str, str, str]] = []
        for name in sets:
            for r in load_set(name, data_dir):
                real.add(normalise_text(r.text))
                if r.label not in ("negative", "positive"):
                    continue
                sents = [s.strip() for s in _SENT.split(" ".join(r.text.split())) if s.strip()]
                if len(sents) < 3:
                    continue  # a short review could be copied whole by one sentence
                for s in sents:
                    n = len(s.split())
                    if 6 <= n <= 35 and not re.search(r"\d{3,}|http|www\.", s):
                        candidates.append((s, r.label, r.id))
        if not candidates:
            raise ValueError(f"no phrases mined from {sets}")
        vader = SentimentIntensityAnalyzer()
        asp = [(a, re.compile(rf"\b{re.escape(a)}s?\b", re.IGNORECASE)) for a in aspects]
        for s, label, rid in candidates:
            c = vader.polarity_scores(s)["compound"]
            if c >= 0.3 and label == "positive":
                pol = "positive"
            elif c <= -0.3 and label == "negative":
                pol = "negative"
            elif abs(c) < 0.05:
                pol = "neutral"
            else:
                continue
            text = _GENERIC_NOUNS.sub(lambda m: f"{m.group(1)} {noun}", s)
            tags = tuple(a for a, rx in asp if rx.search(text))
            phrases.append(Phrase(text, pol, tags, rid))
        return cls(phrases, real, noun)

    def pick(self, polarity: str, aspect: str | None, rng: np.random.Generator,
             exclude_origins: set[str]) -> Phrase | None:
        for key in ((polarity, aspect or ""), (polarity, "")):
            pool = [i for i in self.by_key.get(key, []) if
                    self.phrases[i].origin not in exclude_origins]
            if pool:
                return self.phrases[pool[int(rng.integers(len(pool)))]]
        return None

    def examples(self, polarity: str, rng: np.random.Generator, n: int = 3) -> list[str]:
        pool = self.by_key.get((polarity, ""), [])
        if not pool:
            return []
        idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        return [self.phrases[pool[int(i)]].text for i in idx]


@lru_cache(maxsize=4)
def _mine_cached(sets: tuple[str, ...], aspects: tuple[str, ...], noun: str, data_dir: str
                 ) -> PhraseBank:
    return PhraseBank._mine(list(sets), list(aspects), noun, data_dir or None)


_OPEN = {
    "positive": ["I bought {product} and I am {very}happy with it.", "{Product} is {very}good.",
                 "Really {very}pleased with {product}.", "What a {very}nice surprise {product} was.",
                 "Five stars for {product}."],
    "negative": ["I {very}regret buying {product}.", "{Product} was a {very}big letdown.",
                 "Sadly {product} is {very}bad.", "Do not waste your money on {product}.",
                 "One star for {product}, and that is generous."],
    "neutral": ["I got {product} last week.", "{Product} is okay.",
                "Some thoughts on {product}.", "{Product} arrived on time.",
                "Three stars for {product}."],
}
_CLOSE = {
    "positive": ["Highly recommended.", "Would buy again.", "Worth every penny.",
                 "I would recommend it to anyone.", ""],
    "negative": ["I am returning it.", "Avoid.", "Save your money.", "Very disappointed.", ""],
    "neutral": ["It does what it says.", "Nothing special, nothing terrible.",
                "Fine for the price.", "Average overall.", ""],
}
_NEGATED = {
    "positive": ["I can't say anything bad about the {aspect}.",
                 "The {aspect} was not a problem at all."],
    "negative": ["The {aspect} is not {pos} at all.", "I would not call the {aspect} {pos}."],
    "neutral": ["The {aspect} is neither good nor bad.", "The {aspect} is not bad, not great."],
}
_TITLE = {
    "positive": ["Love it", "Great {noun}", "Excellent", "Very happy", "Worth it"],
    "negative": ["Disappointed", "Not worth it", "Poor {noun}", "Avoid", "Waste of money"],
    "neutral": ["It's okay", "Average", "Decent {noun}", "Mixed feelings", "Fine"],
}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class GroundedGenerator:
    name = "grounded-phrases-v1"

    def __init__(self, bank: PhraseBank) -> None:
        self.bank = bank

    def generate(self, label: str, *, product: str, aspect: str, rng: np.random.Generator
                 ) -> Generated:
        for _ in range(20):
            g = self._once(label, product, aspect, rng)
            norm = normalise_text(g.text)
            if norm not in self.bank.real_texts and g.controls["phrases"] >= 1:
                return g
        raise RuntimeError("could not generate a review that differs from every real review")

    def _once(self, label: str, product: str, aspect: str, rng: np.random.Generator
              ) -> Generated:
        intensity = float(rng.choice([0.3, 0.6, 0.9]))
        negation = bool(rng.random() < 0.3)
        very = "very " if intensity >= 0.9 else "really " if intensity >= 0.6 else ""
        name = product or f"this {self.bank.noun}"

        def fill(t: str) -> str:
            return t.format(product=name, Product=_cap(name), very=very, aspect=aspect,
                            pos=str(rng.choice(_POS)), noun=self.bank.noun)

        parts = [fill(str(rng.choice(_OPEN[label])))]
        used: set[str] = set()
        n_phr = 1 + int(rng.integers(0, 3)) + (1 if intensity >= 0.6 else 0)  # 1-4 sentences
        phrases = []
        for k in range(n_phr):
            p = self.bank.pick(label, aspect if k == 0 else None, rng, used)
            if p is None:
                break
            used.add(p.origin)
            phrases.append(p.text)
            parts.append(p.text)
        if negation:
            parts.insert(1 + int(rng.integers(len(parts))), fill(str(rng.choice(_NEGATED[label]))))
        close = fill(str(rng.choice(_CLOSE[label])))
        if close:
            parts.append(close)
        text = " ".join(parts)
        title = fill(str(rng.choice(_TITLE[label])))
        return Generated(title=title, text=text, generator=self.name, controls={
            "aspect": aspect, "intensity": intensity, "negation": negation,
            "product": product, "phrases": len(phrases)})


_LLM_PROMPT = """Write one realistic customer review of a {noun} called "{product}".
Sentiment: {label} (star rating {rating} of 5). Focus on the {aspect}. Intensity: {intensity}.
{negation}Match the tone and phrasing of these real review sentences, without copying them:
{examples}
Reply with ONE JSON object: {{"title": "...", "text": "..."}} and nothing else."""


class LLMGenerator:
    name = "llm"

    def __init__(self, chat: Any, fallback: GroundedGenerator) -> None:
        self.chat = chat
        self.fallback = fallback
        self.failures = 0
        model = getattr(chat, "model_name", None) or getattr(chat, "model", None)
        self.name = f"llm:{model or type(chat).__name__}"

    def generate(self, label: str, *, product: str, aspect: str, rng: np.random.Generator
                 ) -> Generated:
        intensity = float(rng.choice([0.3, 0.6, 0.9]))
        negation = bool(rng.random() < 0.3)
        rating = {"negative": int(rng.choice([1, 2])), "neutral": 3,
                  "positive": int(rng.choice([4, 5]))}[label]
        prompt = _LLM_PROMPT.format(
            noun=self.fallback.bank.noun, product=product or f"this {self.fallback.bank.noun}",
            label=label, rating=rating, aspect=aspect, intensity=intensity,
            negation="Use at least one negated phrase. " if negation else "",
            examples="\n".join(f"- {e}" for e in self.fallback.bank.examples(label, rng)))
        try:
            reply = self.chat.invoke(prompt)
            obj = _parse_reply(getattr(reply, "content", reply))
        except Exception as exc:
            log.warning("LLM generation failed: %s", exc)
            obj = {}
        text = " ".join(str(obj.get("text") or "").split())
        if len(text) < 20 or normalise_text(text) in self.fallback.bank.real_texts:
            self.failures += 1
            g = self.fallback.generate(label, product=product, aspect=aspect, rng=rng)
            g.controls["llm_fallback"] = True
            return g
        return Generated(title=str(obj.get("title") or "")[:200] or label.title(), text=text,
                         generator=self.name, controls={
                             "aspect": aspect, "intensity": intensity, "negation": negation,
                             "product": product, "rating": rating, "prompt_chars": len(prompt)})


def _parse_reply(content: Any) -> dict[str, Any]:
    """The outermost ``{...}`` of a chat reply as a dict (``{}`` when there is none)."""
    text = content if isinstance(content, str) else json.dumps(content)
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end <= start:
        return {}
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}
