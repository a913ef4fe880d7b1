"""The Ray Serve application: ``SentimentAPI`` (FastAPI ingress) -> ``Classifier`` and the
retrieval service's ``Retriever`` (similar reviews, ``/v1/search``).

    app = SentimentAPI.bind(Classifier.bind(args), args, Retriever.bind(env))

``Classifier`` wraps one backend (torch or vllm) and batches requests dynamically with
``@serve.batch``; batch size and wait are retuned live through ``user_config``. A batch that
fails is retried item by item, so one bad item fails its own request alone.

Backpressure: each deployment has ``max_ongoing_requests`` and ``max_queued_requests``
(settings ``serve.ingress_max_queued``, ``classifier_max_ongoing``, ``classifier_max_queued``);
past them Serve refuses at once (the ingress with 503 and ``Retry-After``; a classifier call
raises ``BackPressureError``, answered as 503 ``Overloaded``) instead of queueing without end. Build it with
``build_app(AppArgs(...))`` or from a Serve config file (``import_path:
services.inference.app:app_builder``, ``args: {...}``), as KubeRay's serveConfigV2 does.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, Field
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from shopsense.settings import Settings

from services.inference.api import build_api
from services.inference.backends.base import ClassifierInput, ClassifierOutput, predict_isolated
from services.inference.errors import platform_error
from services.retrieval.deployment import HandleSearchService, Retriever


class AppArgs(BaseModel):
    """Arguments of the application (serveConfigV2 ``args``); unset fields come from env."""

    model_uri: str | None = None
    backend: str | None = None
    batching: bool | None = None
    batch_max_size: int | None = None
    batch_wait_timeout_s: float | None = None
    classifier_replicas: int | None = None
    classifier_num_cpus: float = 1.0
    classifier_num_gpus: float = 0.0
    retrieval: bool | None = Field(None, description="run the Retriever deployment")
    similar_k: int | None = Field(None, ge=0, le=50, description="similar reviews per answer")
    retriever_replicas: int | None = None
    retriever_num_cpus: float = Field(
        0.0, description="CPUs reserved per retriever replica (0 lets it share the classifier's)"
    )
    settings_env: dict[str, str] = Field(
        default_factory=dict, description="SHOPSENSE_* variables for the replicas"
    )

    def settings(self) -> Settings:
        s = Settings()
        serve_over = {k: v for k, v in {
            "model_uri": self.model_uri, "backend": self.backend, "batching": self.batching,
            "batch_max_size": self.batch_max_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "classifier_replicas": self.classifier_replicas, "retrieval": self.retrieval,
            "similar_k": self.similar_k, "retriever_replicas": self.retriever_replicas,
        }.items() if v is not None}
        return s.model_copy(update={"serve": s.serve.model_copy(update=serve_over)})


def make_backend(settings: Settings):
    """The one place that knows every backend."""
    if settings.serve.backend == "torch":
        from services.inference.backends.torch_backend import TorchBackend

        return TorchBackend(settings, model_uri=settings.serve.model_uri)
    if settings.serve.backend == "vllm":
        from services.inference.backends.vllm import VLLMBackend

        return VLLMBackend(settings.vllm)
    raise ValueError(f"unknown backend {settings.serve.backend!r}; choose torch or vllm")


@serve.deployment(name="Classifier", max_ongoing_requests=256)
class Classifier:
    def __init__(self, args: dict[str, Any]) -> None:
        os.environ.update(args.get("settings_env") or {})
        self.settings = AppArgs(**args).settings()
        self.backend = make_backend(self.settings)
        self.batching = self.settings.serve.batching
        self.predict_batched.set_max_batch_size(self.settings.serve.batch_max_size)
        self.predict_batched.set_batch_wait_timeout_s(self.settings.serve.batch_wait_timeout_s)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Live retuning through ``user_config`` (batching, batch_max_size, batch_wait)."""
        if "batching" in config:
            self.batching = bool(config["batching"])
        if "batch_max_size" in config:
            self.predict_batched.set_max_batch_size(int(config["batch_max_size"]))
        if "batch_wait_timeout_s" in config:
            self.predict_batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict_batched(
        self, items: list[ClassifierInput]
    ) -> list[tuple[ClassifierOutput, int] | Exception]:
        # An exception returned in an item's place reaches that caller only (serve.batch
        # fails every caller of the batch when the function raises).
        outputs = await asyncio.to_thread(predict_isolated, self.backend, items)
        return [o if isinstance(o, Exception) else (o, len(items)) for o in outputs]

    async def predict(self, item: ClassifierInput) -> tuple[ClassifierOutput, int]:
        if self.batching:
            result = await self.predict_batched(item)
        else:
            result = (await asyncio.to_thread(predict_isolated, self.backend, [item]))[0]
            result = result if isinstance(result, Exception) else (result, 1)
        if isinstance(result, Exception):
            raise result
        return result

    def describe(self) -> dict[str, Any]:
        return {"model": self.backend.model.model_dump(), "backend": self.backend.name}


