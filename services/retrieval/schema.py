"""What the indexes store and return: :class:`Doc` (one indexed item), :class:`Filters`,
:class:`Hit` and a dense index's :class:`Snapshot`. Shared by the dense and sparse backends so
that both hold the same fields."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsense.schemas import ImageRef, Label, Review
from shopsense.text import review_content

Mode = Literal["hybrid", "dense", "sparse"]
MODES: tuple[str, ...] = ("hybrid", "dense", "sparse")
#: names of the ranked lists a search can fuse
RETRIEVERS: tuple[str, ...] = ("dense", "sparse", "image")
#: payload fields the filters act on (keyword fields + the numeric rating)
FILTER_FIELDS: tuple[str, ...] = ("category", "label", "product", "rating")

# Fixed namespace: the Qdrant point id of a review id never changes between runs or machines.
_POINT_NAMESPACE = uuid.UUID("6f1d2c1e-4b8f-5a0e-9d3c-5d1e7a9b2c40")


def point_id(doc_id: str) -> str:
    """The Qdrant point id (a UUID) of a review id; the review id stays in the payload."""
    return str(uuid.uuid5(_POINT_NAMESPACE, doc_id))


@dataclass
class Doc:
    """One item in both indexes. ``content`` (title and text) is what BM25 and MiniLM read."""

    id: str
    text: str
    title: str | None = None
    category: str | None = None
    label: str | None = None
    product: str | None = None
    rating: float | None = None
    product_name: str | None = None
    source: str | None = None
    images: list[ImageRef] = field(default_factory=list)

    @property
    def content(self) -> str:
        return review_content(self.title, self.text)

    def payload(self) -> dict[str, Any]:
        """Stored fields (filter fields only when set: a missing field never matches a filter)."""
        out: dict[str, Any] = {"review_id": self.id, "text": self.text}
        for key in ("title", "category", "label", "product", "product_name", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.rating is not None:
            out["rating"] = float(self.rating)
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Doc:
        """The inverse of :meth:`payload` (images are not part of a payload)."""
        return cls(
            id=str(payload["review_id"]),
            text=payload.get("text") or "",
            **{key: payload.get(key) for key in ("title", "category", "label", "product",
                                                  "product_name", "source")},
            rating=payload.get("rating"),
        )

    @classmethod
    def from_review(cls, review: Review) -> Doc:
        p = review.product
        return cls(
            id=review.id,
            text=review.text,
            title=review.title,
            category=p.category if p else None,
            label=review.label,
            product=p.id if p else None,
            rating=review.rating,
            product_name=p.name if p else None,
            source=review.source.name,
            images=list(review.images),
        )


class Filters(BaseModel):
    """Exact match on category, label and product id; inclusive rating range. A review without
    the field never matches a filter on it. The same semantics in every backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str | None = None
    label: Label | None = None
    product: str | None = None
    rating_gte: float | None = Field(None, ge=1, le=5)
    rating_lte: float | None = Field(None, ge=1, le=5)

    @model_validator(mode="after")
    def _range(self) -> Filters:
        if (self.rating_gte is not None and self.rating_lte is not None
                and self.rating_gte > self.rating_lte):
            raise ValueError(f"rating_gte {self.rating_gte} > rating_lte {self.rating_lte}")
        return self

    def terms(self) -> dict[str, str]:
        """The exact-match conditions that are set."""
        return {k: v for k, v in (("category", self.category), ("label", self.label),
                                  ("product", self.product)) if v is not None}

    def is_empty(self) -> bool:
        return not self.terms() and self.rating_gte is None and self.rating_lte is None

    def matches(self, payload: dict[str, Any]) -> bool:
        """Reference semantics (used by tests to check every backend)."""
        for key, value in self.terms().items():
            if payload.get(key) != value:
                return False
        rating = payload.get("rating")
        if self.rating_gte is not None and (rating is None or rating < self.rating_gte):
            return False
        if self.rating_lte is not None and (rating is None or rating > self.rating_lte):
            return False
        return True


class BackendHit(BaseModel):
    """One hit from one backend: the review id, the backend's own score, its stored fields."""

    id: str
    score: float
    payload: dict[str, Any] = Field(default_factory=dict)


class Hit(BaseModel):
    """One ranked review of a search: fused ``score`` and each retriever's own score and rank
    (``None`` where the review was not in that retriever's candidate list)."""

    id: str
    score: float = Field(description="fused score (in a single-retriever search, its own score)")
    scores: dict[str, float | None] = Field(description="raw score per retriever")
    ranks: dict[str, int | None] = Field(description="1-based rank per retriever")
    text: str
    title: str | None = None
    label: str | None = None
    rating: float | None = None
    product: str | None = None
    category: str | None = None


@dataclass
class Snapshot:
    """The stored state of some points before a write, to put back on failure.

    ``payloads``: the payload of each id that existed (what the sparse index is rebuilt from);
    ``state``: the backend's own copy of those points (vectors included), read only by the
    backend's ``restore``."""

    ids: list[str]
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: Any = None

    @property
    def existing(self) -> list[str]:
        return [i for i in self.ids if i in self.payloads]
