"""Bytes → RGB ``PIL.Image``: JPEG, PNG, WebP and GIF (first frame) only, with size guards."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from shopsense.errors import InvalidImage, PayloadTooLarge

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")

# Signatures of formats we recognise but refuse, so the error can name them.
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, str], ...] = (
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
)

# EXIF orientation tag value → transpose that puts the image upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112


def image_sha256(data: bytes) -> str:
    """Hex SHA-256 of the encoded bytes."""
    return hashlib.sha256(data).hexdigest()


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name of a supported image from its magic bytes, else ``None``."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _describe_unsupported(data: bytes) -> str:
    head = bytes(data[:16])
    for magic, name in _KNOWN_UNSUPPORTED:
        if head.lstrip().startswith(magic):
            return f"unsupported image format {name}; send JPEG, PNG, WebP or GIF"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "unsupported image format HEIC/AVIF; send JPEG, PNG, WebP or GIF"
    return "not a recognised image (expected JPEG, PNG, WebP or GIF)"


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode ``data`` to an upright RGB image.

    Raises ``PayloadTooLarge`` over ``max_bytes`` (checked first) or ``max_pixels`` (checked
    from the header, before pixel data is decoded), ``InvalidImage`` for anything else wrong.
    """
    size = len(data)
    if size > max_bytes:
        raise PayloadTooLarge(f"image is {size} bytes; the limit is {max_bytes}")
    if size == 0:
        raise InvalidImage("image is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage(_describe_unsupported(data))

    # Pillow's own bomb check warns (or raises) against its process-wide limit; turn its warning
    # into an error for this block only. The filter list is restored on exit.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                width, height = im.size  # header only: nothing decoded yet
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"image is {width}x{height} = {width * height} pixels; "
                        f"the limit is {max_pixels}"
                    )
                orientation = _orientation(im)
                im.load()  # first frame only for GIF / animated WebP / APNG
                rgb = _to_rgb(im)
        except PayloadTooLarge:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PayloadTooLarge(f"image rejected as a decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise InvalidImage(f"cannot read {fmt} image: header is not valid") from exc
        except (
            OSError,
            SyntaxError,
            ValueError,
            EOFError,
            IndexError,
            TypeError,
            KeyError,
            struct.error,
            ZeroDivisionError,
        ) as exc:
            raise InvalidImage(f"cannot decode {fmt} image: {_one_line(exc)}") from exc

    transpose = _ORIENTATION.get(orientation)
    return rgb.transpose(transpose) if transpose is not None else rgb


def encode_jpeg(img: Image.Image, *, quality: int = 90) -> bytes:
    """Encode an image as baseline JPEG (alpha flattened onto white)."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1 when absent or unreadable)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF must not fail an otherwise good image
        return 1
    return value if isinstance(value, int) else 1


def _flatten(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparency is composited onto white."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit greyscale (PNG) spans 0..65535; "I"/"F" from other sources may be 8-bit already.
        scale = 257.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P":
        has_alpha = "transparency" in im.info
        return _flatten(im.convert("RGBA")) if has_alpha else im.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _flatten(im.convert("RGBA"))
    if mode in ("L", "1") and "transparency" in im.info:
        return _flatten(im.convert("RGBA"))
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, RGBX, ...
