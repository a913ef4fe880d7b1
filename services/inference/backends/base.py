"""The one seam every classifier backend implements (torch, vllm, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from shopsense.schemas import ModelRef


@dataclass(frozen=True)
class ClassifierInput:
    """One review as the classifier sees it: decoded, validated, at least one modality."""

    text: str | None = None
    image: Image.Image | None = None  # RGB, already size-checked
    # sha256 of the photo's encoded bytes (the response cache's key); not sent to the model
    image_sha256: str | None = field(default=None, compare=False, repr=False)

    def modalities(self) -> list[str]:
        return [m for m, v in (("text", self.text), ("image", self.image)) if v is not None]


@dataclass(frozen=True)
class ClassifierOutput:
    label: str
    scores: dict[str, float]
    modalities: list[str] = field(default_factory=list)
    # The photo's L2-normalised image features, when the backend's image encoder is the one
    # the retrieval index uses (``image_encoder_id``): the similar-review lookup reuses them
    # instead of encoding the photo again.
    image_vector: np.ndarray | None = field(default=None, compare=False, repr=False)


@runtime_checkable
class ClassifierBackend(Protocol):
    """A backend turns a batch of inputs into a batch of outputs, same length, same order."""

    name: str

    @property
    def model(self) -> ModelRef: ...

    @property
    def identity(self) -> str:
        """What the answers depend on (model version, weights, engine): the response cache's
        key includes it, so a new model never serves the old one's answers."""
        ...

    def predict_batch(self, items: list[ClassifierInput]) -> list[ClassifierOutput]: ...


def predict_isolated(backend: ClassifierBackend,
                     items: list[ClassifierInput]) -> list[ClassifierOutput | Exception]:
    """One forward pass over ``items``; if it fails, each item on its own, so that an item the
    backend cannot take fails alone and its neighbours in the batch are still answered. The
    result holds the exception in place of each failed item's output."""
    try:
        return list(backend.predict_batch(items))
    except Exception as exc:  # noqa: BLE001 - isolated below
        if len(items) == 1:
            return [exc]
    out: list[ClassifierOutput | Exception] = []
    for item in items:
        try:
            out.append(backend.predict_batch([item])[0])
        except Exception as exc:  # noqa: BLE001 - this item's own failure
            out.append(exc)
    return out
