"""Datasets of reviews in an object store, published atomically.

Layout of a dataset at ``<prefix>`` (any :class:`~shopsense.store.ObjectStore`)::

    <prefix>/manifest.json                 DatasetManifest; its presence IS the dataset
    <prefix>/reviews-<digest>.jsonl        the reviews, one Review JSON per line (UTF-8, "\\n")
    <prefix>/images/<sha256>.<ext>         image bytes, content-addressed

The reviews file
    ``reviews.jsonl`` is the *logical* name of a dataset's reviews; the physical object that
    :func:`write_dataset` writes is ``reviews-<digest>.jsonl`` where ``digest`` is the sha256 of
    its bytes and equals ``manifest.digest``. The manifest therefore points at its reviews file
    without an extra field, and S3 (which has no rename) can publish a new version by writing a
    new immutable object and flipping ``manifest.json``. :func:`write_dataset` never writes a
    plain ``reviews.jsonl`` (a copy next to the versioned file could only lag the manifest).
    :func:`read_dataset` reads ``reviews-<manifest.digest>.jsonl`` and, only if that is absent,
    falls back to a plain ``reviews.jsonl`` (a dataset assembled by hand or by another tool);
    either way the bytes must hash to ``manifest.digest``. Use :func:`reviews_key` /
    :func:`read_dataset`; do not open ``reviews.jsonl`` directly.

Atomicity, from a reader's point of view
    1. Reviews stream into a local temporary file (hashing, counting, validating). An exception
       from the iterator, a bad review or a duplicate id stops here: the store is untouched.
    2. The reviews file and new images are uploaded under a staging prefix at the store root,
       ``.staging/<uuid>/…`` (outside every dataset prefix, so ``store.list(prefix)`` never shows
       it), then moved into ``<prefix>/`` (rename on LocalStore, copy+delete on S3). Moved objects
       have names the current manifest does not reference, so the published dataset is unaffected;
       if anything fails before the flip they are deleted again and the staging prefix is removed.
    3. ``manifest.json`` is written last, in one atomic put: that is the publish.
    4. Afterwards old ``reviews-*.jsonl`` files are garbage collected, keeping the new one and the
       one the replaced manifest referenced (so a reader that fetched the previous manifest a
       moment ago can still read its reviews). Images are content-addressed and never removed
       (an old reader may still use them); ``image_count`` counts the images of this version.

One writer per prefix at a time: two concurrent writers each publish atomically, but one's
garbage collection may remove the other's reviews file. A prefix without ``manifest.json`` is absent (:class:`DatasetNotFound`). A process killed with
SIGKILL during step 2 can leave ``.staging/<uuid>/`` behind; it is never visible inside a dataset
and ``store.delete_prefix(".staging")`` removes it when no write is running.

JSON lines are written with U+0085, U+2028 and U+2029 escaped so that readers splitting on any
Unicode line break still see one review per line (the UCI imdb file contains U+0085).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from shopsense.errors import DataError
from shopsense.schemas import DatasetManifest, LabelCounts, Review
from shopsense.store import ObjectNotFound, ObjectStore, check_key, join_key

__all__ = [
    "MANIFEST",
    "REVIEWS",
    "IMAGES_DIR",
    "STAGING",
    "DatasetNotFound",
    "write_dataset",
    "read_dataset",
    "read_manifest",
    "dataset_exists",
    "reviews_key",
    "image_key",
    "image_ext",
    "review_line",
    "parse_review_line",
    "write_jsonl",
    "read_jsonl",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REVIEWS = "reviews.jsonl"
IMAGES_DIR = "images"
STAGING = ".staging"
UNKNOWN_CATEGORY = "unknown"

_REVIEWS_VERSIONED = re.compile(r"^reviews-[0-9a-f]{64}\.jsonl$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_PROGRESS_MIN = 1000  # show a progress bar only when the input is (or may be) this large


def category_of(review: Review) -> str:
    """The review's product category, ``unknown`` without one (as manifests count them)."""
    return (review.product.category if review.product else None) or UNKNOWN_CATEGORY


class DatasetNotFound(DataError):
    """No ``manifest.json`` under the prefix: there is no (published) dataset there."""