class HandleClassifierService:
    """``ClassifierService`` over a Serve handle: one call per item, batched by the replica.
    A caller that gives up (its deadline) cancels the calls it still waits for."""

    def __init__(self, handle: DeploymentHandle, *, retry_after_s: float = 1.0) -> None:
        self.handle = handle
        self.retry_after_s = retry_after_s

    async def _await(self, response):
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to the platform's error
            raise platform_error(exc, retry_after_s=self.retry_after_s) from None

    async def classify(self, items: list[ClassifierInput]) -> list[tuple[ClassifierOutput, int]]:
        return list(await asyncio.gather(
            *(self._await(self.handle.predict.remote(i)) for i in items)))

    async def describe(self) -> dict[str, Any]:
        return await self._await(self.handle.describe.remote())


@serve.deployment(name="SentimentAPI", max_ongoing_requests=512)
@serve.ingress()
class SentimentAPI:
    def __init__(self, classifier: DeploymentHandle, args: dict[str, Any],
                 retriever: DeploymentHandle | None = None) -> None:
        os.environ.update(args.get("settings_env") or {})
        self.settings = AppArgs(**args).settings()
        self.service = HandleClassifierService(classifier,
                                               retry_after_s=self.settings.serve.retry_after_s)
        self.search = HandleSearchService(retriever) if retriever is not None else None

    def __serve_build_asgi_app__(self):
        # Serve's proxy sets and answers X-Request-Id itself: the API uses its id, adds none
        return build_api(self.service, self.settings, self.search, echo_request_id=False)


def build_app(args: AppArgs) -> serve.Application:
    """The application graph in one expression."""
    s = args.settings()
    a = args.model_dump()
    classifier = Classifier.options(
        num_replicas=s.serve.classifier_replicas,
        ray_actor_options={"num_cpus": args.classifier_num_cpus,
                           "num_gpus": args.classifier_num_gpus},
        max_ongoing_requests=s.serve.classifier_max_ongoing,
        max_queued_requests=s.serve.classifier_max_queued,
    )
    api = SentimentAPI.options(
        num_replicas=s.serve.ingress_replicas, ray_actor_options={"num_cpus": 0},
        # the API's own admission (max_in_flight) answers first, in its JSON shape; this
        # bounds what can wait in front of it
        max_ongoing_requests=s.serve.max_in_flight + 32,
        max_queued_requests=s.serve.ingress_max_queued,
        backpressure_config=BackpressureConfig(
            status_code=503, retry_after_s=max(1.0, s.serve.retry_after_s)),
    )
    if not s.serve.retrieval:
        return api.bind(classifier.bind(a), a)
    retriever = Retriever.options(
        num_replicas=s.serve.retriever_replicas,
        ray_actor_options={"num_cpus": args.retriever_num_cpus},
        max_queued_requests=s.serve.retriever_max_queued,
    )
    return api.bind(classifier.bind(a), a, retriever.bind(args.settings_env))


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Entry point for Serve config files: ``import_path: services.inference.app:app_builder``."""
    return build_app(AppArgs(**args))
