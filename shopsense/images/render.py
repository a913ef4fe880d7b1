"""Procedural "phone snapshot" product photos for synthetic image reviews.

No network, no model: numpy + Pillow drawing, deterministic for a ``(spec, seed)`` pair.
Products are drawn at twice the final resolution and reduced (cheap anti-aliasing), placed on a
textured surface with a soft shadow, then lit, tinted, noised, blurred and JPEG round-tripped.

``colour`` is the colour the customer ordered; it is printed as a swatch on the order tag (on
the box, or a card beside the product). With ``wrong_colour`` the product itself is drawn in a
clearly different colour, so the mismatch is visible in the photo.
"""

from __future__ import annotations

import io
import math
import random
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from pydantic import BaseModel, ConfigDict, field_validator

from shopsense.schemas import Label

Category = Literal["phone", "laptop", "headphones", "book", "dvd", "bottle", "shoe", "mug", "box"]
Damage = Literal["none", "cracked", "dented", "scratched", "broken"]
Packaging = Literal["none", "intact", "torn", "crushed"]
Lighting = Literal["good", "dim", "harsh"]
Background = Literal["plain", "wood", "marble", "carpet", "tiles"]

CATEGORIES: tuple[str, ...] = get_args(Category)
DAMAGES: tuple[str, ...] = get_args(Damage)
PACKAGINGS: tuple[str, ...] = get_args(Packaging)
LIGHTINGS: tuple[str, ...] = get_args(Lighting)
BACKGROUNDS: tuple[str, ...] = get_args(Background)
LABELS: tuple[Label, ...] = ("negative", "neutral", "positive")

RGB = tuple[int, int, int]
COLOURS: dict[str, RGB] = {
    "black": (32, 32, 36),
    "white": (236, 236, 232),
    "silver": (178, 182, 188),
    "grey": (110, 112, 118),
    "red": (196, 36, 40),
    "blue": (36, 82, 190),
    "navy": (28, 40, 92),
    "green": (40, 150, 70),
    "yellow": (236, 196, 40),
    "orange": (232, 120, 32),
    "pink": (232, 120, 170),
    "purple": (120, 60, 160),
    "gold": (200, 160, 80),
    "teal": (30, 140, 140),
}

_CARDBOARD: RGB = (184, 142, 96)
_PRODUCT_SPAN = 0.62  # a product spans about this share of its drawing canvas


