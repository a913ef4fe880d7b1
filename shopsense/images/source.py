"""An image field from a request (http(s) URL, ``data:`` URL or raw base64) → encoded bytes."""

from __future__ import annotations

import base64
import binascii
import re

import httpx

from shopsense.errors import ImageFetchRefused, InvalidImage, PayloadTooLarge
from shopsense.images.fetch import fetch_image
from shopsense.settings import ImageSettings

_URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_WHITESPACE = re.compile(r"[ \t\r\n]+")
_STD_ALPHABET = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_URLSAFE_ALPHABET = re.compile(r"^[A-Za-z0-9\-_]*={0,2}$")


def load_image_bytes(
    value: str, settings: ImageSettings, *, transport: httpx.BaseTransport | None = None
) -> bytes:
    """The encoded image bytes ``value`` refers to or contains (not yet decoded as an image).

    Raises ``InvalidImage`` for bad base64 or data URLs, ``ImageFetchRefused`` for other URL
    schemes, ``PayloadTooLarge`` over ``settings.max_bytes``, and whatever ``fetch_image``
    raises for URLs.
    """
    text = value.strip()
    if not text:
        raise InvalidImage("image is empty")
    match = _URL_SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme in ("http", "https"):
        return fetch_image(text, settings, transport=transport)
    if scheme == "data":
        return decode_data_url(text, max_bytes=settings.max_bytes)
    if scheme is not None:  # base64 never contains ':', so this is some other URL
        raise ImageFetchRefused(f"image URL scheme {scheme!r} is not allowed; use http or https")
    return decode_base64(text, max_bytes=settings.max_bytes)


def image_url(value: str) -> str | None:
    """The http(s) URL ``value`` is, ``None`` for inline data (base64, ``data:``); raises
    ``ImageFetchRefused`` for any other URL scheme."""
    text = value.strip()
    match = _URL_SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme in ("http", "https"):
        return text
    if scheme is not None and scheme != "data":
        raise ImageFetchRefused(f"image URL scheme {scheme!r} is not allowed; use http or https")
    return None


def decode_data_url(value: str, *, max_bytes: int) -> bytes:
    """Bytes of a ``data:image/<type>;base64,<payload>`` URL."""
    header, sep, payload = value.partition(",")
    if not sep:
        raise InvalidImage("data URL has no ',' before its payload")
    params = [p.strip().lower() for p in header[len("data:") :].split(";")]
    media_type = params[0]
    if not media_type.startswith("image/"):
        raise InvalidImage(f"data URL media type must be image/*, got {media_type or '(none)'!r}")
    if "base64" not in params[1:]:
        raise InvalidImage("data URL must be base64-encoded (';base64,')")
    return decode_base64(payload, max_bytes=max_bytes)


def decode_base64(value: str, *, max_bytes: int) -> bytes:
    """Strictly decode standard or URL-safe base64 (whitespace and missing padding tolerated)."""
    limit = _encoded_limit(max_bytes)
    if len(value) > 2 * limit + 64:  # refuse absurd inputs before even copying them
        raise PayloadTooLarge(f"base64 image is over the {max_bytes}-byte limit")
    compact = _WHITESPACE.sub("", value)
    if not compact:
        raise InvalidImage("image is empty")
    if len(compact) > limit:
        raise PayloadTooLarge(f"base64 image is over the {max_bytes}-byte limit")
    if _STD_ALPHABET.match(compact):
        altchars = None
    elif _URLSAFE_ALPHABET.match(compact):
        altchars = b"-_"
    else:
        raise InvalidImage("image is not valid base64 (unexpected characters)")
    if len(compact) % 4 == 1:
        raise InvalidImage("image is not valid base64 (bad length)")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"image is not valid base64 ({exc})") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    return data


def _encoded_limit(max_bytes: int) -> int:
    """Longest base64 text (padded, no whitespace) of ``max_bytes`` bytes: 4*ceil(n/3)."""
    return 4 * -(-max_bytes // 3)
