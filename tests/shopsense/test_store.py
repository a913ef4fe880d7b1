"""ObjectStore contract, run against LocalStore and against S3Store talking HTTP to moto."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shopsense.errors import DataError
from shopsense.settings import Settings
from shopsense.store import LocalStore, ObjectNotFound, S3Store, open_store, read_uri
from tests.shopsense._s3 import new_s3_store


# ------------------------------------------------------------------------- shared contract


def test_put_get_roundtrip_and_overwrite(store):
    store.put_bytes("a/b/c.bin", b"\x00\x01binary\xff")
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01binary\xff"
    store.put_bytes("a/b/c.bin", b"new", content_type="text/plain")
    assert store.get_bytes("a/b/c.bin") == b"new"
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""


def test_missing_object_is_object_not_found(store):
    with pytest.raises(ObjectNotFound) as exc:
        store.get_bytes("nope/missing.json")
    assert isinstance(exc.value, DataError)
    assert "nope/missing.json" in str(exc.value)
    assert store.exists("nope/missing.json") is False


def test_exists(store):
    store.put_bytes("x/y.txt", b"1")
    assert store.exists("x/y.txt")
    assert not store.exists("x/y")
    assert not store.exists("x/y.txt2")


def test_list_is_recursive_sorted_and_folder_scoped(store):
    for key in ["data/b.txt", "data/a.txt", "data/sub/c.txt", "database/d.txt", "top.txt"]:
        store.put_bytes(key, key.encode())
    assert store.list("data") == ["data/a.txt", "data/b.txt", "data/sub/c.txt"]
    assert store.list("data/") == store.list("data")
    assert store.list("data/sub") == ["data/sub/c.txt"]
    assert store.list("") == sorted(
        ["data/a.txt", "data/b.txt", "data/sub/c.txt", "database/d.txt", "top.txt"]
    )
    assert store.list("nothing/here") == []


def test_delete_and_delete_prefix(store):
    for key in ["p/1", "p/q/2", "p/q/3", "pp/4", "keep"]:
        store.put_bytes(key, b"x")
    store.delete("keep")
    store.delete("keep")  # missing: no error
    assert not store.exists("keep")
    assert store.delete_prefix("p") == 3
    assert store.list("") == ["pp/4"]
    assert store.delete_prefix("p") == 0


def test_put_file_get_file_large(store, tmp_path):
    src = tmp_path / "big.bin"
    payload = os.urandom(6 * 1024 * 1024 + 123)  # over the 5 MiB S3 multipart minimum
    src.write_bytes(payload)
    store.put_file("blobs/big.bin", src)
    dst = tmp_path / "out" / "big.bin"
    store.get_file("blobs/big.bin", dst)
    assert dst.read_bytes() == payload
    assert [p.name for p in dst.parent.iterdir()] == ["big.bin"]  # no temp file left behind
    with pytest.raises(ObjectNotFound):
        store.get_file("blobs/missing.bin", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_move(store):
    store.put_bytes("stage/x.json", b"{}")
    store.put_bytes("final/x.json", b"old")
    store.move("stage/x.json", "final/x.json")
    assert store.get_bytes("final/x.json") == b"{}"
    assert store.list("stage") == []
    with pytest.raises(ObjectNotFound):
        store.move("stage/x.json", "final/y.json")


def test_uri_for_and_read_uri(store, request):
    store.put_bytes("docs/a b.txt", b"hello")
    uri = store.uri_for("docs/a b.txt")
    assert uri.startswith(store.uri)
    settings = request.getfixturevalue("s3_settings") if isinstance(store, S3Store) else None
    assert read_uri(uri, settings) == b"hello"
    with pytest.raises(ObjectNotFound):
        read_uri(store.uri_for("docs/missing.txt"), settings)


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "", ".", "a\\b", "a/", "x\x00"]
)
def test_unsafe_keys_rejected(store, key):
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(key)


# ---------------------------------------------------------------------- backend specifics


def test_s3_read_uri_through_settings(s3_settings):
    store = new_s3_store(s3_settings)
    store.put_bytes("k/v.txt", b"v")
    uri = store.uri_for("k/v.txt")
    assert uri == f"s3://{store.bucket}/root/k/v.txt"
    assert read_uri(uri, s3_settings) == b"v"


def test_s3_prefix_is_isolated(s3_settings):
    a = new_s3_store(s3_settings, prefix="one")
    b = open_store(f"s3://{a.bucket}/two", s3_settings)
    a.put_bytes("k", b"a")
    b.put_bytes("k", b"b")
    assert a.get_bytes("k") == b"a"
    assert a.list("") == ["k"] and b.list("") == ["k"]
    root = open_store(f"s3://{a.bucket}", s3_settings)
    assert root.list("") == ["one/k", "two/k"]


def test_s3_missing_bucket_is_data_error(s3_settings):
    store = open_store("s3://no-such-bucket-xyz/p", s3_settings)
    with pytest.raises(DataError):
        store.get_bytes("k")


def test_open_store_routes_by_uri(tmp_path, s3_settings):
    local = open_store(tmp_path.as_uri())
    assert isinstance(local, LocalStore) and local.root == tmp_path
    s3 = open_store("s3://bucket/some/prefix", s3_settings)
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    for bad in ["http://x/y", "relative/path", "file://host/abs", "s3://b/../x"]:
        with pytest.raises(ValueError):
            open_store(bad, s3_settings)


def test_s3_without_endpoint_is_a_clear_error():
    with pytest.raises(ValueError, match="SHOPSENSE_S3_ENDPOINT"):
        open_store("s3://bucket/p", Settings(s3_endpoint=None))


def test_local_writes_leave_no_temp_files_and_hide_them(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.txt", b"1")
    store.put_file("a/c.txt", _write(tmp_path / "src.txt", b"2"))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.txt", "c.txt"]
    (tmp_path / "a" / ".b.txt.123.shopsense-tmp").write_bytes(b"partial")  # a crashed writer
    assert store.list("a") == ["a/b.txt", "a/c.txt"]


def test_local_failed_write_keeps_old_content(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put_bytes("k", b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes("k", b"new")
    monkeypatch.undo()
    assert store.get_bytes("k") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_local_symlink_escape_rejected(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = LocalStore(root)
    with pytest.raises(ValueError):
        store.put_bytes("link/x", b"x")
    assert not (outside / "x").exists()


def test_local_delete_prunes_empty_folders(tmp_path):
    store = LocalStore(tmp_path / "s")
    store.put_bytes("a/b/c/d.txt", b"x")
    store.delete("a/b/c/d.txt")
    assert list((tmp_path / "s").iterdir()) == []


def test_local_read_uri(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"x")
    assert read_uri((tmp_path / "f.txt").as_uri()) == b"x"
    with pytest.raises(ObjectNotFound):
        read_uri((tmp_path / "g.txt").as_uri())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
