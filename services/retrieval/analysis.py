"""How BM25 reads English, one definition for both sparse backends (tantivy and OpenSearch), for
documents and queries alike.

1. :func:`bm25_text` (Python, before either backend sees the text): negated contractions are
   spelled out, ``don't`` / ``doesn’t`` / ``dont`` → ``do not`` / ``does not``, ``can't`` →
   ``can not``, ``won't`` → ``will not``, so a negation is the token ``not`` whichever way a
   shopper typed it.
2. The analyzer (built for tantivy by :func:`tantivy_analyzer`, for OpenSearch by
   :func:`opensearch_analysis`): split on every character that is not a letter
   or a digit (tantivy's ``simple`` tokenizer; OpenSearch's ``pattern`` tokenizer on
   ``[^\\p{L}\\p{N}]+``), drop tokens of 40 bytes/characters or more, lowercase, remove
   :data:`STOP_WORDS`, Snowball English stemmer (tantivy's ``stemmer("english")``;
   OpenSearch's ``stemmer`` with ``language: porter2``, Lucene's Snowball ``EnglishStemmer``).

:data:`STOP_WORDS` is Lucene's English stop set (what OpenSearch's ``english`` analyzer and
tantivy's ``stopword("english")`` remove) without the negations ``no`` and ``not``, plus ``s``
(the remnant of a possessive, ``john's`` → ``john`` ``s``). Keeping negations matters for
reviews: "not worth it" and "worth it" are opposite opinions, and with the default list BM25
read them as the same query.

Where the two can still differ: tantivy's ``simple`` tokenizer and Java's ``\\p{L}\\p{N}``
disagree on a few Unicode marks (combining accents written as separate code points), and
tantivy's length limit counts UTF-8 bytes where OpenSearch's counts characters (only tokens of
14+ non-ASCII letters). Rankings of the two on the same collection are compared in
``tests/services/retrieval/test_analysis.py``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ANALYZER_NAME", "NEGATIONS", "STOP_WORDS", "bm25_text", "opensearch_analysis",
           "tantivy_analyzer"]

#: the name of the analyzer in both backends (tantivy tokenizer name, OpenSearch analyzer name)
ANALYZER_NAME = "shopsense_english"

#: Lucene's English stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET)
_LUCENE_ENGLISH = ("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in",
                   "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the",
                   "their", "then", "there", "these", "they", "this", "to", "was", "will",
                   "with")
#: words that carry a negation: never stop words here
NEGATIONS: tuple[str, ...] = ("no", "not", "never", "nor", "none", "nothing", "nobody",
                              "nowhere", "neither", "without", "cannot")
STOP_WORDS: tuple[str, ...] = tuple(w for w in _LUCENE_ENGLISH if w not in NEGATIONS) + ("s",)

#: tokens of this many bytes (tantivy) / characters (OpenSearch) or more are dropped
MAX_TOKEN = 40

_IRREGULAR = {"ca": "can", "wo": "will", "sha": "shall", "ai": "is"}  # ca|n't, wo|n't …
_NT = re.compile(r"\b([A-Za-z]+?)n['\u2019]t\b", re.IGNORECASE)
#: contractions typed without the apostrophe (common in reviews); "wont" and "cant" are rare
#: as words of their own in reviews and are read as negations too
_BARE = {w: f"{w[:-2]} not" for w in (
    "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "havent", "hasnt", "hadnt",
    "couldnt", "wouldnt", "shouldnt", "mustnt", "neednt")}
_BARE.update({"cant": "can not", "wont": "will not", "aint": "is not", "shant": "shall not"})
_BARE_RE = re.compile(r"\b(" + "|".join(sorted(_BARE, key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)


def _nt(m: re.Match[str]) -> str:
    stem = m.group(1)
    return f"{_IRREGULAR.get(stem.lower(), stem)} not"


def bm25_text(text: str) -> str:
    """``text`` with negated contractions spelled out (module docstring, step 1)."""
    if not text:
        return ""
    out = _NT.sub(_nt, text)
    return _BARE_RE.sub(lambda m: _BARE[m.group(1).lower()], out)


def tantivy_analyzer():
    """The analyzer for tantivy (register it on the index under :data:`ANALYZER_NAME`)."""
    import tantivy as t

    return (t.TextAnalyzerBuilder(t.Tokenizer.simple())
            .filter(t.Filter.remove_long(MAX_TOKEN))
            .filter(t.Filter.lowercase())
            .filter(t.Filter.custom_stopword(list(STOP_WORDS)))
            .filter(t.Filter.stemmer("english"))
            .build())


def opensearch_analysis() -> dict[str, Any]:
    """``settings.index.analysis`` for OpenSearch defining :data:`ANALYZER_NAME`."""
    return {
        "tokenizer": {"shopsense_words": {"type": "pattern", "pattern": "[^\\p{L}\\p{N}]+"}},
        "filter": {
            # RemoveLongFilter(40) keeps tokens shorter than 40 bytes
            "shopsense_length": {"type": "length", "min": 0, "max": MAX_TOKEN - 1},
            "shopsense_stop": {"type": "stop", "stopwords": list(STOP_WORDS)},
            "shopsense_stem": {"type": "stemmer", "language": "porter2"},
        },
        "analyzer": {ANALYZER_NAME: {
            "type": "custom", "tokenizer": "shopsense_words",
            "filter": ["shopsense_length", "lowercase", "shopsense_stop", "shopsense_stem"],
        }},
    }
