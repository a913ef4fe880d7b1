"""What `index --data` accepts (no indexing here)."""

import pytest

from services.retrieval.sources import ImageLoader, open_source
from shopsense.errors import DataError
from shopsense.schemas import ImageRef, Review, Source


def _reviews(n=3):
    return [Review.make(source=Source(kind="synthetic", name="src", source_id=str(i)),
                        text=f"review {i}") for i in range(n)]


def test_set_name(data_dir):
    src = open_source("uci-amazon")
    assert src.total == 1000 and src.description == "set uci-amazon"
    assert next(src.reviews).source.name == "uci-amazon"


def test_jsonl_dataset_dir_and_uri(tmp_path):
    from shopsense.data.dataset import write_dataset, write_jsonl
    from shopsense.store import LocalStore

    write_jsonl(tmp_path / "r.jsonl", _reviews())
    src = open_source(str(tmp_path / "r.jsonl"))
    assert src.total == 3 and [r.text for r in src.reviews] == ["review 0", "review 1", "review 2"]
    write_dataset(LocalStore(tmp_path / "store"), "sets/one", _reviews(2), name="one")
    src = open_source((tmp_path / "store").as_uri() + "/sets/one")
    assert src.total == 2 and len(list(src.reviews)) == 2
    src = open_source(str(tmp_path / "store" / "sets" / "one"))
    assert src.total == 2


@pytest.mark.parametrize("value, message", [
    ("", "--data is empty"),
    ("nope-set", "no such file or dataset, and not a set name"),
    ("ftp://x/y", "unsupported store URI"),
    ("file://", "dataset URI must look like"),
])
def test_bad_sources(value, message):
    with pytest.raises(DataError, match=message):
        open_source(value)


def test_directory_without_manifest(tmp_path):
    with pytest.raises(DataError, match="without manifest.json"):
        open_source(str(tmp_path))


def test_image_loader_resolution(tmp_path):
    (tmp_path / "img.bin").write_bytes(b"abc")
    loader = ImageLoader(base_dir=tmp_path)
    assert loader(ImageRef(uri="img.bin")) == b"abc"
    assert loader(ImageRef(uri=(tmp_path / "img.bin").as_uri())) == b"abc"
    assert loader(ImageRef(uri="data:image/png;base64,YWJj")) == b"abc"
    with pytest.raises(DataError, match="no such file|No such file"):
        loader(ImageRef(uri="missing.jpg"))
    with pytest.raises(DataError, match="no base"):
        ImageLoader()(ImageRef(uri="rel.jpg"))