class PhotoSpec(BaseModel):
    """What a rendered photo shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Category
    damage: Damage = "none"
    packaging: Packaging = "none"
    colour: str = "black"
    wrong_colour: bool = False
    lighting: Lighting = "good"
    background: Background = "wood"

    @field_validator("colour")
    @classmethod
    def _known_colour(cls, value: str) -> str:
        if value not in COLOURS:
            raise ValueError(f"unknown colour {value!r}; one of {sorted(COLOURS)}")
        return value

    @property
    def defective(self) -> bool:
        """Visible damage, damaged packaging or the wrong colour."""
        return self.damage != "none" or self.packaging in ("torn", "crushed") or self.wrong_colour


# --------------------------------------------------------------------------------------------
# public entry points


def render_photo(spec: PhotoSpec, *, seed: int, size: tuple[int, int] = (256, 256)) -> Image.Image:
    """Render ``spec`` as an RGB snapshot of ``size``; the same ``(spec, seed)`` gives the same
    pixels."""
    width, height = size
    rng = np.random.default_rng(seed)
    frame = min(width, height)

    ordered = COLOURS[spec.colour]
    body = _wrong_colour(spec.colour, rng) if spec.wrong_colour else ordered
    light_angle = float(rng.uniform(-math.pi, math.pi))

    surface = _background(spec.background, width, height, rng)

    objects: list[tuple[Image.Image, tuple[int, int]]] = []
    if spec.packaging != "none":
        box_scale = float(rng.uniform(0.5, 0.66))
        box = _packaging(spec.packaging, int(frame * box_scale) * 2, ordered, rng)
        box = box.reduce(2)
        box = box.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR, expand=True)
        left = rng.random() < 0.5
        bx = width * (0.34 if left else 0.66) + rng.uniform(-0.05, 0.05) * width
        by = height * 0.42 + rng.uniform(-0.05, 0.05) * height
        objects.append((box, (int(bx - box.width / 2), int(by - box.height / 2))))
        scale = float(rng.uniform(0.4, 0.52))
        px = width * (0.68 if left else 0.32) + rng.uniform(-0.05, 0.05) * width
        py = height * 0.64 + rng.uniform(-0.05, 0.05) * height
    else:
        scale = float(rng.uniform(0.55, 0.8))
        px = width * (0.5 + rng.uniform(-0.1, 0.1))
        py = height * (0.5 + rng.uniform(-0.1, 0.1))

    product = _product(spec.category, spec.damage, body, int(frame * scale / _PRODUCT_SPAN), rng)
    objects.append((product, (int(px - product.width / 2), int(py - product.height / 2))))

    image = _composite(surface, objects, spec.lighting, light_angle, rng)
    if spec.packaging == "none":
        _order_tag(image, ordered, rng, avoid=(px, py))
    return _camera(image, spec.lighting, light_angle, rng)


def spec_for_label(label: str, rng: np.random.Generator | random.Random) -> PhotoSpec:
    """A random spec whose photo supports ``label``.

    negative: visible damage, torn/crushed packaging or the wrong colour (at least one);
    positive: pristine, intact or no packaging, good light, a textured surface;
    neutral: pristine but dim light or a plain surface, never harsh light.
    """
    gen = _as_generator(rng)

    def pick(options: tuple[str, ...] | list[str]) -> str:
        return str(options[int(gen.integers(len(options)))])

    fields: dict[str, object] = {"category": pick(CATEGORIES), "colour": pick(list(COLOURS))}
    if label == "negative":
        flaw = pick(("damage", "damage", "damage", "packaging", "colour"))
        damaged = flaw == "damage" or gen.random() < 0.15
        fields |= {
            "damage": pick(tuple(d for d in DAMAGES if d != "none")) if damaged else "none",
            "packaging": pick(
                ("torn", "crushed")
                if flaw == "packaging"
                else ("none", "intact", "torn", "crushed", "none")
            ),
            "wrong_colour": flaw == "colour" or bool(gen.random() < 0.1),
            "lighting": pick(LIGHTINGS),
            "background": pick(BACKGROUNDS),
        }
    elif label == "positive":
        fields |= {
            "packaging": "intact" if gen.random() < 0.6 else "none",
            "lighting": "good",
            "background": pick(tuple(b for b in BACKGROUNDS if b != "plain")),
        }
    elif label == "neutral":
        dim = gen.random() < 0.7
        fields |= {
            "packaging": "none" if gen.random() < 0.6 else "intact",
            "lighting": "dim" if dim else "good",
            "background": pick(BACKGROUNDS) if dim else "plain",
        }
    else:
        raise ValueError(f"unknown label {label!r}; one of {LABELS}")
    return PhotoSpec.model_validate(fields)


def render_dataset(
    n: int, *, seed: int, size: tuple[int, int] = (256, 256)
) -> list[tuple[Image.Image, PhotoSpec, Label]]:
    """``n`` rendered photos with their specs and labels, balanced across labels (counts differ
    by at most one), in a seed-determined shuffled order."""
    rng = np.random.default_rng(seed)
    labels: list[Label] = [LABELS[i % len(LABELS)] for i in range(n)]
    order = rng.permutation(n)
    out: list[tuple[Image.Image, PhotoSpec, Label]] = []
    for i in order:
        label = labels[int(i)]
        spec = spec_for_label(label, rng)
        image = render_photo(spec, seed=int(rng.integers(2**63 - 1)), size=size)
        out.append((image, spec, label))
    return out


# --------------------------------------------------------------------------------------------
# small helpers


def _as_generator(rng: np.random.Generator | random.Random) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng.getrandbits(64))


def _shade(colour: RGB, factor: float) -> RGB:
    r, g, b = colour
    return (min(255, int(r * factor)), min(255, int(g * factor)), min(255, int(b * factor)))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        int(a[0] + (b[0] - a[0]) * t),
        int(a[1] + (b[1] - a[1]) * t),
        int(a[2] + (b[2] - a[2]) * t),
    )


def _rgba(colour: RGB, alpha: int = 255) -> tuple[int, int, int, int]:
    return (colour[0], colour[1], colour[2], alpha)


def _wrong_colour(ordered: str, rng: np.random.Generator) -> RGB:
    """A palette colour clearly different from the ordered one."""
    base = np.array(COLOURS[ordered], dtype=float)
    far = [c for c in COLOURS.values() if np.linalg.norm(np.array(c) - base) > 150]
    return far[int(rng.integers(len(far)))]


def _ragged(
    p0: tuple[float, float], p1: tuple[float, float], n: int, amp: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Points from ``p0`` to ``p1`` with random sideways jitter of up to ``amp`` (ends fixed)."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    ts = np.linspace(0.0, 1.0, n)
    offsets = rng.uniform(-amp, amp, n)
    offsets[0] = offsets[-1] = 0.0
    return [
        (x0 + (x1 - x0) * t + nx * o, y0 + (y1 - y0) * t + ny * o)
        for t, o in zip(ts, offsets, strict=True)
    ]


def _jagged_blob(
    cx: float, cy: float, r: float, rng: np.random.Generator, points: int = 12
) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = r * rng.uniform(0.55, 1.15, points)
    return [
        (cx + math.cos(a) * q, cy + math.sin(a) * q) for a, q in zip(angles, radii, strict=True)
    ]


def _clip_to(layer: Image.Image, mask: Image.Image) -> Image.Image:
    """``layer`` with its alpha limited to ``mask`` (an L image)."""
    layer.putalpha(ImageChops.multiply(layer.getchannel("A"), mask))
    return layer


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-1, 1]."""
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    return np.meshgrid(xs, ys)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: random cells upsampled bicubically."""
    small = rng.random((max(2, cells * height // width), cells), dtype=np.float32)
    img = Image.fromarray(small, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img)


# --------------------------------------------------------------------------------------------
# background surfaces


def _background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    xx, yy = _grid(width, height)
    if kind == "wood":
        base = np.array(_mix((150, 100, 58), (196, 150, 100), float(rng.random())), np.float32)
        u, v = (xx, yy) if rng.random() < 0.5 else (yy, xx)
        warp = _smooth_noise(rng, width, height, 4) * 6.0
        grain = np.sin((v * float(rng.uniform(18, 30)) + warp) * math.pi)
        tone = 1.0 + 0.07 * grain + 0.05 * (_smooth_noise(rng, width, height, 12) - 0.5)
        planks = np.abs(((u + 1) * float(rng.uniform(1.2, 2.2))) % 1.0 - 0.5) > 0.49
        tone = np.where(planks, tone * 0.6, tone)
        out = tone[..., None] * base
    elif kind == "marble":
        base = np.array(_mix((226, 224, 220), (240, 238, 234), float(rng.random())), np.float32)
        warp = _smooth_noise(rng, width, height, 5) * 7.0
        veins = np.abs(np.sin((xx * 2.5 + yy * 1.7) * math.pi + warp))
        tone = 1.0 - 0.22 * np.exp(-veins * 14.0) - 0.04 * _smooth_noise(rng, width, height, 8)
        out = tone[..., None] * base
    elif kind == "carpet":
        palette = [(120, 124, 132), (168, 150, 120), (120, 50, 48), (70, 90, 80), (150, 140, 150)]
        base = np.array(palette[int(rng.integers(len(palette)))], np.float32)
        fibres = rng.standard_normal((height, width), dtype=np.float32) * 0.09
        blotch = (_smooth_noise(rng, width, height, 6) - 0.5) * 0.16
        out = (1.0 + fibres + blotch)[..., None] * base
    elif kind == "tiles":
        base = np.array(_mix((200, 200, 196), (226, 220, 206), float(rng.random())), np.float32)
        n = float(rng.uniform(2.5, 4.5))
        fx, fy = ((xx + 1) * n + float(rng.random())) % 1.0, ((yy + 1) * n) % 1.0
        grout = (np.minimum(fx, 1 - fx) < 0.025) | (np.minimum(fy, 1 - fy) < 0.025)
        tone = np.where(grout, 0.72, 1.0 + 0.03 * (_smooth_noise(rng, width, height, 3) - 0.5))
        out = tone[..., None] * base
    else:  # plain: a wall or a sheet of paper, softly graded
        base = np.array(_mix((196, 198, 202), (236, 232, 224), float(rng.random())), np.float32)
        tone = 1.0 - 0.08 * (yy + 1) / 2 + 0.02 * (_smooth_noise(rng, width, height, 3) - 0.5)
        out = tone[..., None] * base
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# products (drawn in unit coordinates on a square canvas of ``s`` pixels)

_Box = tuple[float, float, float, float]


def _draw_phone(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    d.rounded_rectangle(
        [0.345 * s, 0.185 * s, 0.67 * s, 0.825 * s], radius=0.05 * s, fill=_shade(col, 0.6)
    )
    d.rounded_rectangle([0.33 * s, 0.17 * s, 0.66 * s, 0.82 * s], radius=0.05 * s, fill=col)
    screen = (0.345, 0.2, 0.645, 0.79)
    d.rounded_rectangle([v * s for v in screen], radius=0.03 * s, fill=(14, 16, 24))
    hue = _mix((30, 60, 120), (90, 40, 110), float(rng.random()))
    d.rectangle([0.36 * s, 0.24 * s, 0.63 * s, 0.75 * s], fill=hue)
    for row in range(5):
        for c in range(4):
            x, y = 0.375 + c * 0.065, 0.26 + row * 0.07
            icon = tuple(int(v) for v in rng.integers(60, 255, 3))
            d.rounded_rectangle(
                [x * s, y * s, (x + 0.045) * s, (y + 0.045) * s], radius=0.01 * s, fill=icon
            )
    d.ellipse([0.487 * s, 0.205 * s, 0.503 * s, 0.221 * s], fill=(5, 5, 8))
    d.rectangle([0.66 * s, 0.32 * s, 0.672 * s, 0.4 * s], fill=_shade(col, 0.5))
    return screen


def _draw_laptop(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    d.rounded_rectangle([0.2 * s, 0.16 * s, 0.8 * s, 0.57 * s], radius=0.015 * s, fill=col)
    display = (0.225, 0.185, 0.775, 0.545)
    d.rectangle([v * s for v in display], fill=(18, 20, 28))
    wall = _mix((20, 80, 140), (140, 60, 40), float(rng.random()))
    d.rectangle([0.235 * s, 0.195 * s, 0.765 * s, 0.535 * s], fill=wall)
    d.polygon(
        [(0.235 * s, 0.535 * s), (0.5 * s, 0.33 * s), (0.765 * s, 0.535 * s)],
        fill=_shade(wall, 1.5),
    )
    deck = [(0.2, 0.57), (0.8, 0.57), (0.9, 0.77), (0.1, 0.77)]
    d.polygon([(x * s, y * s) for x, y in deck], fill=_shade(col, 1.12))
    d.polygon(
        [(0.1 * s, 0.77 * s), (0.9 * s, 0.77 * s), (0.9 * s, 0.795 * s), (0.1 * s, 0.795 * s)],
        fill=_shade(col, 0.6),
    )
    keys = _shade(col, 0.45)
    for r in range(4):
        y = 0.59 + r * 0.028
        x0, x1 = 0.2 - (y - 0.57) * 0.5 + 0.03, 0.8 + (y - 0.57) * 0.5 - 0.03
        for k in range(12):
            kx = x0 + (x1 - x0) * k / 12
            d.rectangle(
                [kx * s, y * s, (kx + (x1 - x0) / 12 - 0.006) * s, (y + 0.02) * s], fill=keys
            )
    d.polygon(
        [(0.42 * s, 0.71 * s), (0.58 * s, 0.71 * s), (0.6 * s, 0.76 * s), (0.4 * s, 0.76 * s)],
        fill=_shade(col, 0.9),
    )
    return display


def _draw_headphones(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    d.arc(
        [0.23 * s, 0.16 * s, 0.77 * s, 0.74 * s], start=180, end=360, fill=col, width=int(0.055 * s)
    )
    d.arc(
        [0.255 * s, 0.19 * s, 0.745 * s, 0.74 * s],
        start=195,
        end=345,
        fill=_shade(col, 0.55),
        width=int(0.018 * s),
    )
    for x0 in (0.23, 0.715):
        d.rectangle([x0 * s, 0.44 * s, (x0 + 0.055) * s, 0.56 * s], fill=(150, 152, 158))
    accent = _shade(col, 1.3)
    for x0, inner in ((0.15, 0.29), (0.66, 0.66)):
        d.rounded_rectangle([x0 * s, 0.5 * s, (x0 + 0.19) * s, 0.82 * s], radius=0.07 * s, fill=col)
        d.rounded_rectangle(
            [inner * s, 0.53 * s, (inner + 0.05) * s, 0.79 * s], radius=0.025 * s, fill=(28, 28, 30)
        )
        cx = x0 + 0.095
        d.ellipse([(cx - 0.035) * s, 0.625 * s, (cx + 0.035) * s, 0.695 * s], fill=accent)
    return (0.15, 0.16, 0.85, 0.82)


def _draw_book(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    pages = [(0.7, 0.17), (0.745, 0.2), (0.745, 0.86), (0.3, 0.86), (0.26, 0.82), (0.7, 0.82)]
    d.polygon([(x * s, y * s) for x, y in pages], fill=(238, 230, 208))
    for i in range(1, 6):
        t = i / 6
        d.line(
            [
                ((0.7 + 0.045 * t) * s, (0.17 + 0.03 * t) * s),
                ((0.7 + 0.045 * t) * s, (0.82 + 0.04 * t) * s),
            ],
            fill=(200, 190, 170),
            width=1,
        )
    cover = (0.26, 0.16, 0.7, 0.82)
    d.rectangle([v * s for v in cover], fill=col)
    d.rectangle([0.26 * s, 0.16 * s, 0.3 * s, 0.82 * s], fill=_shade(col, 0.65))
    plate = _mix(col, (245, 240, 225), 0.8)
    d.rectangle([0.35 * s, 0.25 * s, 0.65 * s, 0.4 * s], fill=plate)
    ink = (30, 30, 34) if sum(plate) > 380 else (240, 240, 240)
    for i, w in enumerate((0.24, 0.18)):
        d.rectangle(
            [0.38 * s, (0.28 + i * 0.05) * s, (0.38 + w) * s, (0.31 + i * 0.05) * s], fill=ink
        )
    d.rectangle([0.38 * s, 0.72 * s, 0.58 * s, 0.745 * s], fill=plate)
    d.ellipse([0.42 * s, 0.46 * s, 0.58 * s, 0.62 * s], outline=plate, width=int(0.012 * s))
    return cover


def _draw_dvd(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    cx, cy, r = 0.62, 0.55, 0.21
    d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=(196, 200, 212))
    for i, tint in enumerate([(214, 200, 226), (190, 214, 222), (222, 214, 186), (206, 206, 214)]):
        q = r * (0.92 - i * 0.13)
        d.ellipse([(cx - q) * s, (cy - q) * s, (cx + q) * s, (cy + q) * s], fill=tint)
    d.pieslice(
        [(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s],
        start=-60,
        end=-30,
        fill=(236, 240, 248),
    )
    q = 0.06
    d.ellipse([(cx - q) * s, (cy - q) * s, (cx + q) * s, (cy + q) * s], fill=(226, 228, 232))
    q = 0.022
    d.ellipse([(cx - q) * s, (cy - q) * s, (cx + q) * s, (cy + q) * s], fill=(0, 0, 0, 0))
    case = (0.2, 0.18, 0.56, 0.8)
    d.rectangle([v * s for v in case], fill=(24, 24, 30))
    d.rectangle([0.215 * s, 0.2 * s, 0.545 * s, 0.78 * s], fill=col)
    d.ellipse([0.27 * s, 0.34 * s, 0.49 * s, 0.56 * s], fill=_shade(col, 1.45))
    d.rectangle([0.215 * s, 0.22 * s, 0.545 * s, 0.29 * s], fill=(240, 240, 236))
    d.rectangle([0.25 * s, 0.24 * s, 0.46 * s, 0.27 * s], fill=(40, 40, 44))
    d.rectangle([0.215 * s, 0.7 * s, 0.545 * s, 0.74 * s], fill=_shade(col, 0.6))
    return (0.2, 0.18, 0.83, 0.8)


def _draw_bottle(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    d.ellipse([0.38 * s, 0.27 * s, 0.62 * s, 0.5 * s], fill=col)
    d.rounded_rectangle([0.38 * s, 0.38 * s, 0.62 * s, 0.85 * s], radius=0.035 * s, fill=col)
    d.rectangle([0.455 * s, 0.17 * s, 0.545 * s, 0.3 * s], fill=col)
    cap = (30, 30, 34) if sum(col) > 300 else (232, 232, 232)
    d.rounded_rectangle([0.44 * s, 0.12 * s, 0.56 * s, 0.19 * s], radius=0.01 * s, fill=cap)
    for i in range(4):
        x = 0.447 + i * 0.03
        d.line([(x * s, 0.125 * s), (x * s, 0.185 * s)], fill=_shade(cap, 0.7), width=1)
    d.rectangle([0.38 * s, 0.52 * s, 0.62 * s, 0.7 * s], fill=(244, 242, 236))
    d.rectangle([0.42 * s, 0.56 * s, 0.58 * s, 0.6 * s], fill=_shade(col, 0.8))
    d.rectangle([0.42 * s, 0.63 * s, 0.54 * s, 0.65 * s], fill=(90, 90, 94))
    return (0.38, 0.27, 0.62, 0.85)


def _draw_shoe(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    upper = [
        (0.12, 0.72),
        (0.13, 0.63),
        (0.22, 0.57),
        (0.38, 0.52),
        (0.49, 0.45),
        (0.55, 0.36),
        (0.63, 0.32),
        (0.78, 0.3),
        (0.85, 0.34),
        (0.87, 0.52),
        (0.88, 0.72),
    ]
    d.polygon([(x * s, y * s) for x, y in upper], fill=col)
    d.polygon(
        [
            (x * s, y * s)
            for x, y in [(0.12, 0.72), (0.13, 0.63), (0.22, 0.58), (0.3, 0.6), (0.28, 0.72)]
        ],
        fill=_shade(col, 0.82),
    )
    d.ellipse([0.6 * s, 0.29 * s, 0.83 * s, 0.37 * s], fill=(30, 26, 24))
    stripe = (240, 240, 240) if sum(col) < 560 else (30, 60, 160)
    d.polygon(
        [(0.36 * s, 0.66 * s), (0.74 * s, 0.46 * s), (0.78 * s, 0.5 * s), (0.42 * s, 0.69 * s)],
        fill=stripe,
    )
    for i in range(4):
        x, y = 0.43 + i * 0.035, 0.49 - i * 0.04
        d.line(
            [(x * s, y * s), ((x + 0.06) * s, (y + 0.03) * s)],
            fill=(245, 245, 245),
            width=max(1, int(0.008 * s)),
        )
    sole = [(0.1, 0.72), (0.88, 0.72), (0.91, 0.76), (0.87, 0.81), (0.16, 0.81), (0.1, 0.77)]
    d.polygon([(x * s, y * s) for x, y in sole], fill=(236, 234, 228))
    d.line(
        [(0.13 * s, 0.775 * s), (0.88 * s, 0.775 * s)],
        fill=(170, 166, 160),
        width=max(1, int(0.008 * s)),
    )
    return (0.1, 0.3, 0.91, 0.81)


def _draw_mug(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    d.ellipse([0.55 * s, 0.4 * s, 0.8 * s, 0.7 * s], outline=col, width=int(0.05 * s))
    d.ellipse([0.28 * s, 0.73 * s, 0.64 * s, 0.84 * s], fill=_shade(col, 0.85))
    d.rectangle([0.28 * s, 0.32 * s, 0.64 * s, 0.785 * s], fill=col)
    d.ellipse([0.28 * s, 0.26 * s, 0.64 * s, 0.38 * s], fill=_shade(col, 1.15))
    d.ellipse([0.295 * s, 0.275 * s, 0.625 * s, 0.365 * s], fill=(70, 42, 24))
    logo = _mix(col, (250, 250, 250), 0.7) if sum(col) < 500 else (40, 40, 44)
    d.ellipse([0.39 * s, 0.48 * s, 0.53 * s, 0.62 * s], outline=logo, width=int(0.015 * s))
    return (0.28, 0.3, 0.64, 0.84)


def _draw_box(d: ImageDraw.ImageDraw, s: float, col: RGB, rng: np.random.Generator) -> _Box:
    front = [(0.2, 0.4), (0.64, 0.4), (0.64, 0.8), (0.2, 0.8)]
    top = [(0.2, 0.4), (0.64, 0.4), (0.8, 0.27), (0.36, 0.27)]
    side = [(0.64, 0.4), (0.8, 0.27), (0.8, 0.67), (0.64, 0.8)]
    for poly, f in ((front, 1.0), (top, 1.2), (side, 0.72)):
        d.polygon([(x * s, y * s) for x, y in poly], fill=_shade(col, f))
    ribbon = (232, 196, 70) if sum(col) < 520 or col[2] > 120 else (180, 30, 40)
    w = max(2, int(0.035 * s))
    d.line([(0.42 * s, 0.4 * s), (0.42 * s, 0.8 * s)], fill=ribbon, width=w)
    d.line([(0.42 * s, 0.4 * s), (0.58 * s, 0.27 * s)], fill=_shade(ribbon, 1.1), width=w)
    d.line([(0.28 * s, 0.335 * s), (0.72 * s, 0.335 * s)], fill=_shade(ribbon, 1.1), width=w)
    d.line([(0.72 * s, 0.335 * s), (0.72 * s, 0.735 * s)], fill=_shade(ribbon, 0.8), width=w)
    for dx in (-1, 1):
        d.ellipse(
            [(0.5 + dx * 0.06 - 0.05) * s, 0.27 * s, (0.5 + dx * 0.06 + 0.05) * s, 0.34 * s],
            outline=ribbon,
            width=max(2, w // 2),
        )
    return (0.2, 0.4, 0.64, 0.8)


_DRAWERS = {
    "phone": _draw_phone,
    "laptop": _draw_laptop,
    "headphones": _draw_headphones,
    "book": _draw_book,
    "dvd": _draw_dvd,
    "bottle": _draw_bottle,
    "shoe": _draw_shoe,
    "mug": _draw_mug,
    "box": _draw_box,
}


def _product(
    category: str, damage: str, colour: RGB, size_1x: int, rng: np.random.Generator
) -> Image.Image:
    """The product (RGBA, 1x, rotated, maybe mirrored) with its damage."""
    s = max(32, size_1x) * 2
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    focal = _DRAWERS[category](ImageDraw.Draw(layer), float(s), colour, rng)
    _gloss(layer, category, s)
    if damage != "none":
        layer = _DAMAGERS[damage](layer, focal, s, rng)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    small = layer.reduce(2)
    return small.rotate(
        float(rng.uniform(-22, 22)), resample=Image.Resampling.BILINEAR, expand=True
    )


def _gloss(layer: Image.Image, category: str, s: int) -> None:
    """A soft specular band across the product, clipped to it."""
    shine = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(shine)
    if category in ("bottle", "mug"):
        x = 0.41 if category == "bottle" else 0.32
        d.rectangle([x * s, 0.3 * s, (x + 0.035) * s, 0.8 * s], fill=(255, 255, 255, 70))
    else:
        d.polygon(
            [(0.25 * s, 0.15 * s), (0.45 * s, 0.15 * s), (0.2 * s, 0.85 * s), (0.05 * s, 0.85 * s)],
            fill=(255, 255, 255, 34),
        )
    layer.alpha_composite(_clip_to(shine, layer.getchannel("A")))


# --------------------------------------------------------------------------------------------
# damage (on the 2x product canvas)


def _point_in(
    focal: _Box, s: int, rng: np.random.Generator, margin: float = 0.2
) -> tuple[float, float]:
    x0, y0, x1, y1 = focal
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (float(rng.uniform(x0 + mx, x1 - mx)) * s, float(rng.uniform(y0 + my, y1 - my)) * s)


def _cracked(layer: Image.Image, focal: _Box, s: int, rng: np.random.Generator) -> Image.Image:
    cracks = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(cracks)
    cx, cy = _point_in(focal, s, rng)
    width = max(2, s // 160)
    step = s * 0.045
    rays = int(rng.integers(7, 13))
    ends: list[list[tuple[float, float]]] = []
    for k in range(rays):
        angle = 2 * math.pi * k / rays + float(rng.uniform(-0.25, 0.25))
        pts = [(cx, cy)]
        x, y = cx, cy
        for _ in range(int(rng.integers(6, 12))):
            angle += float(rng.uniform(-0.35, 0.35))
            x, y = x + math.cos(angle) * step, y + math.sin(angle) * step
            pts.append((x, y))
            if rng.random() < 0.18:  # a branch
                ba = angle + float(rng.choice([-1, 1])) * float(rng.uniform(0.5, 1.0))
                d.line(
                    [(x, y), (x + math.cos(ba) * step * 2, y + math.sin(ba) * step * 2)],
                    fill=(235, 240, 245, 200),
                    width=max(1, width - 1),
                )
        ends.append(pts)
        d.line([(px + 1, py + 1) for px, py in pts], fill=(10, 10, 12, 170), width=width)
        d.line(pts, fill=(236, 242, 248, 235), width=width)
    for ring in (2, 4):  # spider-web rings between neighbouring rays
        for a, b in zip(ends, ends[1:] + ends[:1], strict=True):
            if len(a) > ring and len(b) > ring:
                d.line([a[ring], b[ring]], fill=(230, 236, 244, 190), width=max(1, width - 1))
    r = step * 0.6
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(225, 232, 240, 200))
    layer.alpha_composite(_clip_to(cracks, layer.getchannel("A")))
    return layer


def _dented(layer: Image.Image, focal: _Box, s: int, rng: np.random.Generator) -> Image.Image:
    alpha = layer.getchannel("A")
    # one dent pushes the outline in: erase a bite from an edge and shade its rim
    x0, y0, x1, y1 = focal
    ex = float(rng.choice([x0, x1])) * s
    ey = float(rng.uniform(y0 + 0.2 * (y1 - y0), y1 - 0.2 * (y1 - y0))) * s
    r = s * float(rng.uniform(0.035, 0.06))
    shade = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(shade)
    d.ellipse([ex - r * 1.7, ey - r * 1.7, ex + r * 1.7, ey + r * 1.7], fill=(0, 0, 0, 120))
    for _ in range(int(rng.integers(1, 4))):
        # a depression lit from the top left: dark crescent up-left, bright rim down-right
        cx, cy = _point_in(focal, s, rng)
        rx, ry = s * float(rng.uniform(0.045, 0.09)), s * float(rng.uniform(0.035, 0.07))
        ox, oy = rx * 0.35, ry * 0.35
        d.ellipse(
            [cx - rx + ox, cy - ry + oy, cx + rx + ox, cy + ry + oy], fill=(255, 255, 255, 110)
        )
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(0, 0, 0, 170))
        d.ellipse(
            [cx - rx * 0.7 + ox, cy - ry * 0.7 + oy, cx + rx * 0.7 + ox, cy + ry * 0.7 + oy],
            fill=(0, 0, 0, 60),
        )
    shade = shade.filter(ImageFilter.GaussianBlur(s / 110))
    layer.alpha_composite(_clip_to(shade, alpha))
    ImageDraw.Draw(layer).ellipse([ex - r, ey - r, ex + r, ey + r], fill=(0, 0, 0, 0))
    return layer


def _scratched(layer: Image.Image, focal: _Box, s: int, rng: np.random.Generator) -> Image.Image:
    marks = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(marks)
    for _ in range(int(rng.integers(10, 26))):
        x, y = _point_in(focal, s, rng, margin=0.05)
        angle = float(rng.uniform(0, math.pi))
        length = s * float(rng.uniform(0.05, 0.28))
        pts = [(x, y)]
        for _ in range(3):
            angle += float(rng.uniform(-0.15, 0.15))
            x, y = x + math.cos(angle) * length / 3, y + math.sin(angle) * length / 3
            pts.append((x, y))
        w = int(rng.integers(1, 3)) * max(1, s // 300)
        d.line([(px + 1, py + 1) for px, py in pts], fill=(0, 0, 0, 90), width=w)
        d.line(pts, fill=(240, 240, 240, int(rng.integers(160, 240))), width=w)
    layer.alpha_composite(_clip_to(marks, layer.getchannel("A")))
    return layer


def _broken(layer: Image.Image, focal: _Box, s: int, rng: np.random.Generator) -> Image.Image:
    """Snap the product along a jagged line and displace one piece; add shards."""
    cx, cy = _point_in(focal, s, rng, margin=0.3)
    angle = float(rng.uniform(0, math.pi))
    dx, dy = math.cos(angle) * s, math.sin(angle) * s
    cut = _ragged((cx - dx, cy - dy), (cx + dx, cy + dy), 24, s * 0.025, rng)
    nx, ny = -math.sin(angle), math.cos(angle)
    far = [
        (cx + dx + nx * 2 * s, cy + dy + ny * 2 * s),
        (cx - dx + nx * 2 * s, cy - dy + ny * 2 * s),
    ]
    side = Image.new("L", layer.size, 0)
    ImageDraw.Draw(side).polygon(cut + far, fill=255)
    alpha = layer.getchannel("A")
    piece = layer.copy()
    piece.putalpha(ImageChops.multiply(alpha, side))
    rest = layer.copy()
    rest.putalpha(ImageChops.multiply(alpha, ImageChops.invert(side)))
    gap = s * float(rng.uniform(0.05, 0.09))
    piece = piece.rotate(
        float(rng.uniform(8, 24)) * float(rng.choice([-1, 1])),
        resample=Image.Resampling.BILINEAR,
        center=(cx, cy),
        translate=(round(nx * gap), round(ny * gap)),
    )
    edge = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    ImageDraw.Draw(edge).line(cut, fill=(250, 250, 250, 200), width=max(2, s // 150))
    rest.alpha_composite(_clip_to(edge, rest.getchannel("A")))
    rest.alpha_composite(piece)
    d = ImageDraw.Draw(rest)
    row = np.asarray(layer)[min(int(cy), s - 1)]
    colours = [tuple(int(v) for v in px[:3]) for px in row[row[:, 3] > 200][::17]] or [
        (120, 120, 120)
    ]
    for _ in range(int(rng.integers(3, 8))):
        t = float(rng.uniform(-0.35, 0.35))
        sx = cx + dx * t + nx * gap * float(rng.uniform(0.3, 2.5))
        sy = cy + dy * t + ny * gap * float(rng.uniform(0.3, 2.5))
        shard = _jagged_blob(sx, sy, s * float(rng.uniform(0.01, 0.025)), rng, points=4)
        fill = colours[int(rng.integers(len(colours)))]
        d.polygon(shard, fill=(*fill, 255), outline=(230, 230, 230, 255))
    return rest


_DAMAGERS = {"cracked": _cracked, "dented": _dented, "scratched": _scratched, "broken": _broken}


# --------------------------------------------------------------------------------------------
# packaging (a cardboard shipping box, 2x canvas)


def _packaging(kind: str, s: int, ordered: RGB, rng: np.random.Generator) -> Image.Image:
    s = max(32, s)
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    board = _mix(_CARDBOARD, (206, 170, 120), float(rng.random()))
    depth_x, depth_y = float(rng.uniform(0.12, 0.2)), float(rng.uniform(0.1, 0.16))
    x0, x1, y0, y1 = 0.08, 0.7, 0.3, 0.9
    if kind == "crushed":
        y0 += float(rng.uniform(0.12, 0.22))  # squashed
        depth_y *= 0.6

    def corner(x: float, y: float, amount: float) -> tuple[float, float]:
        return (x + float(rng.uniform(-amount, amount)), y + float(rng.uniform(-amount, amount)))

    jitter = 0.08 if kind == "crushed" else 0.0
    f_tl, f_tr = corner(x0, y0, jitter), corner(x1, y0, jitter)
    f_br, f_bl = (x1, y1), (x0, y1)
    b_tr = corner(x1 + depth_x, y0 - depth_y, jitter)
    b_tl = corner(x0 + depth_x, y0 - depth_y, jitter)
    b_br = (x1 + depth_x, y1 - depth_y)

    def edge(
        a: tuple[float, float], b: tuple[float, float], rough: float
    ) -> list[tuple[float, float]]:
        if rough <= 0:
            return [a, b]
        return _ragged(a, b, 9, rough, rng)[:-1]

    rough = {"crushed": 0.012, "torn": 0.006}.get(kind, 0.0)
    front = (
        edge(f_tl, f_tr, rough) + edge(f_tr, f_br, rough) + [f_br, f_bl] + edge(f_bl, f_tl, rough)
    )
    side = edge(f_tr, b_tr, rough) + edge(b_tr, b_br, rough) + [b_br, f_br] + edge(f_br, f_tr, 0)
    top = edge(f_tl, f_tr, 0) + edge(f_tr, b_tr, rough) + edge(b_tr, b_tl, rough) + [b_tl, f_tl]

    def poly(points: list[tuple[float, float]], fill: RGB | tuple[int, int, int, int]) -> None:
        d.polygon([(x * s, y * s) for x, y in points], fill=fill)

    poly(side, _shade(board, 0.72))
    poly(front, board)
    if kind == "torn":
        poly(top, (58, 40, 26))  # the opened box: dark inside
        flap_tip = (f_tl[0] + (f_tr[0] - f_tl[0]) * float(rng.uniform(0.3, 0.7)), b_tl[1])
        flap = [
            f_tl,
            *_ragged(f_tl, flap_tip, 8, 0.02, rng)[1:],
            *_ragged(flap_tip, f_tr, 8, 0.025, rng)[1:],
        ]
        poly(flap, _shade(board, 1.12))
        d.line([(x * s, y * s) for x, y in flap], fill=(236, 222, 196), width=max(2, s // 160))
        hang = [(f_tr[0] - 0.02, f_tr[1]), (f_tr[0] - 0.2, f_tr[1])]
        drop = float(rng.uniform(0.12, 0.22))
        hang += _ragged(
            (f_tr[0] - 0.18, f_tr[1] + drop), (f_tr[0] - 0.04, f_tr[1] + drop * 0.8), 6, 0.02, rng
        )
        poly(hang, _shade(board, 0.9))
        d.line([(x * s, y * s) for x, y in hang[2:]], fill=(236, 222, 196), width=max(2, s // 160))
    else:
        poly(top, _shade(board, 1.15))
        tape = (214, 190, 150, 255) if kind == "intact" else (200, 176, 136, 255)
        mx0, mx1 = (f_tl[0] + f_tr[0]) / 2, (b_tl[0] + b_tr[0]) / 2
        my0, my1 = (f_tl[1] + f_tr[1]) / 2, (b_tl[1] + b_tr[1]) / 2
        tape_pts = [(mx0, my0), (mx1, my1)]
        if kind == "crushed":
            tape_pts = _ragged((mx0, my0), (mx1, my1), 5, 0.01, rng)
        d.line([(x * s, y * s) for x, y in tape_pts], fill=tape, width=max(3, int(0.05 * s)))
        d.line(
            [(mx0 * s, my0 * s), (mx0 * s, (my0 + 0.1) * s)], fill=tape, width=max(3, int(0.05 * s))
        )

    marks = Image.new("RGBA", im.size, (0, 0, 0, 0))
    m = ImageDraw.Draw(marks)
    for i in range(0, s, max(3, s // 60)):  # corrugation
        m.line([(i, 0), (i, s)], fill=(0, 0, 0, 10), width=1)
    ink = (40, 34, 30, 200)
    m.rectangle([(x0 + 0.05) * s, (y0 + 0.08) * s, (x0 + 0.2) * s, (y0 + 0.13) * s], fill=ink)
    m.rectangle([(x0 + 0.05) * s, (y0 + 0.15) * s, (x0 + 0.3) * s, (y0 + 0.17) * s], fill=ink)
    # the order label: white sticker, barcode, ordered-colour swatch
    lx, ly = x0 + 0.32, y1 - 0.24
    m.rectangle([lx * s, ly * s, (lx + 0.24) * s, (ly + 0.16) * s], fill=(246, 246, 242, 255))
    m.rectangle(
        [(lx + 0.015) * s, (ly + 0.02) * s, (lx + 0.095) * s, (ly + 0.1) * s], fill=_rgba(ordered)
    )
    for k in range(12):
        bx = lx + 0.11 + k * 0.01
        m.rectangle(
            [bx * s, (ly + 0.03) * s, (bx + 0.004 + 0.003 * (k % 3)) * s, (ly + 0.13) * s],
            fill=(20, 20, 20, 255),
        )
    if kind == "crushed":
        for _ in range(int(rng.integers(3, 7))):
            a = (float(rng.uniform(x0, x1 + depth_x)), float(rng.uniform(y0 - depth_y, y1)))
            b = (a[0] + float(rng.uniform(-0.3, 0.3)), a[1] + float(rng.uniform(-0.3, 0.3)))
            pts = [(x * s, y * s) for x, y in _ragged(a, b, 5, 0.015, rng)]
            m.line(pts, fill=(40, 26, 14, 150), width=max(2, s // 120))
            m.line(
                [(x + 2, y + 1) for x, y in pts], fill=(240, 220, 190, 110), width=max(1, s // 200)
            )
        cx, cy = (f_tl[0] + b_tr[0]) / 2, (f_tl[1] + b_tr[1]) / 2
        m.ellipse(
            [(cx - 0.12) * s, (cy - 0.04) * s, (cx + 0.12) * s, (cy + 0.04) * s],
            fill=(30, 20, 10, 110),
        )
    if kind == "torn":
        for _ in range(int(rng.integers(1, 4))):
            hx, hy = (
                float(rng.uniform(x0 + 0.08, x1 - 0.08)),
                float(rng.uniform(y0 + 0.1, y1 - 0.1)),
            )
            r = float(rng.uniform(0.04, 0.08))
            hole = _jagged_blob(hx, hy, r, rng, points=int(rng.integers(9, 15)))
            rim = [(hx + (x - hx) * 1.2, hy + (y - hy) * 1.2) for x, y in hole]
            m.polygon([(x * s, y * s) for x, y in rim], fill=(234, 218, 190, 255))
            m.polygon([(x * s, y * s) for x, y in hole], fill=(34, 24, 16, 255))
        for _ in range(int(rng.integers(2, 5))):  # peeled tear lines
            a = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
            b = (a[0] + float(rng.uniform(-0.25, 0.25)), a[1] + float(rng.uniform(-0.2, 0.2)))
            m.line(
                [(x * s, y * s) for x, y in _ragged(a, b, 7, 0.02, rng)],
                fill=(238, 224, 200, 230),
                width=max(2, s // 140),
            )
    im.alpha_composite(_clip_to(marks, im.getchannel("A")))
    return im


# --------------------------------------------------------------------------------------------
# scene, light and camera


def _composite(
    surface: np.ndarray,
    objects: list[tuple[Image.Image, tuple[int, int]]],
    lighting: str,
    light_angle: float,
    rng: np.random.Generator,
) -> Image.Image:
    height, width = surface.shape[:2]
    frame = min(width, height)
    mask = Image.new("L", (width, height), 0)
    layers = []
    for obj, (x, y) in objects:
        layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        layer.paste(obj, (x, y))
        layers.append(layer)
        mask = ImageChops.lighter(mask, layer.getchannel("A"))
    softness, opacity, reach = {
        "good": (0.025, 0.42, 0.03),
        "dim": (0.045, 0.3, 0.02),
        "harsh": (0.006, 0.62, 0.06),
    }[lighting]
    shift = frame * reach * float(rng.uniform(0.7, 1.3))
    sx, sy = int(-math.cos(light_angle) * shift), int(-math.sin(light_angle) * shift)
    shadow = Image.new("L", (width, height), 0)
    shadow.paste(mask, (sx, sy))
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(0.5, frame * softness)))
    dark = 1.0 - opacity * (np.asarray(shadow, dtype=np.float32) / 255.0)
    lit = np.clip(surface * dark[..., None], 0, 255).astype(np.uint8)
    scene = Image.fromarray(lit, "RGB").convert("RGBA")
    for layer in layers:
        scene.alpha_composite(layer)
    return scene.convert("RGB")


def _order_tag(
    image: Image.Image, colour: RGB, rng: np.random.Generator, avoid: tuple[float, float]
) -> None:
    """A small white card with the ordered-colour swatch, lying in a free corner."""
    width, height = image.size
    frame = min(width, height)
    corners = [(0.14, 0.12), (0.86, 0.12), (0.14, 0.88), (0.86, 0.88)]
    corners.sort(key=lambda c: -math.hypot(c[0] * width - avoid[0], c[1] * height - avoid[1]))
    cx, cy = corners[int(rng.integers(2))]
    cx, cy = cx * width, cy * height
    w, h = frame * 0.2, frame * 0.12
    angle = float(rng.uniform(-0.4, 0.4))
    ca, sa = math.cos(angle), math.sin(angle)

    def rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
        return [
            (cx + x * ca - y * sa, cy + x * sa + y * ca)
            for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        ]

    d = ImageDraw.Draw(image)
    d.polygon(rect(-w / 2 + 2, -h / 2 + 2, w / 2 + 2, h / 2 + 2), fill=(60, 60, 60))
    d.polygon(rect(-w / 2, -h / 2, w / 2, h / 2), fill=(244, 244, 240))
    d.polygon(rect(-w / 2 + h * 0.15, -h * 0.35, -w / 2 + h * 0.85, h * 0.35), fill=colour)
    d.polygon(rect(-w / 2 + h, -h * 0.25, w / 2 - h * 0.2, -h * 0.1), fill=(60, 60, 64))
    d.polygon(rect(-w / 2 + h, h * 0.05, w / 2 - h * 0.5, h * 0.18), fill=(120, 120, 124))


def _camera(
    image: Image.Image, lighting: str, light_angle: float, rng: np.random.Generator
) -> Image.Image:
    """Light falloff, colour cast, contrast, sensor noise, lens blur and JPEG."""
    width, height = image.size
    xx, yy = _grid(width, height)
    arr = np.asarray(image, dtype=np.float32)
    direction = xx * math.cos(light_angle) + yy * math.sin(light_angle)
    radius = xx * xx + yy * yy
    if lighting == "dim":
        gain = float(rng.uniform(0.38, 0.55))
        light = gain * (1.0 + 0.15 * direction) * (1.0 - 0.28 * radius)
        tint = np.array([1.08, 0.98, 0.78], np.float32)
        contrast, noise, blur, quality = (
            0.8,
            float(rng.uniform(7, 11)),
            0.9,
            int(rng.integers(45, 70)),
        )
    elif lighting == "harsh":
        lx, ly = -math.cos(light_angle) * 0.5, -math.sin(light_angle) * 0.5
        spot = np.exp(-((xx + lx) ** 2 + (yy + ly) ** 2) / 0.18)
        light = (0.9 + 0.35 * direction) * (1.0 - 0.1 * radius) + 0.55 * spot
        tint = np.array([1.0, 1.0, 1.04], np.float32)
        contrast, noise, blur, quality = 1.35, 3.0, 0.3, int(rng.integers(70, 92))
    else:
        light = float(rng.uniform(0.96, 1.08)) * (1.0 + 0.1 * direction) * (1.0 - 0.12 * radius)
        tint = np.array(
            [1.0 + float(rng.uniform(-0.03, 0.03)), 1.0, 1.0 + float(rng.uniform(-0.03, 0.03))],
            np.float32,
        )
        contrast, noise, blur, quality = (
            1.05,
            float(rng.uniform(2, 4)),
            0.45,
            int(rng.integers(72, 92)),
        )
    arr = arr * light[..., None] * tint
    mean = float(arr.mean())
    arr = (arr - mean) * contrast + mean
    grain = rng.standard_normal((height, width), dtype=np.float32) * noise
    arr += grain[..., None]
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    out = out.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as jpeg:
        return jpeg.convert("RGB")
