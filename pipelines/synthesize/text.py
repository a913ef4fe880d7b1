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

:class:`LLMGenerator` asks a LangChain chat model (``ChatOpenAI`` against vLLM in a cluster,
the embedded llama.cpp server on one machine) for a title and a review from the spec's
controls, with few-shot examples of the target category's own reviews; on a failure or an
unusable answer it falls back to the grounded generator and says so.
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


_SYSTEM = ("You write product reviews that read exactly like real customers' reviews on a "
           "shopping site.")
_EXAMPLES = """Real reviews customers wrote about {category} products:
{examples}
"""
_ASK = """Write one new review of {product} in the style of these customers (their vocabulary, \
length and tone), not a copy of any of them.
Sentiment: {label} ({rating} of 5 stars). About {words} words. Mention the {aspect}. Tone: \
{tone}.{negation}
Reply in exactly this form:
Title: <a short title>
Review: <the review>"""
_TONES = {
    "positive": ["enthusiastic", "matter-of-fact", "detailed", "brief", "warm"],
    "negative": ["disappointed", "angry", "matter-of-fact", "detailed", "sarcastic"],
    "neutral": ["matter-of-fact", "mixed", "detailed", "brief", "lukewarm"],
}


class LLMGenerator:
    """Reviews written by an LLM (a LangChain chat model: ``ChatOpenAI`` against vLLM or the
    embedded llama.cpp server) from the spec's controls, with few-shot examples of the target
    category's own reviews (``style_examples``, else mined phrases) so that vocabulary,
    length and style come from the target. The example set changes every ``rotate``
    reviews; between changes the prompt's prefix is the same, which the server caches. An
    unusable answer falls back to the grounded generator (``controls.llm_fallback``)."""

    name = "llm"

    def __init__(self, chat: Any, fallback: GroundedGenerator, *, category: str = "",
                 style_examples: list[str] | None = None, per_prompt: int = 3,
                 rotate: int = 5, example_chars: int = 400, temperature: float = 0.8,
                 max_words: int = 120) -> None:
        self.chat = chat
        self.fallback = fallback
        self.category = category or fallback.bank.noun
        self.style = [" ".join(t.split()) for t in (style_examples or []) if t and t.strip()]
        self.per_prompt, self.rotate = per_prompt, max(1, rotate)
        self.example_chars, self.temperature, self.max_words = example_chars, temperature, max_words
        self.failures = 0
        self._made = 0
        self._examples: list[str] = []
        model = getattr(chat, "model_name", None) or getattr(chat, "model", None)
        self.name = f"llm:{model or type(chat).__name__}"

    def _pick_examples(self, label: str, rng: np.random.Generator) -> list[str]:
        if self._made % self.rotate == 0 or not self._examples:
            if self.style:
                idx = rng.choice(len(self.style), size=min(self.per_prompt, len(self.style)),
                                 replace=False)
                self._examples = [self.style[int(i)] for i in idx]
            else:
                self._examples = self.fallback.bank.examples(label, rng, self.per_prompt)
        return self._examples

    def _words(self, rng: np.random.Generator) -> int:
        """A length drawn from the examples' lengths (the category's own), capped."""
        pool = self.style or self._examples
        n = len(pool[int(rng.integers(len(pool)))].split()) if pool else 60
        return int(min(self.max_words, max(15, n)))

    def generate(self, label: str, *, product: str, aspect: str, rng: np.random.Generator
                 ) -> Generated:
        intensity = float(rng.choice([0.3, 0.6, 0.9]))
        negation = bool(rng.random() < 0.3)
        rating = {"negative": int(rng.choice([1, 2])), "neutral": 3,
                  "positive": int(rng.choice([4, 5]))}[label]
        examples = self._pick_examples(label, rng)
        words = self._words(rng)
        tone = str(rng.choice(_TONES[label]))
        noun = self.fallback.bank.noun
        shown = "\n".join(f'Review {i}: "{_clip(e, self.example_chars)}"'
                           for i, e in enumerate(examples, 1))
        ask = _ASK.format(product=prompt_product(product, self.category) or f"a {noun}",
                          label=label, rating=rating,
                          words=words, aspect=aspect, tone=tone,
                          negation=" Use at least one negated phrase." if negation else "")
        messages = [("system", _SYSTEM),
                    ("human", _EXAMPLES.format(category=self.category, examples=shown) + "\n"
                     + ask)]
        seed = int(rng.integers(2**31))
        self._made += 1
        try:
            reply = self.chat.invoke(messages, temperature=self.temperature, seed=seed,
                                     max_tokens=int(words * 1.8) + 24)
            obj = _parse_reply(getattr(reply, "content", reply))
        except Exception as exc:  # an unreachable or failing model falls back, never stops
            log.warning("LLM generation failed: %s", str(exc).splitlines()[0] if str(exc)
                        else type(exc).__name__)
            obj = {}
        text = " ".join(str(obj.get("text") or "").split())
        real = self.fallback.bank.real_texts
        if (len(text.split()) < 5 or normalise_text(text) in real
                or any(normalise_text(text) == normalise_text(e) for e in examples)):
            self.failures += 1
            g = self.fallback.generate(label, product=product, aspect=aspect, rng=rng)
            g.controls["llm_fallback"] = True
            return g
        # no usable title: a customer's short one (not the label word, which no customer writes)
        title = (clean_title(str(obj.get("title") or ""))[:200]
                 or _TITLE[label][seed % len(_TITLE[label])].format(noun=noun))
        return Generated(title=title, text=text,
                         generator=self.name, controls={
                             "aspect": aspect, "intensity": intensity, "negation": negation,
                             "product": product, "rating": rating, "tone": tone,
                             "words": words, "seed": seed, "temperature": self.temperature,
                             "examples": len(examples),
                             "examples_from": "category" if self.style else "phrase-bank"})