class DatasetURIError(DataError, ValueError):
    """A dataset URI that is not ``file:///dir/prefix`` or ``s3://bucket/prefix``."""


def split_dataset_uri(uri: str) -> tuple[str, str]:
    """``file:///dir/prefix`` or ``s3://bucket/a/prefix`` → (store root URI, prefix)."""
    root, _, prefix = str(uri).strip().rstrip("/").rpartition("/")
    if not prefix or "://" not in root or root.endswith(":/"):
        raise DatasetURIError(f"dataset URI must look like file:///dir/prefix or "
                              f"s3://bucket/prefix, got {uri!r}")
    return root, prefix


def open_dataset_uri(uri: str, settings: Any = None) -> tuple[ObjectStore, str]:
    """The store and the prefix a dataset URI names (see :func:`split_dataset_uri`)."""
    from shopsense.store import open_store

    root, prefix = split_dataset_uri(uri)
    try:
        return open_store(root, settings), prefix
    except ValueError as exc:
        raise DatasetURIError(str(exc)) from exc


# --------------------------------------------------------------------------------- lines


def review_line(review: Review) -> bytes:
    """One Review as one JSON line (UTF-8, ending in ``\\n``, no raw Unicode line breaks)."""
    text = review.model_dump_json()
    for char, escaped in _LINE_BREAKS.items():
        if char in text:  # only possible inside JSON strings, where the escape is equivalent
            text = text.replace(char, escaped)
    return text.encode("utf-8") + b"\n"


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "review"
            parts.append(f"{loc}: {err['msg']}")
        return "invalid review: " + "; ".join(parts)
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def parse_review_line(line: bytes | str, where: str = "<line>") -> Review:
    """Parse one JSON line into a Review; :class:`DataError` ``"<where>: <one-line message>"``."""
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        return Review.model_validate(json.loads(line))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError, UnicodeDecodeError ⊂ ValueError
        raise DataError(f"{where}: {_one_line(exc)}") from exc


def _iter_lines(data: bytes, where: str) -> Iterator[Review]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield parse_review_line(raw, f"{where}:{lineno}")


# ---------------------------------------------------------------------------- plain JSONL


def write_jsonl(path: str | os.PathLike[str], reviews: Iterable[Review]) -> int:
    """Write reviews to a local JSONL file (atomically: temp file + ``os.replace``); the count."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for review in _progress(reviews, f"write {target.name}"):
                f.write(review_line(_as_review(review)))
                count += 1
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Review]:
    """Reviews from a local JSONL file, lazily; errors name ``file:line``. Blank lines skipped."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    with f:
        for lineno, raw in enumerate(f, start=1):  # binary iteration splits on b"\n" only
            if raw.strip():
                yield parse_review_line(raw, f"{path}:{lineno}")


# ------------------------------------------------------------------------------- helpers


def _as_review(item: Any) -> Review:
    if isinstance(item, Review):
        return item
    try:
        return Review.model_validate(item)
    except ValidationError as exc:
        raise DataError(_one_line(exc)) from exc


def _progress(items: Iterable[Any], desc: str) -> Iterable[Any]:
    total = len(items) if hasattr(items, "__len__") else None
    if total is not None and total < _PROGRESS_MIN:
        return items
    # disable=None: tqdm turns itself off when stderr is not a terminal (CI, logs)
    return tqdm(items, desc=desc, total=total, unit="review", disable=None, leave=False)


