"""Bytes → RGB ``PIL.Image``: JPEG, PNG, WebP and GIF (first frame) only, with size guards
checked from the header (bytes, pixels, each side, aspect ratio) and, optionally, reduced at
decode time to the model's input size."""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ImageLimits:
    """What ``decode_image`` accepts and how far it reduces (``ImageSettings`` in one object)."""

    max_bytes: int
    max_pixels: int
    max_side: int | None = None
    max_aspect_ratio: float | None = None
    reduce_to: int | None = None  # shorter side of the decoded image; None = full size

    @classmethod
    def from_settings(cls, settings) -> ImageLimits:
        return cls(max_bytes=settings.max_bytes, max_pixels=settings.max_pixels,
                   max_side=settings.max_side, max_aspect_ratio=settings.max_aspect_ratio,
                   reduce_to=settings.reduce_to)


def probe_image(data: bytes, limits: ImageLimits) -> tuple[str, int, int]:
    """``(format, width, height)`` from the header alone, after every cap is checked.

    Raises ``PayloadTooLarge`` (bytes, a side, the aspect ratio, the pixel count) or
    ``InvalidImage``; decodes no pixel data."""
    fmt = _check_bytes(data, limits.max_bytes)
    with _bomb_errors(), _open(data, fmt) as im:
        width, height = im.size
    _check_size(width, height, limits)
    return fmt, width, height


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int | None = None,
                 max_aspect_ratio: float | None = None,
                 reduce_to: int | None = None) -> Image.Image:
    """Decode ``data`` to an upright RGB image.

    Raises ``PayloadTooLarge`` over ``max_bytes`` (checked first), or, from the header before
    pixel data is decoded, over ``max_pixels``, ``max_side`` (either side) or
    ``max_aspect_ratio`` (long side / short side); ``InvalidImage`` for anything else wrong.

    With ``reduce_to``, the image comes back with its shorter side at most ``reduce_to`` pixels
    (the model's input size), by the same resize the model's preprocessing does (so its answer
    is the same): JPEGs decode at a reduced DCT scale (draft mode) first, so a 12 MP photo never
    exists at full size in memory.
    """
    limits = ImageLimits(max_bytes, max_pixels, max_side, max_aspect_ratio, reduce_to)
    fmt = _check_bytes(data, max_bytes)
    with _bomb_errors():
        try:
            with _open(data, fmt) as im:
                width, height = im.size  # header only: nothing decoded yet
                _check_size(width, height, limits)
                orientation = _orientation(im)
                target = _reduced_size(width, height, reduce_to)
                if target is not None and fmt == "JPEG":
                    # DCT scaling to the smallest scale still >= target (1/2, 1/4, 1/8)
                    im.draft("RGB", target)
                im.load()  # first frame only for GIF / animated WebP / APNG
                rgb = _to_rgb(im)
        except (PayloadTooLarge, InvalidImage):
            raise
        except UnidentifiedImageError as exc:
            raise InvalidImage(f"cannot read {fmt} image: header is not valid") from exc
        except MemoryError as exc:
            raise PayloadTooLarge(f"{fmt} image is too large to decode") from exc
        except _DECODE_ERRORS as exc:
            raise _decode_error(fmt, "decode", exc) from exc

    final = _reduced_size(*rgb.size, reduce_to)
    if final is not None:
        rgb = rgb.resize(final, Image.Resampling.BILINEAR)
    transpose = _ORIENTATION.get(orientation)
    return rgb.transpose(transpose) if transpose is not None else rgb


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                  struct.error, ZeroDivisionError)


def _check_bytes(data: bytes, max_bytes: int) -> str:
    size = len(data)
    if size > max_bytes:
        raise PayloadTooLarge(f"image is {size} bytes; the limit is {max_bytes}")
    if size == 0:
        raise InvalidImage("image is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage(_describe_unsupported(data))
    return fmt


def _open(data: bytes, fmt: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[fmt])
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"cannot read {fmt} image: header is not valid") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except _DECODE_ERRORS as exc:
        raise _decode_error(fmt, "read", exc) from exc