def prompt_product(name: str, category: str | None = None) -> str:
    """The product as a customer would name it: a shop's listing name without the segments
    that are the category or a comma-separated list (``"Le Samourai: DVD: Alain Delon,
    Francois Perier, ..."`` -> ``"Le Samourai"``), which the LLM otherwise copies into its
    titles."""
    parts = [p.strip() for p in (name or "").split(": ")]
    keep: list[str] = []
    for part in parts:
        if keep and (part.count(",") >= 2
                     or (category and part.lower() == category.lower())):
            break
        keep.append(part)
    return ": ".join(keep).strip()


_TITLE_PREFIX = re.compile(r"^(?:[\W_]*title\s*[:\-]\s*)+", re.IGNORECASE)


def clean_title(title: str) -> str:
    """A reply's title without a repeated ``Title:`` label, markdown or quotes; empty when it
    is only a sentiment word (the answer then gets its label's default title)."""
    t = _TITLE_PREFIX.sub("", title.strip()).strip().strip('"*#_ ').strip()
    return "" if t.lower() in {"positive", "negative", "neutral"} else t


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " ..."


_TITLE_REVIEW = re.compile(r"title\s*:\s*(?P<title>[^\n]*)\n+\s*review\s*:\s*(?P<text>.+)",
                           re.IGNORECASE | re.DOTALL)


# A refusal, wherever the reply put it (a "Review:" that apologises is still one). Opening
# words that a real negative review also uses ("Sorry, but this film ...") are not enough: it
# takes the assistant's phrasing of declining, near the start.
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry)[,.!]?\s*(?:but\s+)?i\b"
    r"|\bas an ai\b"
    r"|\bi (?:cannot|can't|can not|am unable to|'m unable to|am not able to) "
    r"(?:provide|write|create|generate|fulfil|fulfill|help|assist|comply|complete)"
    r"|^\W*i apologi[sz]e\b", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """Whether ``text`` (a reply or the review taken from it) declines instead of answering."""
    return bool(_REFUSAL.search(text[:300]))


def _parse_reply(content: Any) -> dict[str, Any]:
    """``{"title", "text"}`` from a reply in the asked form (``Title: ...`` then
    ``Review: ...``), from the outermost ``{...}`` of a JSON reply, or, from a model that
    ignored the form, the reply itself (a short first line is its title); ``{}`` for a
    refusal or nothing."""
    text = content if isinstance(content, str) else json.dumps(content)
    m = _TITLE_REVIEW.search(text)
    if m:
        body = m.group("text").strip().strip('"')
        return {} if is_refusal(body) else {"title": m.group("title").strip().strip('"'),
                                            "text": body}
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            obj = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return {} if is_refusal(str(obj.get("text") or "")) else obj
    plain = text.strip()
    if not plain or is_refusal(plain):
        return {}
    lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
    if len(lines) > 1 and len(lines[0].split()) <= 10:
        return {"title": lines[0].rstrip(":").strip('"*# '), "text": " ".join(lines[1:])}
    return {"title": "", "text": " ".join(lines)}
