from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from shopsense.images import (
    CATEGORIES,
    COLOURS,
    PhotoSpec,
    render_dataset,
    render_photo,
    spec_for_label,
)
from shopsense.images.render import BACKGROUNDS, DAMAGES, LIGHTINGS, PACKAGINGS


def pixels(img) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(img, dtype=np.int16)


def diff(a, b) -> float:  # type: ignore[no-untyped-def]
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_output_size_and_mode() -> None:
    img = render_photo(PhotoSpec(category="phone"), seed=1)
    assert img.mode == "RGB" and img.size == (256, 256)
    wide = render_photo(PhotoSpec(category="laptop", packaging="torn"), seed=1, size=(320, 200))
    assert wide.mode == "RGB" and wide.size == (320, 200)


def test_deterministic_for_a_seed() -> None:
    spec = PhotoSpec(
        category="mug",
        damage="cracked",
        packaging="crushed",
        colour="red",
        lighting="harsh",
        background="marble",
    )
    first, again = render_photo(spec, seed=42), render_photo(spec, seed=42)
    assert np.array_equal(pixels(first), pixels(again))
    assert diff(first, render_photo(spec, seed=43)) > 1.0


@pytest.mark.parametrize(
    "change",
    [
        {"category": "book"},
        {"damage": "cracked"},
        {"damage": "broken"},
        {"packaging": "torn"},
        {"colour": "yellow"},
        {"wrong_colour": True},
        {"lighting": "dim"},
        {"background": "carpet"},
    ],
)
def test_different_specs_give_different_images(change: dict[str, object]) -> None:
    base = PhotoSpec(category="phone", colour="blue", background="wood")
    other = base.model_copy(update=change)
    assert diff(render_photo(base, seed=7), render_photo(other, seed=7)) > 1.0


def test_every_combination_renders() -> None:
    for i, category in enumerate(CATEGORIES):
        for j, damage in enumerate(DAMAGES):
            spec = PhotoSpec(
                category=category,
                damage=damage,
                packaging=PACKAGINGS[(i + j) % len(PACKAGINGS)],
                colour=list(COLOURS)[(i * 5 + j) % len(COLOURS)],
                wrong_colour=(i + j) % 4 == 0,
                lighting=LIGHTINGS[(i + j) % len(LIGHTINGS)],
                background=BACKGROUNDS[(i + 2 * j) % len(BACKGROUNDS)],
            )
            img = render_photo(spec, seed=i * 100 + j, size=(96, 96))
            assert img.size == (96, 96) and img.mode == "RGB"
            assert pixels(img).std() > 5  # not blank


def test_at_least_eight_shapes_look_different() -> None:
    """Same seed and setting: the products differ pairwise, not just by colour."""
    imgs = {
        c: pixels(
            render_photo(PhotoSpec(category=c, colour="black", background="plain"), seed=3)
        ).mean(axis=2)
        for c in CATEGORIES
    }
    assert len(imgs) >= 8
    names = list(imgs)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert np.abs(imgs[names[a]] - imgs[names[b]]).mean() > 2.0, (names[a], names[b])


def test_lighting_changes_brightness() -> None:
    spec = PhotoSpec(category="bottle", background="plain")
    good = pixels(render_photo(spec, seed=5)).mean()
    dim = pixels(render_photo(spec.model_copy(update={"lighting": "dim"}), seed=5)).mean()
    assert dim < good * 0.7


def test_spec_validation() -> None:
    with pytest.raises(ValidationError):
        PhotoSpec(category="phone", colour="octarine")
    with pytest.raises(ValidationError):
        PhotoSpec(category="spaceship")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PhotoSpec(category="phone", damage="melted")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PhotoSpec(category="phone", sparkles=True)  # type: ignore[call-arg]


def check_label_rules(spec: PhotoSpec, label: str) -> None:
    if label == "negative":
        assert spec.damage != "none" or spec.packaging in ("torn", "crushed") or spec.wrong_colour
        assert spec.defective
    elif label == "positive":
        assert spec.damage == "none" and not spec.wrong_colour
        assert spec.packaging in ("intact", "none")
        assert spec.lighting == "good" and spec.background != "plain"
        assert not spec.defective
    else:
        assert spec.damage == "none" and not spec.wrong_colour
        assert spec.packaging in ("intact", "none")
        assert spec.lighting in ("dim", "good")
        assert spec.lighting == "dim" or spec.background == "plain"
        assert not spec.defective


@pytest.mark.parametrize("label", ["negative", "neutral", "positive"])
def test_spec_for_label_follows_the_rules(label: str) -> None:
    rng = np.random.default_rng(0)
    specs = [spec_for_label(label, rng) for _ in range(300)]
    for spec in specs:
        check_label_rules(spec, label)
    assert len({s.category for s in specs}) == len(CATEGORIES)  # all shapes get used
    if label == "negative":
        assert {s.damage for s in specs} == set(DAMAGES)
        assert {"torn", "crushed"} <= {s.packaging for s in specs}
        assert any(
            s.wrong_colour and s.damage == "none" and s.packaging in ("none", "intact")
            for s in specs
        )  # wrong colour alone is enough


def test_spec_for_label_accepts_random_random_and_rejects_unknown_labels() -> None:
    assert spec_for_label("positive", random.Random(1)) == spec_for_label(
        "positive", random.Random(1)
    )
    with pytest.raises(ValueError, match="label"):
        spec_for_label("mixed", np.random.default_rng(0))


def test_render_dataset_is_balanced_consistent_and_deterministic() -> None:
    data = render_dataset(10, seed=11, size=(64, 64))
    counts = Counter(label for _, _, label in data)
    assert sorted(counts.values()) == [3, 3, 4] and set(counts) == {
        "negative",
        "neutral",
        "positive",
    }
    for img, spec, label in data:
        assert img.size == (64, 64)
        check_label_rules(spec, label)
    again = render_dataset(10, seed=11, size=(64, 64))
    assert [(s, lab) for _, s, lab in data] == [(s, lab) for _, s, lab in again]
    assert all(np.array_equal(pixels(a[0]), pixels(b[0])) for a, b in zip(data, again, strict=True))
    assert [s for _, s, _ in render_dataset(10, seed=12, size=(64, 64))] != [s for _, s, _ in data]

