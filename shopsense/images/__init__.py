"""Image input layer: request value → bytes (base64, data URL, SSRF-safe fetch) → RGB image,
plus a procedural product-photo renderer for synthetic data."""

from shopsense.images.decode import (
    SUPPORTED_FORMATS,
    ImageDecoder,
    ImageLimits,
    decode_image,
    encode_jpeg,
    image_sha256,
    probe_image,
    sniff_format,
)
from shopsense.images.fetch import (
    AllowList,
    ImageFetcher,
    address_block_reason,
    fetch_image,
    parse_retry_after,
    is_public_address,
    resolve_host,
)
from shopsense.images.render import (
    CATEGORIES,
    COLOURS,
    PhotoSpec,
    render_dataset,
    render_photo,
    spec_for_label,
)
from shopsense.images.source import decode_base64, decode_data_url, image_url, load_image_bytes

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "SUPPORTED_FORMATS",
    "AllowList",
    "ImageDecoder",
    "ImageFetcher",
    "ImageLimits",
    "PhotoSpec",
    "address_block_reason",
    "decode_base64",
    "decode_data_url",
    "decode_image",
    "encode_jpeg",
    "fetch_image",
    "image_url",
    "parse_retry_after",
    "probe_image",
    "image_sha256",
    "is_public_address",
    "load_image_bytes",
    "render_dataset",
    "render_photo",
    "resolve_host",
    "sniff_format",
    "spec_for_label",
]
