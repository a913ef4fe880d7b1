"""Dataset format: write/read roundtrip, digest check, atomic publish — on both stores."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest

from shopsense.data.dataset import (
    MANIFEST,
    DatasetNotFound,
    dataset_exists,
    read_dataset,
    read_jsonl,
    reviews_key,
    write_dataset,
    write_jsonl,
)
from shopsense.errors import DataError
from shopsense.schemas import ImageRef, Product, Review, Source

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # the magic number is all image_ext looks at
JPG = b"\xff\xd8\xff\xe0" + b"\x01" * 40
PNG_SHA = hashlib.sha256(PNG).hexdigest()
JPG_SHA = hashlib.sha256(JPG).hexdigest()
T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def make_reviews(n: int, tag: str = "v1", with_images: bool = False) -> list[Review]:
    labels = ["positive", "negative", "neutral", None]
    cats = ["cell phones", "books", None]
    out = []
    for i in range(n):
        images = []
        if with_images and i % 2 == 0:
            images = [ImageRef(uri=f"images/{PNG_SHA}.png", sha256=PNG_SHA)]
        if with_images and i % 3 == 0:
            images.append(ImageRef(uri=f"images/{JPG_SHA}.jpg", sha256=JPG_SHA))
        cat = cats[i % 3]
        out.append(
            Review.make(
                source=Source(kind="synthetic", name="test", source_id=f"{tag}-{i}"),
                text=f"review {tag} {i}: great\u0085line\u2028sep",
                label=labels[i % 4],
                rating=(i % 5) + 1,
                images=images,
                product=Product(id=f"p{i % 7}", category=cat) if cat else None,
                created_at=T0,
            )
        )
    return out


def failing(reviews, after: int):
    for i, r in enumerate(reviews):
        if i == after:
            raise RuntimeError("source broke mid-stream")
        yield r


def test_roundtrip_with_images(store):
    reviews = make_reviews(10, with_images=True)
    manifest = write_dataset(
        store,
        "datasets/demo",
        iter(reviews),
        name="demo",
        provenance=[{"source": "unit test"}],
        images={PNG_SHA: PNG, JPG_SHA: JPG},
    )
    assert manifest.count == 10 and manifest.image_count == 2
    assert manifest.labels.model_dump() == {
        "negative": 3, "neutral": 2, "positive": 3, "unlabelled": 2
    }
    assert sum(c.positive + c.negative + c.neutral + c.unlabelled
               for c in manifest.labels_by_category.values()) == 10
    assert set(manifest.labels_by_category) == {"cell phones", "books", "unknown"}
    assert manifest.provenance == [{"source": "unit test"}]

    keys = store.list("datasets/demo")
    assert keys == sorted([
        "datasets/demo/manifest.json",
        f"datasets/demo/{reviews_key(manifest)}",
        f"datasets/demo/images/{PNG_SHA}.png",
        f"datasets/demo/images/{JPG_SHA}.jpg",
    ])
    assert store.get_bytes(f"datasets/demo/images/{PNG_SHA}.png") == PNG
    raw = store.get_bytes(f"datasets/demo/{reviews_key(manifest)}")
    assert hashlib.sha256(raw).hexdigest() == manifest.digest
    assert len(raw.decode().splitlines()) == 10  # U+0085/U+2028 escaped: any splitter agrees

    got_manifest, it = read_dataset(store, "datasets/demo")
    assert got_manifest == manifest
    assert list(it) == reviews
    assert dataset_exists(store, "datasets/demo")
    assert [k for k in store.list("") if k.startswith(".staging")] == []


def test_absent_dataset(store):
    assert not dataset_exists(store, "datasets/none")
    with pytest.raises(DatasetNotFound):
        read_dataset(store, "datasets/none")
    # reviews without a manifest are not a dataset
    store.put_bytes("datasets/half/reviews.jsonl", b"")
    with pytest.raises(DatasetNotFound):
        read_dataset(store, "datasets/half")


def test_digest_verification_detects_tampering(store):
    manifest = write_dataset(store, "ds", make_reviews(5), name="ds", provenance=[])
    key = f"ds/{reviews_key(manifest)}"
    raw = store.get_bytes(key)
    store.put_bytes(key, raw.replace(b"great", b"awful", 1))
    with pytest.raises(DataError, match="digest mismatch"):
        read_dataset(store, "ds")
    store.put_bytes(key, raw[: len(raw) // 2])  # truncated
    with pytest.raises(DataError, match="digest mismatch"):
        read_dataset(store, "ds")


def test_failure_mid_iteration_keeps_previous_dataset(store):
    v1 = make_reviews(6, "v1", with_images=True)
    m1 = write_dataset(store, "ds/main", v1, name="v1", provenance=[],
                       images={PNG_SHA: PNG, JPG_SHA: JPG})
    before = store.list("")

    with pytest.raises(RuntimeError, match="mid-stream"):
        write_dataset(store, "ds/main", failing(make_reviews(50, "v2"), after=20),
                      name="v2", provenance=[])

    assert store.list("") == before  # no staging junk, no half-written file anywhere
    manifest, it = read_dataset(store, "ds/main")
    assert manifest == m1
    assert list(it) == v1


def test_failure_while_publishing_rolls_back(store, monkeypatch):
    m1 = write_dataset(store, "ds", make_reviews(4, "v1"), name="v1", provenance=[])
    before = store.list("")
    real_move = store.move
    calls = []

    def flaky_move(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise ConnectionError("network dropped")
        real_move(src, dst)

    monkeypatch.setattr(store, "move", flaky_move)
    other = bytes(range(200))
    with pytest.raises(ConnectionError):
        write_dataset(store, "ds", make_reviews(8, "v2"), name="v2", provenance=[],
                      images={hashlib.sha256(other).hexdigest(): other})
    assert len(calls) == 2  # one image moved into place, then the reviews move failed
    assert store.list("") == before  # the moved image was removed again, staging is gone
    manifest, it = read_dataset(store, "ds")
    assert manifest == m1 and len(list(it)) == 4


def test_overwrite_keeps_previous_reviews_file_for_readers(store):
    m1 = write_dataset(store, "ds", make_reviews(3, "v1"), name="v1", provenance=[])
    m2 = write_dataset(store, "ds", make_reviews(4, "v2"), name="v2", provenance=[])
    files = {k.rsplit("/", 1)[1] for k in store.list("ds")}
    assert files == {MANIFEST, reviews_key(m1), reviews_key(m2)}
    m3 = write_dataset(store, "ds", make_reviews(5, "v3"), name="v3", provenance=[])
    files = {k.rsplit("/", 1)[1] for k in store.list("ds")}
    assert files == {MANIFEST, reviews_key(m2), reviews_key(m3)}
    manifest, it = read_dataset(store, "ds")
    assert manifest.name == "v3" and len(list(it)) == 5
    # writing identical content again is fine (same digest, same file)
    m4 = write_dataset(store, "ds", make_reviews(5, "v3"), name="v3", provenance=[])
    assert m4.digest == m3.digest
    assert len(list(read_dataset(store, "ds")[1])) == 5


def test_write_rejects_bad_input(store):
    dup = make_reviews(3) + make_reviews(1)
    with pytest.raises(DataError, match="duplicate review id"):
        write_dataset(store, "ds", dup, name="dup", provenance=[])
    with pytest.raises(DataError, match="image reference"):
        write_dataset(store, "ds", make_reviews(3, with_images=True), name="x", provenance=[])
    with pytest.raises(DataError, match="hash"):
        write_dataset(store, "ds", [], name="x", provenance=[], images={PNG_SHA: JPG})
    with pytest.raises(ValueError):
        write_dataset(store, "../ds", [], name="x", provenance=[])
    assert store.list("") == []


def test_hand_made_dataset_with_plain_reviews_jsonl_and_bad_line(store):
    good = make_reviews(1)[0].model_dump_json().encode()
    body = good + b"\n" + b'{"id": "x", "text": 3}\n'
    store.put_bytes("hand/reviews.jsonl", body)
    manifest = {"name": "hand", "count": 2, "digest": hashlib.sha256(body).hexdigest()}
    store.put_bytes("hand/manifest.json", json.dumps(manifest).encode())
    _, it = read_dataset(store, "hand")
    assert next(it).text.startswith("review v1 0")
    with pytest.raises(DataError) as exc:
        next(it)
    msg = str(exc.value)
    assert "hand/reviews.jsonl:2:" in msg and "\n" not in msg and "text" in msg


def test_empty_dataset(store):
    m = write_dataset(store, "empty", [], name="empty", provenance=[])
    assert m.count == 0 and m.digest == hashlib.sha256(b"").hexdigest()
    assert list(read_dataset(store, "empty")[1]) == []


# ---------------------------------------------------------------------------- plain JSONL


def test_jsonl_roundtrip(tmp_path):
    reviews = make_reviews(7)
    path = tmp_path / "sub" / "r.jsonl"
    assert write_jsonl(path, reviews) == 7
    assert list(read_jsonl(path)) == reviews
    assert [p.name for p in path.parent.iterdir()] == ["r.jsonl"]


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = make_reviews(1)[0].model_dump_json()
    path.write_text(good + "\n\n" + good + "\n" + "{not json\n")
    it = read_jsonl(path)
    assert len([next(it), next(it)]) == 2
    with pytest.raises(DataError, match=rf"{path}:4: invalid JSON"):
        next(it)
    path.write_text('{"id": "a", "text": "t", "source": {"kind": "bogus", "name": "n"}}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: invalid review: source.kind"):
        list(read_jsonl(path))
    with pytest.raises(DataError, match="no such file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
