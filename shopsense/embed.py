"""Sentence and image embeddings for retrieval, from the offline encoders.

:class:`TextEmbedder`: all-MiniLM-L6-v2 (the plain pretrained weights, not the fine-tuned
classifier), mean-pooled over the attention mask and L2-normalised: 384-d, the same recipe as
sentence-transformers' ``all-MiniLM-L6-v2`` (its default max length is 256 tokens).

:class:`ImageEmbedder`: frozen EfficientNet-Lite0, mean-pooled 1280-d features, L2-normalised.

Both take batches, keep the input order, return ``float32`` arrays of shape ``(n, dim)`` (also
for ``n == 0``) and load their weights once, on first use. :func:`text_embedder` /
:func:`image_embedder` give one shared instance per configuration for a process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from shopsense.model.encoders import IMAGE_DIM, TEXT_DIM

__all__ = [
    "IMAGE_DIM",
    "TEXT_DIM",
    "ImageEmbedder",
    "TextEmbedder",
    "image_embedder",
    "l2_normalise",
    "text_embedder",
]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class TextEmbedder:
    """MiniLM sentence embeddings: ``embed(texts) -> (n, 384)`` float32, unit length."""

    dim = TEXT_DIM

    def __init__(self, *, max_length: int = 256, batch_size: int = 32,
                 random_init: bool = False) -> None:
        if max_length < 8 or max_length > 512:
            raise ValueError(f"max_length must be in [8, 512], got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.random_init = random_init
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from shopsense.model.encoders import load_text_encoder, load_tokenizer

                tokenizer = load_tokenizer()
                model = load_text_encoder(random_init=self.random_init)
                model.eval()
                self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        from shopsense.model.encoders import mean_pool

        tokenizer, model = self._load()
        # Longest first: batches of similar length pad less. The output keeps the input order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
                hidden = model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).last_hidden_state
                out[idx] = mean_pool(hidden, batch["attention_mask"]).float().numpy()
        return l2_normalise(out)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class ImageEmbedder:
    """EfficientNet-Lite0 image embeddings: ``embed(images) -> (n, 1280)`` float32, unit length."""

    dim = IMAGE_DIM

    # 4: EfficientNet gets slower per image on CPU with larger batches (see Predictor).
    def __init__(self, *, batch_size: int = 4, pretrained: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.pretrained = pretrained
        self._encoder = None
        self._lock = threading.Lock()

    @property
    def encoder_id(self) -> str | None:
        """``IMAGE_ENCODER_ID`` when the vectors are the classifier's image features
        (L2-normalised), so a caller holding those may pass them instead of the photo."""
        from shopsense.model.encoders import IMAGE_ENCODER_ID

        return IMAGE_ENCODER_ID if self.pretrained else None

    def _load(self):
        with self._lock:
            if self._encoder is None:
                from shopsense.model.encoders import ImageEncoder

                self._encoder = ImageEncoder(pretrained=self.pretrained)
        return self._encoder

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        from shopsense.model.encoders import preprocess_image

        encoder = self._load()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                pixels = np.stack([preprocess_image(im) for im in chunk])
                chunks.append(encoder(torch.from_numpy(pixels)).float().numpy())
        return l2_normalise(np.concatenate(chunks))

    def embed_one(self, image: Image.Image) -> np.ndarray:
        return self.embed([image])[0]


@lru_cache(maxsize=4)
def text_embedder(max_length: int = 256, batch_size: int = 32) -> TextEmbedder:
    """One shared :class:`TextEmbedder` per configuration (weights loaded once per process)."""
    return TextEmbedder(max_length=max_length, batch_size=batch_size)


@lru_cache(maxsize=1)
def image_embedder() -> ImageEmbedder:
    """The shared :class:`ImageEmbedder`."""
    return ImageEmbedder()
