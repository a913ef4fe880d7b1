"""The generation spec: what a synthetic dataset should contain."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsense.images.render import CATEGORIES as PHOTO_CATEGORIES

__all__ = ["CATEGORY_DEFAULTS", "DEFAULT_SIGNALS", "IMAGE_SIGNALS", "GenerationSpec"]

#: image signals a spec may ask for, and what the renderer draws for each
IMAGE_SIGNALS = ("cracked", "dented", "scratched", "broken", "torn_packaging",
                 "crushed_packaging", "wrong_colour", "pristine_good_light", "dim_light",
                 "plain_background", "intact_packaging")

DEFAULT_SIGNALS: dict[str, list[str]] = {
    "negative": ["cracked", "dented", "scratched", "broken", "torn_packaging",
                 "crushed_packaging", "wrong_colour"],
    "neutral": ["dim_light", "plain_background"],
    "positive": ["pristine_good_light", "intact_packaging"],
}

#: sensible aspects and photo shape for known shop categories (a spec may override both)
CATEGORY_DEFAULTS: dict[str, dict] = {
    "dvd": {"photo_category": "dvd", "noun": "movie",
            "aspects": ["picture", "sound", "story", "acting", "extras", "price", "quality",
                        "ending", "characters"]},
    "books": {"photo_category": "book", "noun": "book",
              "aspects": ["story", "writing", "characters", "ending", "price", "author"]},
    "electronics": {"photo_category": "box", "noun": "product",
                    "aspects": ["battery", "sound", "quality", "price", "screen", "setup"]},
}


class GenerationSpec(BaseModel):
    """Input of the synthetic agent. Every generated record keeps this spec (and its own
    per-sample controls) in ``source.spec``."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field(description="product category, e.g. 'dvd'")
    products: list[str] = Field(default_factory=list, description="product names to mention")
    count_per_label: dict[Literal["negative", "neutral", "positive"], int] = Field(
        default_factory=lambda: {"negative": 50, "neutral": 50, "positive": 50})
    aspects: list[str] = Field(default_factory=list, description="aspects to talk about")
    noun: str | None = Field(None, description="what the product is called ('movie')")
    photo_category: str | None = Field(None, description=f"renderer shape: {PHOTO_CATEGORIES}")
    image_signals: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_SIGNALS))
    image_fraction: float = Field(0.5, ge=0, le=1, description="share of reviews with a photo")
    mine_from: list[str] = Field(
        default_factory=lambda: ["blitzer-books", "blitzer-electronics", "huliu-reviews"],
        description="shared sets whose phrasing grounds the text (keep the target category "
                    "out of it for a cold-start experiment)")
    generator: Literal["grounded", "llm"] = "grounded"
    style_examples: list[str] = Field(
        default_factory=list, description="real reviews of the target category (no labels "
        "needed) that the LLM imitates: vocabulary, length and style come from the target")
    temperature: float = Field(0.8, ge=0, le=2, description="LLM sampling temperature")
    seed: int = 0

    @model_validator(mode="after")
    def _fill(self) -> GenerationSpec:
        defaults = CATEGORY_DEFAULTS.get(self.category, {})
        if not self.aspects:
            self.aspects = list(defaults.get("aspects", ["quality", "price"]))
        if self.noun is None:
            self.noun = defaults.get("noun", "product")
        if self.photo_category is None:
            self.photo_category = defaults.get("photo_category", "box")
        if self.photo_category not in PHOTO_CATEGORIES:
            raise ValueError(f"photo_category must be one of {PHOTO_CATEGORIES}")
        for label, signals in self.image_signals.items():
            bad = [s for s in signals if s not in IMAGE_SIGNALS]
            if bad:
                raise ValueError(f"unknown image signals for {label}: {bad}; "
                                 f"known: {IMAGE_SIGNALS}")
        return self
