from __future__ import annotations

import base64

import pytest

from shopsense.errors import ImageFetchRefused, InvalidImage, PayloadTooLarge
from shopsense.images import decode_image, load_image_bytes
from shopsense.images import source as source_module
from shopsense.settings import ImageSettings

from .conftest import png_bytes

SETTINGS = ImageSettings()
PNG = png_bytes()
B64 = base64.b64encode(PNG).decode()


def test_raw_base64() -> None:
    assert load_image_bytes(B64, SETTINGS) == PNG
    assert decode_image(load_image_bytes(B64, SETTINGS), max_bytes=10**6, max_pixels=10**6)


def test_base64_with_line_breaks_and_surrounding_space() -> None:
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    assert load_image_bytes(f"  {wrapped}\r\n", SETTINGS) == PNG


def test_urlsafe_and_unpadded_base64() -> None:
    data = bytes(range(256)) * 3 + b"\xfb\xff"  # needs '-' / '_' and padding
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "=" not in urlsafe and ("-" in urlsafe or "_" in urlsafe)
    assert load_image_bytes(urlsafe, SETTINGS) == data


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        "abc$def",
        "QUJD=QUJD",
        "QUJDR",
        B64[:-2] + "@@",
        "YWJj-YW+j",
        "====",
        "\u00e9aaa",
    ],
)
def test_bad_base64_is_invalid_image(value: str) -> None:
    with pytest.raises(InvalidImage, match="base64"):
        load_image_bytes(value, SETTINGS)


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_empty_is_invalid(value: str) -> None:
    with pytest.raises(InvalidImage, match="empty"):
        load_image_bytes(value, SETTINGS)


def test_encoded_length_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded an oversized payload")

    monkeypatch.setattr(source_module.base64, "b64decode", never)
    settings = ImageSettings(max_bytes=300)
    with pytest.raises(PayloadTooLarge):
        load_image_bytes("A" * 404, settings)  # 4*ceil(300/3) = 400 is the most allowed
    with pytest.raises(PayloadTooLarge):
        load_image_bytes("data:image/png;base64," + "A" * 404, settings)
    with pytest.raises(PayloadTooLarge):
        load_image_bytes("A" * 10_000_000, settings)


def test_decoded_length_is_checked_too() -> None:
    settings = ImageSettings(max_bytes=10)
    assert load_image_bytes(base64.b64encode(b"x" * 10).decode(), settings) == b"x" * 10
    with pytest.raises(PayloadTooLarge):
        load_image_bytes(base64.b64encode(b"x" * 12).decode(), settings)  # 16 chars: within


@pytest.mark.parametrize(
    "prefix",
    ["data:image/png;base64,", "DATA:image/PNG;BASE64,", "data:image/webp;name=a.webp;base64,"],
)
def test_data_urls(prefix: str) -> None:
    assert load_image_bytes(prefix + B64, SETTINGS) == PNG


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("data:text/plain;base64," + B64, "image/"),
        ("data:;base64," + B64, "image/"),
        ("data:image/png," + B64, "base64"),
        ("data:image/png;base64", "','"),
        ("data:image/png;base64,%%%%", "base64"),
    ],
)
def test_bad_data_urls(value: str, match: str) -> None:
    with pytest.raises(InvalidImage, match=match):
        load_image_bytes(value, SETTINGS)


@pytest.mark.parametrize(
    "value", ["ftp://example.com/a.png", "file:///etc/passwd", "file:/etc/passwd", "gopher://x"]
)
def test_other_url_schemes_are_refused(value: str) -> None:
    with pytest.raises(ImageFetchRefused, match="scheme"):
        load_image_bytes(value, SETTINGS)


@pytest.mark.parametrize("url", ["http://cdn.example.com/a.png", "HTTPS://cdn.example.com/a.png"])
def test_http_urls_go_to_fetch_image(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    calls: list[tuple[str, ImageSettings]] = []

    def fake_fetch(value: str, settings: ImageSettings, *, transport: object = None) -> bytes:
        calls.append((value, settings))
        return PNG

    monkeypatch.setattr(source_module, "fetch_image", fake_fetch)
    assert load_image_bytes(f" {url} ", SETTINGS) == PNG
    assert calls == [(url, SETTINGS)]


def test_loopback_url_is_refused_end_to_end() -> None:
    with pytest.raises(ImageFetchRefused):
        load_image_bytes("http://127.0.0.1:1/x.png", SETTINGS)
