"""What ``shopsense index --data`` accepts, and how review images are found.

``open_source(value)`` recognises, in this order:

1. a set name of the shared data (``blitzer-dvd``, ``uci-amazon`` … see ``shopsense data sets``);
2. a dataset URI (``file:///dir/prefix`` or ``s3://bucket/prefix``, with ``manifest.json``) or a
   local directory holding ``manifest.json`` (read with its digest checked);
3. a local JSONL file of ``Review`` objects.

Image references of a review (``ImageRef.uri``) are resolved by :class:`ImageLoader`: a relative
reference against its dataset prefix (or the JSONL file's folder); ``file://``/``s3://`` URIs
through the object store; ``http(s)`` URLs through the guarded fetcher (``shopsense.images``:
private addresses refused unless allowed, size and time limits); ``data:`` URLs decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shopsense.errors import DataError
from shopsense.schemas import ImageRef, Review
from shopsense.settings import Settings, get_settings
from shopsense.store import ObjectStore

__all__ = ["ImageLoader", "ReviewSource", "open_source"]


class ImageLoader:
    """Bytes of an image reference; relative references are resolved against one base."""

    def __init__(self, *, store: ObjectStore | None = None, prefix: str | None = None,
                 base_dir: Path | None = None, settings: Settings | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.base_dir = base_dir
        self.settings = settings or get_settings()

    def __call__(self, ref: ImageRef) -> bytes:
        from shopsense.images import load_image_bytes
        from shopsense.images.source import decode_data_url
        from shopsense.store import join_key, read_uri

        uri = ref.uri.strip()
        if uri.startswith(("http://", "https://")):
            return load_image_bytes(uri, self.settings.images)
        if uri.startswith("data:"):
            return decode_data_url(uri, max_bytes=self.settings.images.max_bytes)
        if "://" in uri:
            return read_uri(uri, self.settings)
        if self.store is not None and self.prefix is not None and not uri.startswith("/"):
            return self.store.get_bytes(join_key(self.prefix, uri))
        path = Path(uri)
        if not path.is_absolute():
            if self.base_dir is None:
                raise DataError(f"relative image reference {uri!r} has no base to resolve against")
            path = self.base_dir / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"image {uri!r}: {exc.strerror or exc}") from exc


@dataclass
class ReviewSource:
    description: str
    reviews: Iterator[Review]
    total: int | None
    image_loader: Callable[[ImageRef], bytes]


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def open_source(value: str, settings: Settings | None = None) -> ReviewSource:
    """Reviews named by ``value`` (see the module docstring); DataError if it names nothing."""
    from shopsense.data.dataset import open_dataset_uri, read_dataset
    from shopsense.data.loaders import SET_NAMES, load_set
    from shopsense.store import LocalStore

    s = settings or get_settings()
    value = value.strip()
    if not value:
        raise DataError("--data is empty")
    if value in SET_NAMES:
        reviews = load_set(value, s.data_dir)
        return ReviewSource(f"set {value}", iter(reviews), len(reviews),
                            ImageLoader(base_dir=s.data_dir, settings=s))
    if "://" in value:
        store, prefix = open_dataset_uri(value, s)
        manifest, reviews = read_dataset(store, prefix)
        return ReviewSource(f"dataset {value}", reviews, manifest.count,
                            ImageLoader(store=store, prefix=prefix, settings=s))
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise DataError(f"{path}: a directory without manifest.json is not a dataset")
        path = path.resolve()
        store = LocalStore(path.parent)
        manifest, reviews = read_dataset(store, path.name)
        return ReviewSource(f"dataset {path}", reviews, manifest.count,
                            ImageLoader(store=store, prefix=path.name, settings=s))
    if path.is_file():
        from shopsense.data.dataset import read_jsonl

        return ReviewSource(f"file {path}", read_jsonl(path), _count_lines(path),
                            ImageLoader(base_dir=path.resolve().parent, settings=s))
    raise DataError(f"--data {value!r}: no such file or dataset, and not a set name "
                    f"(sets: {', '.join(SET_NAMES)})")
