"""Deploying the GPU path: LLaVA-v1.6 (Mistral-7B) on vLLM through ``ray.serve.llm``.

:func:`build_llm_config` makes the ``ray.serve.llm.LLMConfig`` and :func:`build_llm_app` the
OpenAI-compatible Serve application (``build_openai_app``). These need ``ray[llm]`` (which
brings vLLM) on a GPU node; the config alone (:func:`llm_config_dict`) validates without vLLM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopsense.settings import VLLMSettings

if TYPE_CHECKING:  # pragma: no cover
    from ray.serve.deployment import Application

__all__ = ["LIMIT_MM_PER_PROMPT", "build_llm_app", "build_llm_config", "llm_config_dict"]

#: One image per prompt: a review carries at most one photo to the classifier.
LIMIT_MM_PER_PROMPT = {"image": 1}


def llm_config_dict(
    settings: VLLMSettings,
    *,
    min_replicas: int = 1,
    max_replicas: int = 2,
    target_ongoing_requests: int = 32,
) -> dict[str, Any]:
    """The keyword arguments of ``ray.serve.llm.LLMConfig`` for the classifier model.

    ``engine_kwargs`` are vLLM ``AsyncEngineArgs``: the context length, the GPU memory share,
    tensor parallelism, at most one image per prompt, and structured outputs with xgrammar
    without free whitespace (the JSON comes out as ``{"label":"positive"}``, few tokens, and the
    label token directly follows the quote, which :func:`parse_response` relies on for scores).
    """
    engine_kwargs: dict[str, Any] = {
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "limit_mm_per_prompt": dict(LIMIT_MM_PER_PROMPT),
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    config: dict[str, Any] = {
        "model_loading_config": {
            "model_id": settings.model_id,
            "model_source": settings.model_source or settings.model_id,
        },
        "engine_kwargs": engine_kwargs,
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": target_ongoing_requests,
            },
        },
    }
    if settings.accelerator_type:
        config["accelerator_type"] = settings.accelerator_type
    return config


def _llm_config_class() -> type:
    """``ray.serve.llm.LLMConfig``; without vLLM installed that module cannot be imported
    (its OpenAI protocol models come from vLLM), so fall back to the class it re-exports
    unchanged, ``ray.llm._internal.serve.core.configs.llm_config.LLMConfig``, which has the
    same fields and validators and does not import vLLM."""
    try:
        from ray.serve.llm import LLMConfig
    except ImportError:
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    return LLMConfig


def build_llm_config(settings: VLLMSettings, **autoscaling: int):
    """A validated ``LLMConfig`` (see :func:`llm_config_dict` for the fields;
    ``autoscaling`` overrides ``min_replicas``, ``max_replicas``, ``target_ongoing_requests``).

    Raises ``ValueError`` (pydantic) for settings Ray rejects, e.g. an unknown accelerator type.
    """
    return _llm_config_class()(**llm_config_dict(settings, **autoscaling))


def build_llm_app(settings: VLLMSettings, **autoscaling: int) -> Application:
    """The OpenAI-compatible Serve application (``/v1/chat/completions``, ``/v1/models``)
    serving the classifier model; run it with ``serve.run(app)``. Needs ``ray[llm]``."""
    try:
        from ray.serve.llm import build_openai_app
    except ImportError as exc:
        raise ImportError(
            "build_llm_app needs vLLM: install ray[llm] (vLLM) on the GPU image"
        ) from exc
    return build_openai_app({"llm_configs": [build_llm_config(settings, **autoscaling)]})
