"""The retriever as a Ray Serve deployment: what the inference application binds into its graph
(``SentimentAPI.bind(Classifier.bind(...), Retriever.bind(...), ...)``) and reaches through a
handle. It owns one :class:`HybridRetriever` (the embedded Qdrant folder admits one process, so
keep one replica unless ``SHOPSENSE_QDRANT_URL`` points at a server).

Every method returns plain data (lists of ``Hit`` dicts); errors stay the platform's own
(``InvalidInput``, ``StoreUnavailable`` …) and are unwrapped from Ray's ``RayTaskError`` by
:class:`HandleSearchService`, the client side the API uses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from ray import serve

log = logging.getLogger("shopsense.retrieval")


@serve.deployment(name="Retriever", max_ongoing_requests=64)
class Retriever:
    def __init__(self, settings_env: dict[str, str] | None = None, *, warm: bool = True) -> None:
        os.environ.update(settings_env or {})
        from services.retrieval.retriever import HybridRetriever
        from services.retrieval.settings import RetrievalSettings

        self.retriever = HybridRetriever.open(RetrievalSettings())
        # One search at a time per replica: the embedded Qdrant is not documented as
        # thread-safe, and on a CPU the encoder forward passes would only compete anyway.
        self._lock = threading.Lock()
        if warm:  # load the encoders now, so readiness means ready
            self.retriever.text_embedder.embed_one("warm up")
        log.info("retriever ready: %s", self.retriever.status())

    def _search(self, query: str | None, image: Any, kwargs: dict[str, Any]) -> list[dict]:
        with self._lock:
            hits = self.retriever.search(query, image, **kwargs)
        return [h.model_dump() for h in hits]

    async def search(self, query: str | None = None, image: Any = None,
                     **kwargs: Any) -> list[dict[str, Any]]:
        """``HybridRetriever.search`` (k, filters, mode, fusion) off the event loop."""
        return await asyncio.to_thread(self._search, query, image, kwargs)

    def status(self) -> dict[str, Any]:
        return self.retriever.status()

    def __del__(self) -> None:
        try:
            self.retriever.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


def _unwrap(exc: BaseException) -> BaseException:
    """The platform error a ``RayTaskError`` carries (its ``cause``), else ``exc``."""
    from shopsense.errors import ShopsenseError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, ShopsenseError):
        return cause
    return exc


def _reraise(exc: BaseException):
    """Raise the platform error ``exc`` carries, chained to the Ray error (its remote
    traceback stays readable), or ``exc`` itself."""
    err = _unwrap(exc)
    if err is exc:
        raise exc
    raise err from exc


class HandleSearchService:
    """The API's search client over a Serve handle to :class:`Retriever`."""

    def __init__(self, handle) -> None:
        self.handle = handle

    async def search(self, query: str | None = None, image: Any = None,
                     **kwargs: Any) -> list[dict[str, Any]]:
        try:
            return await self.handle.search.remote(query, image, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised as the platform error it carries
            _reraise(exc)

    async def status(self) -> dict[str, Any]:
        try:
            return await self.handle.status.remote()
        except Exception as exc:  # noqa: BLE001
            _reraise(exc)


class LocalSearchService:
    """The same client over a :class:`HybridRetriever` in this process (tests, tools)."""

    def __init__(self, retriever) -> None:
        self.retriever = retriever
        self._lock = threading.Lock()

    def _search(self, query, image, kwargs) -> list[dict[str, Any]]:
        with self._lock:
            return [h.model_dump() for h in self.retriever.search(query, image, **kwargs)]

    async def search(self, query: str | None = None, image: Any = None,
                     **kwargs: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._search, query, image, kwargs)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.retriever.status)
