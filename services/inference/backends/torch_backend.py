"""The compact multimodal model (MiniLM + LoRA, EfficientNet-Lite0, fusion head) on CPU/GPU."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from shopsense import LABELS
from shopsense.model.classifier import Predictor
from shopsense.registry import resolve
from shopsense.schemas import ModelRef
from shopsense.settings import Settings

from services.inference.backends.base import ClassifierInput, ClassifierOutput


def bundle_digest(bundle_dir: Path) -> str:
    """sha256 over the bundle's files (relative paths and bytes): a few MB, read once."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(bundle_dir).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(bundle_dir)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


class TorchBackend:
    name = "torch"

    def __init__(self, settings: Settings, *, model_uri: str | None = None) -> None:
        resolved = resolve(settings, model_uri)
        self._model = ModelRef(name=resolved.name, version=resolved.version, uri=resolved.uri)
        self.predictor = Predictor.from_bundle(
            resolved.bundle_dir, threads=settings.serve.threads,
            text_engine=settings.serve.text_engine,
            engine_cache_dir=settings.serve.engine_cache_dir)
        self.labels = self.predictor.labels
        self.engine = self.predictor.text_engine.name
        self.image_encoder_id = self.predictor.image_encoder_id
        self._identity = (f"{resolved.name}/{resolved.version}/"
                          f"{bundle_digest(resolved.bundle_dir)[:16]}/{self.engine}")
        assert tuple(self.labels) == LABELS

    @property
    def model(self) -> ModelRef:
        return self._model

    @property
    def identity(self) -> str:
        return self._identity

    def predict_batch(self, items: list[ClassifierInput]) -> list[ClassifierOutput]:
        proba, feats = self.predictor.predict_with_features(
            [i.text for i in items], [i.image for i in items])
        share = self.image_encoder_id is not None
        out = []
        for item, row, feat in zip(items, proba, feats, strict=True):
            vec = None
            if share and item.image is not None:
                vec = (feat / max(float(np.linalg.norm(feat)), 1e-12)).astype(np.float32)
            out.append(ClassifierOutput(
                label=self.labels[int(row.argmax())],
                scores={lbl: round(float(p), 6) for lbl, p in zip(self.labels, row)},
                modalities=item.modalities(), image_vector=vec))
        return out
