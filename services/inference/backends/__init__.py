"""Classifier backends: ``make_backend(settings)`` is the one place that knows them all."""

from __future__ import annotations

from typing import Any

from shopsense.settings import Settings

__all__ = ["describe_backend", "make_backend"]


def make_backend(settings: Settings):
    """The backend ``settings.serve.backend`` names (torch: the registry's model)."""
    if settings.serve.backend == "torch":
        from services.inference.backends.torch_backend import TorchBackend

        return TorchBackend(settings, model_uri=settings.serve.model_uri)
    if settings.serve.backend == "vllm":
        from services.inference.backends.vllm import VLLMBackend

        return VLLMBackend(settings.vllm)
    raise ValueError(f"unknown backend {settings.serve.backend!r}; choose torch or vllm")


def describe_backend(backend) -> dict[str, Any]:
    """What ``ClassifierService.describe`` answers for a backend in this process: the model,
    the backend's name, its identity (the response cache's key) and its image encoder's id."""
    return {"model": backend.model.model_dump(), "backend": backend.name,
            "identity": getattr(backend, "identity", None),
            "image_encoder_id": getattr(backend, "image_encoder_id", None)}
