"""The MLflow ``pyfunc`` flavour of a shopsense bundle, so any MLflow tool can load it.

Input: a DataFrame with ``text`` (str or null) and optional ``image`` (base64 or null).
Output: a DataFrame with ``label`` and one ``score_<label>`` column per label.
"""

from __future__ import annotations

import mlflow.pyfunc


class SentimentPyfunc(mlflow.pyfunc.PythonModel):
    """The compact model's bundle. Subclasses for other bundle formats override
    :meth:`load_context` to set ``labels`` and ``predict_proba(texts, images) -> ndarray``."""

    def load_context(self, context) -> None:
        from shopsense.model.classifier import Predictor

        predictor = Predictor.from_bundle(context.artifacts["bundle"])
        self.labels, self.predict_proba = predictor.labels, predictor.predict_proba

    def predict(self, context, model_input, params=None):  # noqa: ARG002
        import base64
        import io

        import pandas as pd
        from PIL import Image

        texts = [t if isinstance(t, str) and t.strip() else None for t in model_input["text"]]
        images = [None] * len(texts)
        if "image" in model_input:
            images = [
                Image.open(io.BytesIO(base64.b64decode(v))).convert("RGB")
                if isinstance(v, str) and v
                else None
                for v in model_input["image"]
            ]
        proba = self.predict_proba(texts, images)
        labels = self.labels
        out = pd.DataFrame({f"score_{lbl}": proba[:, i] for i, lbl in enumerate(labels)})
        out.insert(0, "label", [labels[i] for i in proba.argmax(axis=1)])
        return out
