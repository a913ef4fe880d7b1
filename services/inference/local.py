"""The ``local`` engine: the whole service in one process on one machine, without hops.

    app = build_local_app(settings)      # then uvicorn.run(app, ...)

The same API (``build_api``), the same batcher (``BatchedClassifierService``) and the same
retriever as the Ray Serve graph, called directly instead of through Serve handles: on one
machine the proxy -> ingress -> classifier hops cost more CPU than the model (see the README's
serving figures). ``shopsense serve`` runs this by default (``SHOPSENSE_SERVE__ENGINE=local``);
``engine=ray`` runs the graph, which is what the chart deploys, one deployment per part.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI

from shopsense.settings import Settings

from services.inference.api import build_api
from services.inference.backends import make_backend
from services.inference.batching import BatchedClassifierService
from services.inference.cache import build_cache

log = logging.getLogger("shopsense.serve")


def build_local_app(settings: Settings) -> FastAPI:
    """The API over a backend, batcher, retriever and response cache in this process."""
    backend = make_backend(settings)
    service = BatchedClassifierService.from_settings(backend, settings.serve)
    search = retriever = None
    if settings.serve.retrieval:
        from services.retrieval.deployment import LocalSearchService
        from services.retrieval.retriever import HybridRetriever
        from services.retrieval.settings import RetrievalSettings

        retriever = HybridRetriever.open(RetrievalSettings())
        retriever.text_embedder.embed_one("warm up")  # loaded now: ready means ready
        search = LocalSearchService(retriever)
    cache = build_cache()
    app = build_api(service, settings, search, cache=cache)
    app.state.service = service
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI):
        async with inner(a) as state:
            try:
                yield state
            finally:
                service.close()
                await cache.close()
                if retriever is not None:
                    retriever.close()

    app.router.lifespan_context = lifespan
    log.info("local engine ready: %s, cache %s, retrieval %s", service.describe_now()["identity"],
             cache.backend, "on" if search is not None else "off")
    return app
