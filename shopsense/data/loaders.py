"""Import layer: the published review sets in the shared data dir → :class:`Review` records.

Every loader reads the files exactly as published (see ``<data_dir>/README.md``), never copies
them, and returns reviews that are reproducible: ``source.kind == "imported"``, ``source.name``
is the set name (``uci-amazon``, ``blitzer-books``, ``huliu`` …), the id is
``review_id(set name, source id)`` with a source id taken from the file (unique id, line number or
review/sentence position), and ``created_at`` is the review's date when the file has one, else
:data:`EPOCH` (1970-01-01 UTC) so that two loads give identical records.

Sets (:data:`SET_NAMES`, :func:`load_set`)

=====================  ==============================================================  =========
name                   unit, label                                                     category
=====================  ==============================================================  =========
uci-amazon, uci-imdb   one sentence per line, ``1`` positive / ``0`` negative          cell phones / movies
blitzer-<category>     one Amazon review, label from ``<rating>`` (1-2 neg, 4-5 pos)   ``<product_type>``
huliu                  one sentence; label from its aspect annotations (below)         per product
huliu-reviews          one review (title + sentences); label from the ``[+]/[-]``      per product
                       prefix of its ``[t]`` line
=====================  ==============================================================  =========

``huliu`` is the only source of ``neutral`` labels: a sentence without any polarity annotation
(``##text`` or only ``[u]``/``[p]``/``[s]``/``[cc]``/``[cs]`` tags) is labelled neutral. Note that
"no annotated opinion on a product feature" is not exactly "neutral sentiment" (e.g. "i love it
!" about nothing in particular may carry no annotation). An annotated sentence is labelled by the
sign of the sum of its signed strengths (``picture[+2], flash[-1]`` → +1 → positive); a sentence
whose strengths cancel (sum 0) is left unlabelled (``label=None``) rather than called neutral.

Cranfield is a retrieval collection, not reviews: :func:`load_cranfield_beir` converts it to the
BEIR layout for retrieval tests (see its docstring for the gain mapping).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from shopsense.errors import DataError
from shopsense.schemas import Label, Product, Review, Source, rating_to_label

__all__ = [
    "EPOCH",
    "SET_NAMES",
    "load_set",
    "load_uci",
    "load_blitzer",
    "load_huliu",
    "load_huliu_reviews",
    "iter_cranfield_docs",
    "iter_cranfield_queries",
    "iter_cranfield_qrels",
    "load_cranfield_beir",
    "CRANFIELD_GAIN",
    "to_eval_records",
]

#: created_at of records whose file gives no date (keeps records reproducible)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

UCI_DIR = "uci-sentiment-labelled-sentences"
BLITZER_DIR = "blitzer-multi-domain-sentiment"
HULIU_DIR = "hu-liu-customer-reviews"
CRANFIELD_DIR = "cranfield"

_UCI_FILES: dict[str, tuple[str, str]] = {
    "amazon": ("amazon_cells_labelled.txt", "cell phones"),
    "imdb": ("imdb_labelled.txt", "movies"),
    "yelp": ("yelp_labelled.txt", "restaurants"),  # not in this copy; loaded if present
}

_HULIU_CATEGORIES = {
    "canong3": "digital cameras",
    "nikon": "digital cameras",
    "nokia6610": "cell phones",
    "dvd": "dvd players",
}


def _data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is None:
        from shopsense.settings import get_settings

        data_dir = get_settings().data_dir
    return Path(data_dir)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file (is the shared data dir right?)") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 at byte {exc.start}") from exc


def _imported(set_name: str, source_id: str) -> Source:
    return Source(kind="imported", name=set_name, source_id=source_id)


# ------------------------------------------------------------------------------------- UCI


def load_uci(
    data_dir: str | os.PathLike[str] | None,
    which: Literal["amazon", "imdb", "yelp"],
) -> list[Review]:
    """UCI sentiment labelled sentences (Kotzias et al. 2015): one sentence per line.

    Lines are split on ``"\\n"`` only (the imdb file holds U+0085 inside sentences) and each line
    with ``rsplit("\\t", 1)`` (no csv: the imdb file has unbalanced quotes). The sentence is
    stripped of surrounding whitespace; source id = 1-based line number. ``yelp`` is loaded when
    ``yelp_labelled.txt`` is present (it is not in the shared copy).
    """
    if which not in _UCI_FILES:
        raise DataError(f"unknown UCI file {which!r}; choose one of {sorted(_UCI_FILES)}")
    filename, category = _UCI_FILES[which]
    path = _data_dir(data_dir) / UCI_DIR / filename
    text = _read_text(path)
    set_name = f"uci-{which}"
    product = Product(id=f"{set_name}:unknown", category=category)
    reviews = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.rsplit("\t", 1)
        if len(parts) != 2 or parts[1].strip() not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: expected 'sentence<TAB>0|1'")
        sentence, score = parts[0].strip(), parts[1].strip()
        reviews.append(
            Review.make(
                source=_imported(set_name, str(lineno)),
                text=sentence,
                label="positive" if score == "1" else "negative",
                label_source="human",
                product=product,
                created_at=EPOCH,
            )
        )
    return reviews


# --------------------------------------------------------------------------------- Blitzer

_BLITZER_REVIEW = re.compile(r"<review>(.*?)</review>", re.S)
_BLITZER_FIELD = re.compile(r"<([a-z_]+)>\n?(.*?)\n?</\1>", re.S)


def _blitzer_date(value: str) -> datetime:
    try:
        return datetime.strptime(value.strip(), "%B %d, %Y").replace(tzinfo=timezone.utc)
    except ValueError:
        return EPOCH


def load_blitzer(data_dir: str | os.PathLike[str] | None, category: str) -> list[Review]:
    """Blitzer et al. 2007 multi-domain Amazon reviews of one category folder.

    Parsed with regular expressions (the files are not well-formed XML: raw ``&``), fields
    html-unescaped. ``negative.review`` then ``positive.review``, in file order. Label from
    ``<rating>`` (1-2 negative, 4-5 positive; the file name only if the rating is unreadable);
    product = ASIN, product name, ``<product_type>``; ``created_at`` from ``<date>``
    ("July 1, 2006"; EPOCH when empty); source id = ``<unique_id>``.
    """
    root = _data_dir(data_dir) / BLITZER_DIR
    folder = root / category
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"{folder}: no such Blitzer category folder (present: {present})")
    set_name = f"blitzer-{category}"
    reviews = []
    for polarity in ("negative", "positive"):
        path = folder / f"{polarity}.review"
        text = _read_text(path)
        blocks = _BLITZER_REVIEW.findall(text)
        if len(blocks) != text.count("<review>"):
            raise DataError(f"{path}: {text.count('<review>')} <review> tags, {len(blocks)} closed")
        for n, block in enumerate(blocks, start=1):
            f = {tag: html.unescape(value).strip() for tag, value in _BLITZER_FIELD.findall(block)}
            where = f"{path}: review {n}"
            if not f.get("review_text"):
                raise DataError(f"{where}: no <review_text>")
            try:
                rating: float | None = float(f.get("rating", ""))
                if not 1 <= rating <= 5:
                    rating = None
            except ValueError:
                rating = None
            label: Label | None = rating_to_label(rating) if rating is not None else polarity  # type: ignore[assignment]
            source_id = f.get("unique_id") or f"{polarity}:{n}"
            reviews.append(
                Review.make(
                    source=_imported(set_name, source_id),
                    text=f["review_text"],
                    title=f.get("title") or None,
                    rating=rating,
                    label=label,
                    label_source="rating",
                    product=Product(
                        id=f.get("asin") or f"{set_name}:unknown",
                        name=f.get("product_name") or None,
                        category=f.get("product_type") or category,
                    ),
                    created_at=_blitzer_date(f.get("date", "")),
                )
            )
    return reviews


# ------------------------------------------------------------------------------- Hu & Liu

_HL_TITLE = re.compile(r"^(?:\[([+-])\])?\[t\](.*)$")
# strengths as published, tolerating the two typos "[+1}" and "{+1]" in CanonG3.txt
_HL_POLARITY = re.compile(r"[\[{]([+-])(\d)[\]}]")
_HL_TAG = re.compile(r"\[(?:u|p|s|cc|cs)\]")


@dataclass
class _HLSentence:
    lineno: int
    annotation: str
    text: str

    @property
    def strengths(self) -> list[int]:
        return [int(n) if s == "+" else -int(n) for s, n in _HL_POLARITY.findall(self.annotation)]

    @property
    def label(self) -> Label | None:
        values = self.strengths
        if not values:
            return "neutral"
        total = sum(values)
        return "positive" if total > 0 else "negative" if total < 0 else None


@dataclass
class _HLReview:
    index: int
    title: str | None
    polarity: str | None  # "+", "-" or None (one DVD review has no prefix)
    sentences: list[_HLSentence] = field(default_factory=list)


@dataclass
class _HLFile:
    stem: str
    name: str
    category: str | None
    reviews: list[_HLReview]


def _split_sentence(line: str) -> tuple[str, str]:
    if "##" in line:
        annotation, text = line.split("##", 1)
        return annotation, text
    if "#" in line:  # one DVD.txt line uses a single '#' after its annotations
        annotation, text = line.split("#", 1)
        if _HL_POLARITY.search(annotation) or _HL_TAG.search(annotation) or not annotation.strip():
            return annotation, text
    return "", line


def _parse_huliu(path: Path) -> _HLFile:
    lines = _read_text(path).split("\n")
    name = None
    reviews: list[_HLReview] = []
    in_header = True
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if in_header:
            if line.startswith("*"):
                m = re.match(r"^\*\s*Product name:\s*(.*?)\s*$", line)
                if m:
                    name = m.group(1)
                continue
            if not line.strip():
                continue
            in_header = False
        if not line.strip():
            continue
        m = _HL_TITLE.match(line)
        if m:
            reviews.append(_HLReview(len(reviews) + 1, m.group(2).strip() or None, m.group(1)))
            continue
        annotation, text = _split_sentence(line)
        if not text.strip():
            continue
        if not reviews:  # sentences before any [t]: an untitled review (not seen in this copy)
            reviews.append(_HLReview(1, None, None))
        reviews[-1].sentences.append(_HLSentence(lineno, annotation.strip(), text.strip()))
    stem = path.stem
    return _HLFile(stem, name or stem, _HULIU_CATEGORIES.get(stem.lower()), reviews)


def _huliu_files(data_dir: str | os.PathLike[str] | None, product: str | None) -> list[_HLFile]:
    folder = _data_dir(data_dir) / HULIU_DIR
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (is the shared data dir right?)")
    paths = sorted(p for p in folder.glob("*.txt") if p.name.lower() != "readme.txt")
    if not paths:
        raise DataError(f"{folder}: no review files")
    files = [_parse_huliu(p) for p in paths]
    if product is None:
        return files
    wanted = product.lower()
    chosen = [f for f in files if wanted in (f.stem.lower(), f.name.lower())]
    if not chosen:
        raise DataError(
            f"unknown Hu & Liu product {product!r}; choose one of {[f.stem for f in files]}"
        )
    return chosen


def _huliu_product(f: _HLFile) -> Product:
    return Product(id=f"huliu:{f.stem}", name=f.name, category=f.category)


def load_huliu(data_dir: str | os.PathLike[str] | None, product: str | None = None) -> list[Review]:
    """Hu & Liu 2004 sentences, one Review per annotated sentence line (set ``huliu``).

    ``product`` selects one file by stem (``"CanonG3"``) or product name (``"Canon G3"``).
    Label: see the module docstring (neutral = no polarity annotation; sum 0 → unlabelled).
    Source id ``<stem>:<review>:<sentence>`` (1-based positions).
    """
    out = []
    for f in _huliu_files(data_dir, product):
        prod = _huliu_product(f)
        for review in f.reviews:
            for si, s in enumerate(review.sentences, start=1):
                out.append(
                    Review.make(
                        source=_imported("huliu", f"{f.stem}:{review.index}:{si}"),
                        text=s.text,
                        label=s.label,
                        label_source="human" if s.label else None,
                        product=prod,
                        created_at=EPOCH,
                    )
                )
    return out


def load_huliu_reviews(
    data_dir: str | os.PathLike[str] | None, product: str | None = None
) -> list[Review]:
    """Hu & Liu 2004 whole reviews (set ``huliu-reviews``): title + sentences joined by spaces.

    Label = the review-level ``[+]``/``[-]`` prefix of the ``[t]`` line (this copy's addition);
    ``None`` for the one DVD review without a prefix. Source id ``<stem>:<review>``.
    """
    out = []
    for f in _huliu_files(data_dir, product):
        prod = _huliu_product(f)
        for review in f.reviews:
            text = " ".join(s.text for s in review.sentences)
            if not text:
                continue
            label: Label | None = {"+": "positive", "-": "negative"}.get(review.polarity or "")  # type: ignore[assignment]
            out.append(
                Review.make(
                    source=_imported("huliu-reviews", f"{f.stem}:{review.index}"),
                    text=text,
                    title=review.title,
                    label=label,
                    label_source="human" if label else None,
                    product=prod,
                    created_at=EPOCH,
                )
            )
    return out


# ------------------------------------------------------------------------------- Cranfield

#: Cleverdon's codes (cranqrel.readme: 1 = complete answer … 4 = minimum interest) → BEIR gains
CRANFIELD_GAIN: dict[int, int] = {1: 4, 2: 3, 3: 2, 4: 1}

_SMART_ID = re.compile(r"^\.I\s+(\d+)\s*$")
_SMART_FIELD = re.compile(r"^\.([TABW])\s*$")


def _smart_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``.I n`` records of a SMART file → (n, {field: whitespace-normalised text}).

    Once ``.W`` (the body, always last) has started, further marker lines belong to the body and
    are dropped (cran.all.1400 doc 240 has stray ``.A``/``.B`` lines and docs 576/578 a second
    ``.W`` inside their abstracts).
    """
    current: tuple[int, dict[str, list[str]]] | None = None
    active: str | None = None

    def done(rec: tuple[int, dict[str, list[str]]]) -> tuple[int, dict[str, str]]:
        return rec[0], {k: " ".join(" ".join(v).split()) for k, v in rec[1].items()}

    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        m = _SMART_ID.match(line)
        if m:
            if current is not None:
                yield done(current)
            current, active = (int(m.group(1)), {}), None
            continue
        if current is None:
            if line.strip():
                raise DataError(f"{path}:{lineno}: text before the first .I line")
            continue
        m = _SMART_FIELD.match(line)
        if m and "W" not in current[1]:
            active = m.group(1)
            current[1].setdefault(active, [])
            continue
        if m:  # a marker inside the body: drop the marker, keep the text in .W
            continue
        if active is not None:
            current[1][active].append(line)
    if current is not None:
        yield done(current)


def iter_cranfield_docs(data_dir: str | os.PathLike[str] | None) -> Iterator[dict[str, str]]:
    """Cranfield documents: ``{"_id", "title", "text", "author", "bibliography"}`` (1400).

    ``_id`` is the ``.I`` number as a decimal string; ``text`` is the ``.W`` abstract (which
    repeats the title in its first line, as published). Two docs (471, 995) are empty.
    """
    path = _data_dir(data_dir) / CRANFIELD_DIR / "cran.all.1400"
    for number, fields in _smart_records(path):
        yield {
            "_id": str(number),
            "title": fields.get("T", ""),
            "text": fields.get("W", ""),
            "author": fields.get("A", ""),
            "bibliography": fields.get("B", ""),
        }


def iter_cranfield_queries(data_dir: str | os.PathLike[str] | None) -> Iterator[dict[str, str]]:
    """Cranfield queries ``{"_id", "text"}``: the n-th query of cran.qry has ``_id`` ``str(n)``.

    cran.qry numbers them 001..365 with gaps; cranqrel uses 1..225 in file order.
    """
    path = _data_dir(data_dir) / CRANFIELD_DIR / "cran.qry"
    for n, (_number, fields) in enumerate(_smart_records(path), start=1):
        yield {"_id": str(n), "text": fields.get("W", "")}


def iter_cranfield_qrels(data_dir: str | os.PathLike[str] | None) -> Iterator[tuple[str, str, int]]:
    """``(query_id, doc_id, gain)`` from cranqrel with :data:`CRANFIELD_GAIN`; -1 dropped."""
    path = _data_dir(data_dir) / CRANFIELD_DIR / "cranqrel"
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            qid, did, code = (int(p) for p in parts)
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: expected 'query doc code'") from exc
        if code == -1 or code == 5:  # no interest
            continue
        if code not in CRANFIELD_GAIN:
            raise DataError(f"{path}:{lineno}: unknown relevance code {code}")
        yield str(qid), str(did), CRANFIELD_GAIN[code]


def _write_lines(path: Path, lines: Iterable[str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def load_cranfield_beir(
    data_dir: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Convert Cranfield-1400 to the BEIR layout under ``out_dir``; returns counts and paths.

    Writes ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``;
    the n-th query of cran.qry is ``"n"``) and ``qrels/test.tsv`` (header
    ``query-id\\tcorpus-id\\tscore``).

    Gain mapping (higher = more relevant, as nDCG expects): code 1 "complete answer" → 4,
    2 "high degree of relevance" → 3, 3 "useful background" → 2, 4 "minimum interest" → 1,
    -1 (and 5) "no interest" → dropped. This follows cranqrel.readme (Cleverdon's definitions);
    some tools read the codes the other way round, so scores are not comparable with theirs.
    """
    out = Path(out_dir)
    docs = list(iter_cranfield_docs(data_dir))
    queries = list(iter_cranfield_queries(data_dir))
    doc_ids = {d["_id"] for d in docs}
    query_ids = {q["_id"] for q in queries}
    qrels = list(iter_cranfield_qrels(data_dir))
    for qid, did, _ in qrels:
        if qid not in query_ids or did not in doc_ids:
            raise DataError(f"cranqrel: judgement ({qid}, {did}) names an unknown query or doc")
    n_docs = _write_lines(
        out / "corpus.jsonl",
        (json.dumps({"_id": d["_id"], "title": d["title"], "text": d["text"]}) for d in docs),
    )
    n_queries = _write_lines(out / "queries.jsonl", (json.dumps(q) for q in queries))
    n_qrels = _write_lines(
        out / "qrels" / "test.tsv",
        ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{g}" for q, d, g in qrels)],
    ) - 1
    return {
        "corpus": n_docs,
        "queries": n_queries,
        "qrels": n_qrels,
        "queries_judged": len({q for q, _, _ in qrels}),
        "out_dir": str(out),
    }


# -------------------------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[[Path | None], list[Review]]] = {
    "uci-amazon": lambda d: load_uci(d, "amazon"),
    "uci-imdb": lambda d: load_uci(d, "imdb"),
    "blitzer-books": lambda d: load_blitzer(d, "books"),
    "blitzer-dvd": lambda d: load_blitzer(d, "dvd"),
    "blitzer-electronics": lambda d: load_blitzer(d, "electronics"),
    "huliu": lambda d: load_huliu(d),
    "huliu-reviews": lambda d: load_huliu_reviews(d),
}

#: names accepted by :func:`load_set`
SET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load_set(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Review]:
    """All reviews of the named set (see :data:`SET_NAMES`); data dir from settings if ``None``."""
    try:
        loader = _LOADERS[name]
    except KeyError as exc:
        raise DataError(f"unknown set {name!r}; valid names: {', '.join(SET_NAMES)}") from exc
    return loader(_data_dir(data_dir))


def to_eval_records(reviews: Iterable[Review]) -> list[dict[str, Any]]:
    """``{"text", "label", "category"}`` per labelled review (unlabelled ones are skipped)."""
    return [
        {
            "text": r.text,
            "label": r.label,
            "category": r.product.category if r.product else None,
        }
        for r in reviews
        if r.label is not None
    ]
