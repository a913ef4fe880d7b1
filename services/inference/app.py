"""The Ray Serve application: ``SentimentAPI`` (FastAPI ingress) -> ``Classifier`` and the
retrieval service's ``Retriever`` (similar reviews, ``/v1/search``).

    app = SentimentAPI.bind(Classifier.bind(args), args, Retriever.bind(env))

``Classifier`` wraps one backend (torch or vllm) and batches requests dynamically with the
service's one batcher (``services/inference/batching.py``, also what the ``local`` engine runs
without Ray); batch size and wait are retuned live through ``user_config``. A batch that
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
import dataclasses
import os
from typing import Any

from pydantic import BaseModel, Field
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from shopsense.settings import BackendName, Settings

from services.inference.api import build_api
from services.inference.backends import make_backend
from services.inference.backends.base import ClassifierInput, ClassifierOutput
from services.inference.batching import BatchedClassifierService
from services.inference.cache import build_cache
from services.inference.errors import platform_error
from services.retrieval.deployment import HandleSearchService, Retriever


class AppArgs(BaseModel):
    """Arguments of the application (serveConfigV2 ``args``); unset fields come from env."""

    model_uri: str | None = None
    backend: BackendName | None = None
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
        # validated: a backend or mode outside its Literal fails here, in one message
        serve_settings = type(s.serve).model_validate({**s.serve.model_dump(), **serve_over})
        return s.model_copy(update={"serve": serve_settings})


@serve.deployment(name="Classifier", max_ongoing_requests=256)
class Classifier:
    """One backend behind the service's batcher (``BatchedClassifierService``, the same one the
    ``local`` engine runs in the API process)."""

    def __init__(self, args: dict[str, Any]) -> None:
        os.environ.update(args.get("settings_env") or {})
        self.settings = AppArgs(**args).settings()
        self.backend = make_backend(self.settings)
        self.service = BatchedClassifierService.from_settings(self.backend, self.settings.serve)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Live retuning through ``user_config`` (batching, batch_max_size, batch_wait)."""
        self.service.reconfigure(config)

    async def predict(self, item: ClassifierInput) -> tuple[ClassifierOutput, int]:
        # a batch that fails is retried item by item by the batcher: one bad item fails alone
        return (await self.service.classify([item]))[0]

    def describe(self) -> dict[str, Any]:
        return self.service.describe_now()

    def batcher_stats(self) -> dict[str, int]:
        """What this replica's batcher did: batches, items, waited and isolated batches."""
        return dataclasses.asdict(self.service.batcher.stats)


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
            raise platform_error(exc, retry_after_s=self.retry_after_s) from exc

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
        return build_api(self.service, self.settings, self.search, echo_request_id=False,
                         cache=build_cache())


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
