"""The compact multimodal model (MiniLM + LoRA, EfficientNet-Lite0, fusion head) on CPU/GPU."""

from __future__ import annotations

from shopsense import LABELS
from shopsense.model.classifier import Predictor
from shopsense.registry import resolve
from shopsense.schemas import ModelRef
from shopsense.settings import Settings

from services.inference.backends.base import ClassifierInput, ClassifierOutput


class TorchBackend:
    name = "torch"

    def __init__(self, settings: Settings, *, model_uri: str | None = None) -> None:
        resolved = resolve(settings, model_uri)
        self._model = ModelRef(name=resolved.name, version=resolved.version, uri=resolved.uri)
        self.predictor = Predictor.from_bundle(resolved.bundle_dir, threads=settings.serve.threads)
        self.labels = self.predictor.labels
        assert tuple(self.labels) == LABELS

    @property
    def model(self) -> ModelRef:
        return self._model

    def predict_batch(self, items: list[ClassifierInput]) -> list[ClassifierOutput]:
        proba = self.predictor.predict_proba([i.text for i in items], [i.image for i in items])
        return [
            ClassifierOutput(
                label=self.labels[int(row.argmax())],
                scores={lbl: round(float(p), 6) for lbl, p in zip(self.labels, row)},
                modalities=item.modalities(),
            )
            for item, row in zip(items, proba)
        ]