def _decode_error(fmt: str, what: str, exc: BaseException) -> InvalidImage | PayloadTooLarge:
    """Pillow's "Decompressed data too large" (a compressed text or ICC chunk over its cap) is
    a bomb, so 413; any other failure is an invalid image."""
    text = _one_line(exc)
    if isinstance(exc, ValueError) and "too large" in text.lower():
        return PayloadTooLarge(f"{fmt} image rejected: {text}")
    return InvalidImage(f"cannot {what} {fmt} image: {text}")


@contextlib.contextmanager
def _bomb_errors():
    """Pillow's own bomb check warns (or raises) against its process-wide limit; its warning
    becomes an error inside this block only (the filter list is restored on exit), and both
    become ``PayloadTooLarge``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PayloadTooLarge(f"image rejected as a decompression bomb: {exc}") from exc


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise InvalidImage(f"image is {width}x{height}: no pixels")
    if limits.max_side is not None and max(width, height) > limits.max_side:
        raise PayloadTooLarge(f"image is {width}x{height}; the limit is {limits.max_side} "
                              "pixels a side")
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(f"image is {width}x{height} = {width * height} pixels; "
                              f"the limit is {limits.max_pixels}")
    ratio = max(width, height) / min(width, height)
    if limits.max_aspect_ratio is not None and ratio > limits.max_aspect_ratio:
        raise PayloadTooLarge(f"image is {width}x{height}, an aspect ratio of {ratio:.0f}:1; "
                              f"the limit is {limits.max_aspect_ratio:g}:1")


def _reduced_size(width: int, height: int, reduce_to: int | None) -> tuple[int, int] | None:
    """The size the model's preprocessing resizes to (shorter side ``reduce_to``), or ``None``
    when the image is already that small."""
    if reduce_to is None or min(width, height) <= reduce_to:
        return None
    scale = reduce_to / min(width, height)
    return max(reduce_to, round(width * scale)), max(reduce_to, round(height * scale))


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


class ImageDecoder:
    """Decoding for one API replica, off the event loop on its own threads.

    Small images (up to ``large_pixels``) decode on ``decode_threads`` threads; larger ones on
    a single thread of their own with at most ``large_queue`` waiting (past that:
    ``Overloaded``), so a flood of big images slows only itself. The header is read (and every
    cap checked) on the small pool first; no thread of the default executor is used.
    """

    def __init__(self, settings, *, retry_after_s: float = 1.0, large_queue: int = 4) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.limits = ImageLimits.from_settings(settings)
        self.large_pixels = settings.large_pixels
        self.large_queue = large_queue
        self.retry_after_s = retry_after_s
        self.small = ThreadPoolExecutor(settings.decode_threads,
                                        thread_name_prefix="shopsense-decode")
        self.large = ThreadPoolExecutor(1, thread_name_prefix="shopsense-decode-large")
        self._large_waiting = 0

    async def decode(self, data: bytes) -> Image.Image:
        import asyncio

        from shopsense.errors import Overloaded

        loop = asyncio.get_running_loop()
        _, width, height = await loop.run_in_executor(self.small, probe_image, data,
                                                      self.limits)
        pool = self.small
        if width * height > self.large_pixels:
            if self._large_waiting > self.large_queue:
                raise Overloaded("too many large images being decoded; try again shortly or "
                                 "send a smaller image", retry_after_s=self.retry_after_s)
            pool = self.large
        limits = self.limits
        self._large_waiting += pool is self.large
        try:
            return await loop.run_in_executor(
                pool, lambda: decode_image(
                    data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels,
                    max_side=limits.max_side, max_aspect_ratio=limits.max_aspect_ratio,
                    reduce_to=limits.reduce_to))
        finally:
            self._large_waiting -= pool is self.large

    async def run(self, fn, *args):
        """Run a small CPU job (base64 decoding) on the small pool."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self.small, fn, *args)

    def close(self) -> None:
        self.small.shutdown(wait=False, cancel_futures=True)
        self.large.shutdown(wait=False, cancel_futures=True)
