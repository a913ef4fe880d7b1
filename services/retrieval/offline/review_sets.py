"""Review-retrieval test collections derived from real review metadata, in BEIR layout.

The product shows "similar past reviews" next to each answer; this module turns the Blitzer et
al. 2007 Amazon reviews (``<SHOPSENSE_DATA_DIR>/blitzer-multi-domain-sentiment/<category>/``)
into a test collection for exactly that task, with judgements that come from the files'
metadata, not from any model:

Derivation (:func:`build_review_set`)
    1. Load every review of the chosen categories (``load_blitzer``: label from ``<rating>``,
       1-2 stars negative, 4-5 positive; product = the ASIN).
    2. Group reviews by (ASIN, label). Every group with at least two reviews yields one query:
       the group's review with the smallest review id (the id is a stable hash, so the choice is
       deterministic and unrelated to file order, star rating or length).
    3. Query text = that review's title and text (``shopsense.text.review_content``, what the
       indexes store of a review; what a user's new review looks like).
       Query reviews are removed from the corpus, so a query never retrieves itself.
    4. Relevant (gain 1) = the other reviews of the same ASIN with the same label. Reviews of
       the same ASIN with the other label are written as judged non-relevant (gain 0) unless
       ``other_label_gain`` > 0 (a graded variant).
    5. Corpus = every review of the categories except the query reviews (``_id`` = review id,
       ``title``, ``text``), i.e. mostly distractors from other products.

What the judgements miss: reviews of a *different* product can be just as similar (the same
complaint about another set of headphones, another edition of the same film — Blitzer lists
several ASINs per title); they count as non-relevant here, so absolute scores are low and
comparisons between modes are what the collection is for. Exact duplicate texts posted under
another ASIN also count as non-relevant.

Sizes on the shared copy: ``electronics`` 375 queries / 1,625 documents, ``dvd`` 215 / 1,785,
``books`` 31 / 1,969 (books has few repeated ASINs).

:func:`export_review_set` writes ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv``
(atomically: a temporary sibling folder renamed into place), so
``shopsense retrieval evaluate --beir DIR`` runs on it. CLI:
``shopsense retrieval review-set --category electronics --out DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.retrieval.offline.files import replace_dir
from shopsense.errors import DataError, InvalidInput
from shopsense.schemas import Review
from shopsense.text import review_content

__all__ = ["BLITZER_CATEGORIES", "ReviewSet", "build_review_set", "export_review_set",
           "load_review_set"]

BLITZER_CATEGORIES: tuple[str, ...] = ("books", "dvd", "electronics")


@dataclass
class ReviewSet:
    """A BEIR-style collection: corpus id -> {title, text}, query id -> text, qrels."""

    corpus: dict[str, dict[str, str]] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # gain 0 = judged, not relevant
    source: list[str] = field(default_factory=list)

    def relevant(self, qid: str) -> set[str]:
        return {d for d, g in self.qrels.get(qid, {}).items() if g > 0}

    def stats(self) -> dict[str, Any]:
        return {
            "corpus": len(self.corpus),
            "queries": len(self.queries),
            "relevant": sum(len(self.relevant(q)) for q in self.queries),
            "source": self.source,
        }


def build_review_set(reviews: Iterable[Review], *, other_label_gain: int = 0,
                     source: Sequence[str] = ()) -> ReviewSet:
    """The collection of the module docstring from ``reviews`` (any labelled reviews with a
    product id; unlabelled ones and ones without a product are corpus-only distractors)."""
    if other_label_gain < 0:
        raise InvalidInput(f"other_label_gain must be >= 0, got {other_label_gain}")
    reviews = list({r.id: r for r in reviews}.values())  # one record per review id
    groups: dict[tuple[str, str], list[Review]] = defaultdict(list)
    by_product: dict[str, list[Review]] = defaultdict(list)
    for r in reviews:
        if r.product is None or r.label is None:
            continue
        groups[(r.product.id, r.label)].append(r)
        by_product[r.product.id].append(r)
    query_reviews: dict[str, Review] = {}
    for members in groups.values():
        if len(members) >= 2:
            q = min(members, key=lambda r: r.id)
            query_reviews[q.id] = q
    out = ReviewSet(source=list(source))
    for r in reviews:
        if r.id not in query_reviews:
            out.corpus[r.id] = {"title": r.title or "", "text": r.text}
    for qid in sorted(query_reviews):
        q = query_reviews[qid]
        assert q.product is not None
        gains: dict[str, int] = {}
        for other in by_product[q.product.id]:
            if other.id == q.id or other.id in query_reviews:
                continue
            gains[other.id] = 1 if other.label == q.label else other_label_gain
        if any(g > 0 for g in gains.values()):
            out.queries[qid] = review_content(q.title, q.text)
            out.qrels[qid] = gains
    return out


def load_review_set(categories: Sequence[str] = ("electronics",), data_dir: str | Path | None = None,
                    *, other_label_gain: int = 0) -> ReviewSet:
    """:func:`build_review_set` over the Blitzer ``categories`` (one collection for all)."""
    from shopsense.data.loaders import load_blitzer

    if not categories:
        raise InvalidInput("give at least one Blitzer category")
    bad = [c for c in categories if c not in BLITZER_CATEGORIES]
    if bad:
        raise InvalidInput(f"unknown Blitzer category {bad[0]!r}; choose from "
                           f"{', '.join(BLITZER_CATEGORIES)}")
    reviews: list[Review] = []
    for c in categories:
        reviews += load_blitzer(data_dir, c)
    return build_review_set(reviews, other_label_gain=other_label_gain,
                            source=[f"blitzer-{c}" for c in categories])


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def export_review_set(out_dir: str | Path, categories: Sequence[str] = ("electronics",),
                      data_dir: str | Path | None = None, *, other_label_gain: int = 0,
                      overwrite: bool = True) -> dict[str, Any]:
    """Write the review set of ``categories`` to ``out_dir`` in BEIR layout (atomically);
    returns its counts and where it is."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: exists and is not empty")
    rs = load_review_set(categories, data_dir, other_label_gain=other_label_gain)
    if not rs.queries:
        raise DataError(f"blitzer {', '.join(categories)}: no product has two reviews with the "
                        "same label, so no query could be made")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a data folder is not
    try:
        _write_jsonl(tmp / "corpus.jsonl",
                     ({"_id": i, "title": d["title"], "text": d["text"]}
                      for i, d in rs.corpus.items()))
        _write_jsonl(tmp / "queries.jsonl", ({"_id": q, "text": t} for q, t in rs.queries.items()))
        (tmp / "qrels").mkdir()
        lines = ["query-id\tcorpus-id\tscore"]
        lines += [f"{q}\t{d}\t{g}" for q in rs.queries for d, g in sorted(rs.qrels[q].items())]
        (tmp / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(
            "Review-retrieval collection derived by services/retrieval/offline/review_sets.py from "
            f"{', '.join(rs.source)} (query = a review, relevant = other reviews of the same "
            "ASIN with the same label). See that module's docstring.\n", encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**rs.stats(), "out_dir": str(out)}
