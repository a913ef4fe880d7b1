"""Object store: one small interface, two backends, chosen by URI only.

``open_store("file:///abs/path")`` gives a :class:`LocalStore` (the default, used on a laptop
and in tests); ``open_store("s3://bucket/prefix")`` gives an :class:`S3Store` that talks to MinIO
or any S3-compatible server through the ``minio`` client, with endpoint and keys from
:class:`~shopsense.settings.Settings` (``s3_endpoint``, ``s3_access_key``, ``s3_secret_key``,
``s3_secure``).

Keys
    Keys are ``/``-separated relative paths below the store root: ``datasets/train/manifest.json``.
    Empty segments, ``.``/``..`` segments, absolute keys, backslashes and NUL are rejected with
    ``ValueError`` so a key can never escape the root (LocalStore also refuses a key whose resolved
    path leaves the root through a symlink).

Prefixes
    ``list``, ``delete_prefix`` take a *folder* prefix: ``list("a/b")`` returns the keys under
    ``a/b/`` (not ``a/bc``); ``""`` means the whole store. Returned keys are full keys (relative to
    the store root), sorted.

Semantics shared by both backends
    * ``put_bytes``/``put_file`` replace an object atomically: a reader sees the old or the new
      content, never a part (LocalStore: temp file + ``os.replace``; S3: a PUT is atomic).
    * ``get_bytes``/``get_file``/``move`` of a missing key raise :class:`ObjectNotFound`
      (a :class:`~shopsense.errors.DataError`).
    * ``delete`` of a missing key is a no-op; ``delete_prefix`` returns how many keys it removed.
    * ``move`` is a rename for LocalStore (atomic) and copy + delete for S3 (no rename there).

Known differences: LocalStore cannot hold both ``a`` and ``a/b`` (a file is not a folder), S3 can.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import unquote, urlparse

from shopsense.errors import DataError

if TYPE_CHECKING:
    from minio import Minio

    from shopsense.settings import Settings

__all__ = [
    "ObjectNotFound",
    "ObjectStore",
    "LocalStore",
    "S3Store",
    "open_store",
    "read_uri",
    "join_key",
    "check_key",
]

_TMP_SUFFIX = ".shopsense-tmp"


class ObjectNotFound(DataError):
    """The key (or URI) names no object."""


# ---------------------------------------------------------------------------------------- keys


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``ValueError``."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative, got absolute {key!r}")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"object key must not contain backslashes or NUL: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
    if key.endswith(_TMP_SUFFIX):
        raise ValueError(f"object key must not end with {_TMP_SUFFIX!r}: {key!r}")
    return key


def _check_prefix(prefix: str | None) -> str:
    """Normalise a folder prefix: ``None``/``""`` → ``""``, trailing ``/`` dropped, else a key."""
    if prefix is None:
        return ""
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string, got {prefix!r}")
    prefix = prefix.rstrip("/")
    return check_key(prefix) if prefix else ""


def join_key(*parts: str) -> str:
    """Join key parts with ``/``, skipping empty ones: ``join_key("", "a", "b/c") == "a/b/c"``."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


# ----------------------------------------------------------------------------------- interface


class ObjectStore(ABC):
    """A flat namespace of byte objects under a root URI."""

    #: URI of the store root (``file:///…`` or ``s3://bucket/prefix``)
    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` at ``key``, replacing any previous object atomically."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFound` if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys under the folder ``prefix`` (recursive, sorted, full keys)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; no error if it does not exist."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every key under the folder ``prefix``; returns how many were removed."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str], *, content_type: str | None = None) -> None:
        """Upload a (possibly large) local file to ``key`` without reading it into memory."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download ``key`` to a local file (replaced atomically); :class:`ObjectNotFound`."""

    @abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (replacing ``dst``); :class:`ObjectNotFound` if no ``src``."""

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI that :func:`read_uri` resolves back to this object."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# ------------------------------------------------------------------------------------ local


def _open_tmp_beside(target: Path) -> tuple[int, Path]:
    """Create an exclusive temp file in ``target``'s folder (mode honours the umask)."""
    for attempt in range(5):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:  # a concurrent delete pruned the folder: make it again
            if attempt == 4:
                raise
            continue
        return fd, tmp
    raise AssertionError("unreachable")


