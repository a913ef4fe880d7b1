from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import pytest
from PIL import Image

from shopsense.errors import InvalidImage, PayloadTooLarge
from shopsense.images import decode_image, encode_jpeg, image_sha256, sniff_format

LIMITS = {"max_bytes": 8 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def huge_png(width: int, height: int) -> bytes:
    """A real PNG header claiming ``width``x``height`` RGB with a tiny (wrong) body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_each_supported_format_decodes_to_rgb(fmt: str) -> None:
    src = Image.new("RGB", (40, 30), (220, 40, 30))
    img = decode_image(encode(src, fmt), **LIMITS)
    assert img.mode == "RGB" and img.size == (40, 30)
    r, g, b = img.getpixel((20, 15))
    assert r > 180 and g < 90 and b < 90


def test_gif_first_frame_only() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = decode_image(data, **LIMITS)
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_cmyk_jpeg() -> None:
    src = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red in CMYK
    img = decode_image(encode(src, "JPEG"), **LIMITS)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((10, 10))
    assert r > 200 and g < 60 and b < 60


def test_palette_png_with_transparency_is_flattened_on_white() -> None:
    src = Image.new("P", (10, 10), 0)
    src.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    src.putpixel((0, 0), 1)
    data = encode(src, "PNG", transparency=0)
    img = decode_image(data, **LIMITS)
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (255, 255, 255)  # transparent → white
    assert img.getpixel((0, 0)) == (0, 255, 0)


def test_palette_png_without_transparency() -> None:
    src = Image.new("RGB", (10, 10), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    img = decode_image(encode(src, "PNG"), **LIMITS)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (10, 200, 30)


@pytest.mark.parametrize("mode", ["LA", "RGBA", "L", "1"])
def test_other_modes(mode: str) -> None:
    src = Image.new(mode, (12, 12))
    img = decode_image(encode(src, "PNG"), **LIMITS)
    assert img.mode == "RGB" and img.size == (12, 12)


def test_alpha_is_composited_on_white() -> None:
    src = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(encode(src, "PNG"), **LIMITS).getpixel((1, 1)) == (255, 255, 255)


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    src = Image.new("I;16", (8, 8), 32768)
    data = encode(src, "PNG")
    img = decode_image(data, **LIMITS)
    assert img.mode == "RGB"
    value = img.getpixel((4, 4))[0]
    assert 120 <= value <= 135  # 32768/65535 of full scale, not clipped to 255


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 10, 20))  # left quarter red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img = decode_image(encode(src, "JPEG", exif=exif, quality=95), **LIMITS)
    assert img.size == (20, 40)
    r, _, b = img.getpixel((10, 3))  # the red strip is now at the top
    assert r > 200 and b < 60


def test_byte_cap_is_checked_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_image(b"not even an image" * 100, max_bytes=100, max_pixels=10**6)


def test_pixel_cap_from_header_without_allocating() -> None:
    data = huge_png(50_000, 50_000)
    assert len(data) < 200
    start = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(data, **LIMITS)
    assert time.perf_counter() - start < 10  # generous: decoding 7.5 GB would take minutes


def test_pillow_bomb_error_becomes_payload_too_large() -> None:
    # our own cap is generous here, so Pillow's process-wide bomb check is what fires
    with pytest.raises(PayloadTooLarge, match="bomb"):
        decode_image(huge_png(50_000, 50_000), max_bytes=10**6, max_pixels=10**12)


def test_pillow_bomb_warning_becomes_payload_too_large_and_leaves_no_trace() -> None:
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    assert limit_before is not None
    side = int((limit_before * 1.2) ** 0.5)  # over the warning limit, under the error limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PayloadTooLarge):
            decode_image(huge_png(side, side), max_bytes=10**6, max_pixels=10**12)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert warnings.filters == filters_before
    assert limit_before == Image.MAX_IMAGE_PIXELS


def test_pixel_cap_exact_boundary() -> None:
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    assert decode_image(data, max_bytes=10**6, max_pixels=100).size == (10, 10)
    with pytest.raises(PayloadTooLarge):
        decode_image(data, max_bytes=10**6, max_pixels=99)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x00" * 100, b"GIF89a", b"RIFF"])
def test_garbage_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image(data, **LIMITS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_truncated_is_invalid(fmt: str) -> None:
    noisy = Image.effect_noise((64, 64), 50).convert("RGB")
    data = encode(noisy, fmt)
    with pytest.raises(InvalidImage) as info:
        decode_image(data[: len(data) // 2], **LIMITS)
    assert "\n" not in str(info.value)


def test_corrupt_png_body_is_invalid() -> None:
    with pytest.raises(InvalidImage):
        decode_image(huge_png(16, 16), **LIMITS)  # IDAT far too short for 16x16


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "BMP"), ("TIFF", "TIFF"), ("ICO", "ICO")])
def test_unsupported_formats_are_invalid(fmt: str, name: str) -> None:
    data = encode(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)
    with pytest.raises(InvalidImage, match=name):
        decode_image(data, **LIMITS)


def test_sniff_format() -> None:
    img = Image.new("RGB", (4, 4))
    assert [sniff_format(encode(img, f)) for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP")] == [
        "JPEG",
        "PNG",
        "WEBP",
        "GIF",
        None,
    ]


def test_image_sha256() -> None:
    assert image_sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_encode_jpeg_roundtrip_and_flattens_alpha() -> None:
    data = encode_jpeg(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), quality=80)
    assert data[:3] == b"\xff\xd8\xff"
    img = decode_image(data, **LIMITS)
    assert img.getpixel((5, 5))[0] > 240