def image_ext(data: bytes) -> str:
    """File extension for image bytes, from their magic number (``bin`` when unknown)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    return "bin"


_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "bin": "application/octet-stream",
}


def image_key(sha256: str, data: bytes) -> str:
    """Dataset-relative key of an image: ``images/<sha256>.<ext>``."""
    return f"{IMAGES_DIR}/{sha256}.{image_ext(data)}"


def reviews_key(manifest: DatasetManifest) -> str:
    """Dataset-relative key of the reviews file a manifest points at."""
    return f"reviews-{manifest.digest}.jsonl"


def _dataset_prefix(prefix: str) -> str:
    prefix = prefix.strip("/") if isinstance(prefix, str) else prefix
    check_key(prefix)  # a dataset needs a prefix; ValueError for unsafe ones
    if prefix.split("/")[0] == STAGING:
        raise ValueError(f"dataset prefix must not be inside {STAGING}/: {prefix!r}")
    return prefix


def _is_relative_ref(uri: str) -> bool:
    return "://" not in uri and not uri.startswith(("/", "data:"))


# ------------------------------------------------------------------------------ manifest


def read_manifest(store: ObjectStore, prefix: str) -> DatasetManifest:
    """The published manifest at ``prefix``; :class:`DatasetNotFound` if there is none."""
    prefix = _dataset_prefix(prefix)
    key = join_key(prefix, MANIFEST)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound as exc:
        raise DatasetNotFound(f"no dataset at {store.uri_for(prefix)} (no {MANIFEST})") from exc
    try:
        return DatasetManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise DataError(f"{store.uri_for(key)}: {_one_line(exc)}") from exc


def dataset_exists(store: ObjectStore, prefix: str) -> bool:
    return store.exists(join_key(_dataset_prefix(prefix), MANIFEST))


# --------------------------------------------------------------------------------- write


def write_dataset(
    store: ObjectStore,
    prefix: str,
    reviews: Iterable[Review],
    *,
    name: str,
    provenance: list[dict[str, Any]] | dict[str, Any] | None = None,
    images: dict[str, bytes] | None = None,
) -> DatasetManifest:
    """Write and publish a dataset at ``prefix``; returns its manifest (see module docstring).

    ``images`` maps sha256 hex → bytes; each is stored at ``images/<sha256>.<ext>``. A review's
    ImageRef with a dataset-relative ``uri`` (``images/…``) must name an image given here or
    already stored under the prefix. Review ids must be unique within the dataset.
    """
    prefix = _dataset_prefix(prefix)
    images = dict(images or {})
    if isinstance(provenance, dict):
        provenance = [provenance]
    image_keys: dict[str, str] = {}
    for sha, data in images.items():
        if not (isinstance(sha, str) and _SHA256.match(sha)):
            raise DataError(f"image key must be a lowercase sha256 hex digest, got {sha!r}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise DataError(f"image {sha[:12]}…: bytes hash to {actual[:12]}…, not to its key")
        image_keys[sha] = image_key(sha, data)

    labels = LabelCounts()
    by_category: dict[str, LabelCounts] = {}
    seen_ids: set[str] = set()
    refs: set[str] = set()
    digest = hashlib.sha256()
    count = 0
    with tempfile.TemporaryDirectory(prefix="shopsense-dataset-") as tmpdir:
        local = Path(tmpdir) / REVIEWS
        with open(local, "wb") as f:  # 1. stream to a local file; nothing in the store yet
            for item in _progress(reviews, f"write {name}"):
                review = _as_review(item)
                if review.id in seen_ids:
                    raise DataError(f"duplicate review id {review.id} in dataset {name!r}")
                seen_ids.add(review.id)
                line = review_line(review)
                f.write(line)
                digest.update(line)
                count += 1
                field = review.label or "unlabelled"
                cat = by_category.setdefault(category_of(review), LabelCounts())
                setattr(labels, field, getattr(labels, field) + 1)
                setattr(cat, field, getattr(cat, field) + 1)
                refs.update(img.uri for img in review.images if _is_relative_ref(img.uri))

        known = set(image_keys.values())
        missing = sorted(r for r in refs if r not in known and not store.exists(join_key(prefix, r)))
        if missing:
            raise DataError(
                f"{len(missing)} image reference(s) point at no image in the dataset, "
                f"e.g. {missing[0]!r}"
            )

        manifest = DatasetManifest(
            name=name,
            count=count,
            image_count=len(images),
            labels=labels,
            labels_by_category=dict(sorted(by_category.items())),
            provenance=list(provenance or []),
            digest=digest.hexdigest(),
        )
        try:
            previous: DatasetManifest | None = read_manifest(store, prefix)
        except DataError:
            previous = None
        _publish(store, prefix, local, manifest, images, image_keys)

    _collect_garbage(store, prefix, manifest, previous)
    return manifest


def _publish(
    store: ObjectStore,
    prefix: str,
    local: Path,
    manifest: DatasetManifest,
    images: dict[str, bytes],
    image_keys: dict[str, str],
) -> None:
    staging = join_key(STAGING, uuid.uuid4().hex)
    moved: list[str] = []  # final keys created by this write, removed again on failure
    try:
        # 2. upload into staging, then move next to the published dataset (unreferenced names)
        staged: list[tuple[str, str]] = []
        for sha, key in image_keys.items():
            final = join_key(prefix, key)
            if store.exists(final):  # content-addressed: already there means identical
                continue
            store.put_bytes(
                join_key(staging, key), images[sha], content_type=_CONTENT_TYPES[key.rsplit(".", 1)[1]]
            )
            staged.append((key, final))
        rkey = reviews_key(manifest)
        rfinal = join_key(prefix, rkey)
        if not store.exists(rfinal):
            store.put_file(join_key(staging, rkey), local, content_type="application/x-ndjson")
            staged.append((rkey, rfinal))
        for key, final in staged:
            store.move(join_key(staging, key), final)
            moved.append(final)
        # 3. the flip: one atomic put
        store.put_bytes(
            join_key(prefix, MANIFEST),
            manifest.model_dump_json(indent=2).encode() + b"\n",
            content_type="application/json",
        )
    except BaseException:
        for final in moved:
            with contextlib.suppress(Exception):
                store.delete(final)
        raise
    finally:
        try:
            store.delete_prefix(staging)
        except Exception as exc:  # pragma: no cover - best effort
            log.warning("could not remove staging prefix %s: %s", staging, exc)


def _collect_garbage(
    store: ObjectStore, prefix: str, manifest: DatasetManifest, previous: DatasetManifest | None
) -> None:
    """4. Remove reviews files no longer referenced (keeping the previous version's)."""
    keep = {reviews_key(manifest)} | ({reviews_key(previous)} if previous else set())
    try:
        for key in store.list(prefix):
            rel = key[len(prefix) + 1 :]
            if _REVIEWS_VERSIONED.match(rel) and rel not in keep:
                store.delete(key)
    except Exception as exc:  # the dataset is published; leftovers are harmless
        log.warning("garbage collection under %s failed: %s", prefix, exc)


# ---------------------------------------------------------------------------------- read


def dataset_images(store: ObjectStore, prefix: str, reviews: Iterable[Review]
                   ) -> dict[str, bytes]:
    """The bytes of the reviews' photos stored in the dataset at ``prefix`` (sha256 -> bytes),
    to carry them into another dataset with :func:`write_dataset`'s ``images``."""
    return {ref.sha256: store.get_bytes(join_key(prefix, ref.uri))
            for r in reviews for ref in r.images if ref.sha256 and _is_relative_ref(ref.uri)}


def read_dataset(store: ObjectStore, prefix: str) -> tuple[DatasetManifest, Iterator[Review]]:
    """The manifest and the reviews of the dataset at ``prefix``.

    The reviews file is fetched and its sha256 checked against ``manifest.digest`` before this
    returns (:class:`DataError` on mismatch); the iterator then parses it line by line (a bad
    line raises :class:`DataError` naming ``uri:line``). The file is held in memory.
    """
    manifest = read_manifest(store, prefix)
    prefix = _dataset_prefix(prefix)
    data = None
    for rel in (reviews_key(manifest), REVIEWS):
        key = join_key(prefix, rel)
        try:
            data = store.get_bytes(key)
            break
        except ObjectNotFound:
            continue
    if data is None:
        raise DataError(
            f"dataset {store.uri_for(prefix)}: manifest present but neither "
            f"{reviews_key(manifest)} nor {REVIEWS} exists"
        )
    where = store.uri_for(key)
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.digest:
        raise DataError(
            f"{where}: digest mismatch: manifest says {manifest.digest[:16]}…, "
            f"file hashes to {actual[:16]}… (modified or truncated)"
        )
    return manifest, _checked_count(_iter_lines(data, where), manifest.count, where)


def _checked_count(reviews: Iterator[Review], expected: int, where: str) -> Iterator[Review]:
    n = 0
    for review in reviews:
        n += 1
        yield review
    if n != expected:
        raise DataError(f"{where}: {n} reviews but the manifest says {expected}")