def _atomic_write(target: Path, write) -> None:
    """Write through ``write(fileobj)`` into a temp file, fsync, then ``os.replace`` onto target."""
    fd, tmp = _open_tmp_beside(target)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LocalStore(ObjectStore):
    """Objects as files under an absolute root folder."""

    def __init__(self, root: str | os.PathLike[str]):
        root = Path(root)
        if not root.is_absolute():
            raise ValueError(f"LocalStore root must be an absolute path, got {str(root)!r}")
        self.root = root
        self.uri = root.as_uri()

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"object key {key!r} resolves outside the store root {self.root}")
        return path

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) the root."""
        root = self.root
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:  # not empty, gone, or busy
                return
            folder = folder.parent

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        _atomic_write(self._path(key), lambda f: f.write(data))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = _check_prefix(prefix)
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                keys.append(name if rel == "." else f"{rel}/{name}")
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        prefix = _check_prefix(prefix)
        keys = self.list(prefix)
        if prefix:
            base = self._path(prefix)
            if base.is_dir():
                shutil.rmtree(base)
            self._prune(base.parent)
        else:
            for child in self.root.iterdir() if self.root.is_dir() else ():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink(missing_ok=True)
        return len(keys)

    def put_file(self, key: str, path: str | os.PathLike[str], *, content_type: str | None = None) -> None:
        target = self._path(key)
        with open(path, "rb") as src:
            _atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        source = self._path(key)
        try:
            src = open(source, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from exc
        with src:
            _atomic_write(Path(path).absolute(), lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        if not source.is_file():
            raise ObjectNotFound(f"no object {src!r} in {self.uri}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        self._prune(source.parent)

    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()


# --------------------------------------------------------------------------------------- S3

_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}


def _minio_client(settings: Settings | None) -> Minio:
    from minio import Minio

    if settings is None:
        from shopsense.settings import get_settings

        settings = get_settings()
    endpoint = settings.s3_endpoint
    if not endpoint:
        raise ValueError(
            "s3:// store URI needs an endpoint: set SHOPSENSE_S3_ENDPOINT (host:port of MinIO/S3)"
        )
    secure = settings.s3_secure
    if endpoint.startswith(("http://", "https://")):
        parsed = urlparse(endpoint)
        secure = parsed.scheme == "https"
        endpoint = parsed.netloc
    return Minio(
        endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=secure,
    )


class S3Store(ObjectStore):
    """Objects in an S3 bucket (MinIO in the cluster) under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: Settings | None = None,
        client: Minio | None = None,
    ):
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = _check_prefix(prefix)
        self.client = client if client is not None else _minio_client(settings)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _name(self, key: str) -> str:
        return join_key(self.prefix, check_key(key))

    def _translate(self, exc: Exception, key: str) -> Exception:
        """What the client's ``exc`` means for ``key``; ``exc`` itself when nothing more."""
        from minio.error import S3Error

        if isinstance(exc, S3Error):
            if exc.code in _MISSING_CODES:
                return ObjectNotFound(f"no object {key!r} in {self.uri}")
            if exc.code == "NoSuchBucket":
                return DataError(f"bucket {self.bucket!r} does not exist ({self.uri})")
        return exc

    def _raise(self, exc: Exception, key: str) -> NoReturn:
        """Raise ``_translate(exc, key)`` chained to ``exc`` (``exc`` itself, unchanged, when it
        means nothing more)."""
        err = self._translate(exc, key)
        if err is exc:
            raise exc
        raise err from exc

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        name = self._name(key)
        self.client.put_object(
            self.bucket,
            name,
            io.BytesIO(data),
            len(data),
            content_type=content_type or "application/octet-stream",
        )

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        try:
            resp = self.client.get_object(self.bucket, name)
        except Exception as exc:
            self._raise(exc, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self.client.stat_object(self.bucket, name)
        except Exception as exc:
            if isinstance(self._translate(exc, key), ObjectNotFound):
                return False
            self._raise(exc, key)
        return True

    def list(self, prefix: str = "") -> list[str]:
        prefix = _check_prefix(prefix)
        full = join_key(self.prefix, prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            objects = self.client.list_objects(
                self.bucket, prefix=f"{full}/" if full else None, recursive=True
            )
            names = [o.object_name for o in objects]
        except Exception as exc:
            self._raise(exc, prefix)
        return sorted(n[cut:] for n in names if n and not n.endswith("/"))

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self.client.remove_object(self.bucket, name)
        except Exception as exc:
            if not isinstance(self._translate(exc, key), ObjectNotFound):
                self._raise(exc, key)

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = self.list(prefix)
        if not keys:
            return 0
        errors = list(
            self.client.remove_objects(self.bucket, (DeleteObject(self._name(k)) for k in keys))
        )
        if errors:
            raise DataError(
                f"could not delete {len(errors)} objects under {prefix!r} in {self.uri}: "
                f"{errors[0].code} {errors[0].name}"
            )
        return len(keys)

    def put_file(self, key: str, path: str | os.PathLike[str], *, content_type: str | None = None) -> None:
        self.client.fput_object(
            self.bucket,
            self._name(key),
            os.fspath(path),
            content_type=content_type or "application/octet-stream",
        )

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        name = self._name(key)
        target = Path(path).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
        try:
            self.client.fget_object(self.bucket, name, os.fspath(tmp))
            os.replace(tmp, target)
        except Exception as exc:
            self._raise(exc, key)
        finally:
            tmp.unlink(missing_ok=True)

    def move(self, src: str, dst: str) -> None:
        from minio.commonconfig import CopySource

        src_name, dst_name = self._name(src), self._name(dst)
        try:
            self.client.copy_object(self.bucket, dst_name, CopySource(self.bucket, src_name))
        except Exception as exc:
            self._raise(exc, src)
        self.delete(src)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}"


# -------------------------------------------------------------------------------------- URIs


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file URI must name a local absolute path (file:///…), got {uri!r}")
    path = Path(unquote(parsed.path))
    if not path.is_absolute() or not parsed.path:
        raise ValueError(f"file URI must name an absolute path, got {uri!r}")
    return path


def open_store(uri: str, settings: Settings | None = None) -> ObjectStore:
    """The store at ``uri``: ``file:///abs/path`` → LocalStore, ``s3://bucket/prefix`` → S3Store."""
    scheme = urlparse(uri).scheme if isinstance(uri, str) else ""
    if scheme == "file":
        return LocalStore(_local_path(uri))
    if scheme == "s3":
        parsed = urlparse(uri)
        return S3Store(parsed.netloc, unquote(parsed.path).strip("/"), settings=settings)
    raise ValueError(f"unsupported store URI {uri!r}: expected file:///abs/path or s3://bucket/prefix")


def read_uri(uri: str, settings: Settings | None = None) -> bytes:
    """The bytes of one object named by URI (``file:///…/key`` or ``s3://bucket/key``)."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        path = _local_path(uri)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object at {uri}") from exc
    if scheme == "s3":
        parsed = urlparse(uri)
        key = unquote(parsed.path).lstrip("/")
        if not key:
            raise ValueError(f"s3 URI names a bucket, not an object: {uri!r}")
        return S3Store(parsed.netloc, settings=settings).get_bytes(key)
    raise ValueError(f"unsupported URI {uri!r}: expected file:///… or s3://bucket/key")
