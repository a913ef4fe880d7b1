"""Data contracts shared by every deployable: Review, dataset manifest, Prediction."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Label = Literal["negative", "neutral", "positive"]
SourceKind = Literal["scraped", "synthetic", "imported"]
Modality = Literal["text", "image"]
#: where a review's label came from: a person (``human``), its star rating (``rating``), the
#: LLM (``llm``), a model (``model``), the LLM and a model together (``ensemble``), or the
#: generation spec of a synthetic review (``spec``)
LabelSource = Literal["human", "rating", "llm", "model", "ensemble", "spec"]

#: 2: ``Review.label_source`` and ``label_confidence`` (readers accept 1 and 2)
SCHEMA_VERSION = 2


def review_id(source: str, source_id: str) -> str:
    """Stable id of a review: a hash of where it came from and its id there."""
    return hashlib.sha256(f"{source}\x1f{source_id}".encode()).hexdigest()[:24]


def rating_to_label(rating: float | None) -> Label | None:
    """Star rating to label: 1-2 negative, 3 neutral, 4-5 positive."""
    if rating is None:
        return None
    if rating <= 2:
        return "negative"
    if rating >= 4:
        return "positive"
    return "neutral"


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="object-store URI, dataset-relative path or http(s) URL")
    sha256: str | None = None
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)


class Product(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str | None = None
    category: str | None = None


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SourceKind
    name: str = Field(description="dataset, site or generator family, e.g. 'blitzer'")
    source_id: str | None = Field(None, description="id of the review at its source")
    url: str | None = None
    generator: str | None = Field(None, description="what produced a synthetic review")
    spec: dict[str, Any] | None = Field(None, description="the generation spec, for synthetic data")


class Review(BaseModel):
    """One customer review, from any source."""

    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    title: str | None = None
    rating: float | None = Field(None, ge=1, le=5)
    label: Label | None = None
    label_source: LabelSource | None = Field(None, description="where ``label`` came from")
    label_confidence: float | None = Field(None, ge=0, le=1, description="the labeller's "
                                           "probability of ``label`` (automatic labels)")
    images: list[ImageRef] = Field(default_factory=list)
    product: Product | None = None
    source: Source
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def make(cls, *, source: Source, text: str, **fields: Any) -> Review:
        """Build a review whose id is derived from its source and source id (or text)."""
        sid = source.source_id or hashlib.sha256(text.encode()).hexdigest()
        return cls(id=review_id(source.name, sid), text=text, source=source, **fields)


class LabelCounts(BaseModel):
    negative: int = 0
    neutral: int = 0
    positive: int = 0
    unlabelled: int = 0


class DatasetManifest(BaseModel):
    """``manifest.json`` beside ``reviews.jsonl`` and ``images/`` under a dataset prefix."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    name: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    count: int
    image_count: int = 0
    labels: LabelCounts = Field(default_factory=LabelCounts)
    labels_by_category: dict[str, LabelCounts] = Field(default_factory=dict)
    provenance: list[dict[str, Any]] = Field(
        default_factory=list, description="sources, commands and parameters that made it"
    )
    digest: str = Field(description="sha256 of reviews.jsonl as written")


class ModelRef(BaseModel):
    name: str
    version: str | None = None
    uri: str | None = None


class SimilarReview(BaseModel):
    id: str
    text: str
    label: Label | None = None
    score: float


class Prediction(BaseModel):
    """What the API answers for one review."""

    label: Label
    scores: dict[str, float]
    model: ModelRef
    modalities: list[Modality]
    similar: list[SimilarReview] = Field(default_factory=list)
    similar_skipped: Literal["load", "deadline", "error"] | None = Field(
        None, description="why ``similar`` is empty although similar reviews were asked for: "
        "the service was busy (load), the lookup ran out of its time budget (deadline) or "
        "failed (error); null when the lookup ran or was not asked for")
    cached: bool = Field(False, description="answered from the response cache (the same text "
                         "and photo were answered by this model version before)")
    latency_ms: float

    @field_validator("scores")
    @classmethod
    def _known_labels(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - {"negative", "neutral", "positive"}
        if unknown:
            raise ValueError(f"unknown labels in scores: {sorted(unknown)}")
        return v
