"""The HTTP API (FastAPI). Transport only: requests are validated and converted to
``ClassifierInput`` here, at the edge; every error is mapped to a status in one place
(``_add_exception_handlers``); the classifier is reached through ``ClassifierService``.

Routes: ``POST /v1/sentiment``, ``POST /v1/sentiment/batch``, ``POST /v1/search``,
``GET /v1/predictions/recent`` (this replica's recent predictions by category, for the page's
chart), ``GET /healthz``, ``/readyz``, ``/metrics`` (Prometheus text), ``/docs`` (OpenAPI), and
the web page (``GET /``, ``/ui/recent``, ``/ui/static/...``; see ``services/inference/web``).

Similar reviews come from the retrieval service through ``SearchService`` (a Serve handle to
its ``Retriever`` deployment, or a retriever in this process); without one, ``/v1/search``
answers 503 and predictions carry no ``similar`` reviews.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopsense.errors import (
    ImageFetchFailed,
    ImageFetchRefused,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ServiceUnavailable,
    ShopsenseError,
    UpstreamError,
)
from shopsense.images import decode_image, load_image_bytes
from shopsense.schemas import Label, ModelRef, Prediction, SimilarReview
from shopsense.settings import Settings

from services.retrieval import Hit, check_search

from services.inference.backends.base import ClassifierInput, ClassifierOutput
from services.inference.metrics import ApiMetrics, RecentPredictions
from services.inference.web import mount_ui

log = logging.getLogger("shopsense.api")


class ClassifierService(Protocol):
    """What the API needs from a classifier, local or behind a Ray Serve handle."""

    async def classify(self, items: list[ClassifierInput]) -> list[tuple[ClassifierOutput, int]]:
        """Outputs in input order, each with the size of the batch that computed it."""
        ...

    async def describe(self) -> dict[str, Any]:
        """``{"model": ModelRef-dict, "backend": str}``; raises if not ready."""
        ...


class SearchService(Protocol):
    """What the API needs from retrieval: ``HybridRetriever.search`` with hits as dicts."""

    async def search(self, query: str | None = None, image: Any = None,
                     **kwargs: Any) -> list[dict[str, Any]]:
        ...


class SentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"text": "The screen arrived cracked and support never answered."}]
    })

    text: str | None = Field(None, description="the review text")
    image: str | None = Field(
        None, description="a product photo: base64, a data: URL, or an http(s) URL"
    )
    similar_k: int | None = Field(
        None, ge=0, le=50,
        description="similar indexed reviews to return (default from the service; 0 = none)",
    )
    category: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$",
        description="the product's category (e.g. 'electronics'): recorded with the prediction "
        "for the recent-predictions chart and the metrics' category label (at most 32 distinct "
        "categories per replica get their own label value, the rest count as 'other')",
    )
    product: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$",
        description="the product's id (e.g. an ASIN): kept with the recent predictions only",
    )


class RatingRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gte: float | None = Field(None, ge=1, le=5, description="rating >= gte")
    lte: float | None = Field(None, ge=1, le=5, description="rating <= lte")


class SearchFilters(BaseModel):
    """Exact match on category, label and product id; an inclusive rating range. A review
    without the field never matches a filter on it."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = None
    label: Label | None = None
    product: str | None = Field(None, description="product id (e.g. an ASIN)")
    rating: RatingRange | None = None

    def as_retrieval(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("category", self.category),
                                                 ("label", self.label),
                                                 ("product", self.product)) if v is not None}
        if self.rating is not None:
            if self.rating.gte is not None:
                out["rating_gte"] = self.rating.gte
            if self.rating.lte is not None:
                out["rating_lte"] = self.rating.lte
        return out


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"query": "battery died after a week", "k": 5,
                      "filters": {"label": "negative", "rating": {"lte": 2}}}]
    })

    query: str | None = Field(None, description="what to look for")
    image: str | None = Field(
        None, description="a query photo (base64, data: URL or http(s) URL): searches the "
        "image vectors, fused with the text lists when a query is given too"
    )
    k: int = Field(10, ge=1, le=100, description="how many reviews")
    filters: SearchFilters | None = None
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"
    fusion: Literal["rrf", "weighted"] | None = Field(
        None, description="how hybrid lists are fused (default from the service settings)"
    )
    rerank: bool | None = Field(
        None, description="re-score the fused head with the trained cross-encoder (default "
        "from the service settings; needs a query text and a trained reranker)"
    )


class SearchResponse(BaseModel):
    hits: list[Hit]
    mode: str
    latency_ms: float


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[SentimentRequest] = Field(..., description="reviews, answered in the same order")


class BatchResponse(BaseModel):
    items: list[Prediction]


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error type")
    message: str = Field(description="what was wrong, in words")


_STATUS: list[tuple[type[Exception], int]] = [
    (PayloadTooLarge, 413),
    (ImageFetchRefused, 400),
    (ImageFetchFailed, 400),
    (InvalidInput, 422),
    (ModelNotFound, 404),
    (ModelNotReady, 503),
    (ServiceUnavailable, 503),
    (UpstreamError, 502),
]
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 422, 502, 503)
}


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": kind, "message": message})


def _add_exception_handlers(app: FastAPI) -> None:
    """Every error-to-status mapping of the API, in one place."""

    @app.exception_handler(ShopsenseError)
    async def _shopsense_error(_: Request, exc: ShopsenseError) -> JSONResponse:
        for cls, status in _STATUS:
            if isinstance(exc, cls):
                return _error(status, type(exc).__name__, str(exc))
        return _error(500, type(exc).__name__, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths (404) and methods (405) answer in the API's error shape too.
        kind = "".join(w.capitalize() for w in HTTPStatus(exc.status_code).phrase.split())
        message = exc.detail if isinstance(exc.detail, str) else kind
        if exc.status_code == 404:
            message = "no such route; see /docs for the API and / for the web page"
        return JSONResponse(status_code=exc.status_code,
                            content={"error": kind, "message": message},
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _error(422, "InvalidInput", "; ".join(parts) or "invalid request")


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = JSONResponse(
            status_code=413,
            content={"error": "PayloadTooLarge",
                     "message": f"request body over {self.max_bytes} bytes"},
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        try:
            return await self.app(scope, limited_receive, send)
        except PayloadTooLarge:
            return await too_large(scope, receive, send)


class ObserveRequests:
    """ASGI middleware: request counts, errors and latency per route (pure ASGI: Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request)."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def route_label(scope) -> str:
        """The matched route's template (``/v1/sentiment``, ``/ui/static/{name}``), or
        ``unmatched``: a label value per route, never per requested path."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        return path if isinstance(path, str) and path else "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            code = status["code"]
            route = self.route_label(scope)
            if route.startswith("/v1/"):
                self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, str(code)).inc()
            if code >= 400:
                self.metrics.errors.labels(route, str(code)).inc()


async def _load_image(value: str, settings: Settings):
    if not value.strip():
        raise InvalidInput("image is empty")
    raw = await asyncio.to_thread(load_image_bytes, value.strip(), settings.images)
    return await asyncio.to_thread(
        decode_image, raw, max_bytes=settings.images.max_bytes,
        max_pixels=settings.images.max_pixels,
    )


async def to_input(req: SentimentRequest, settings: Settings) -> ClassifierInput:
    """Validate one request item and decode its image (off the event loop)."""
    text = req.text
    if text is not None and not text.strip():
        if req.image is None:
            raise InvalidInput("text is empty")
        text = None  # a blank caption beside a photo: the photo alone
    if text is not None and len(text) > settings.serve.max_text_chars:
        raise InvalidInput(
            f"text has {len(text)} characters; the limit is {settings.serve.max_text_chars}"
        )
    image = None
    if req.image is not None:
        image = await _load_image(req.image, settings)
    if text is None and image is None:
        raise InvalidInput("give text, an image, or both")
    return ClassifierInput(text=text, image=image)


# The longest query text sent to the retrievers for similar reviews (BM25 over a whole long
# review costs a term lookup per word; its opening carries most of what it is about).
SIMILAR_QUERY_CHARS = 2000


RECENT_CAPACITY = 10_000
RECENT_MAX_BUCKETS = 720


def build_api(service: ClassifierService, settings: Settings,
              search: SearchService | None = None,
              recent: RecentPredictions | None = None) -> FastAPI:
    """The FastAPI app over ``service`` (and ``search`` for similar reviews), with the web page.
    ``recent`` is the ring buffer of recent predictions (a new one of ``RECENT_CAPACITY``
    entries by default). The same app runs inside Ray Serve and in tests."""
    metrics = ApiMetrics()
    recent = recent if recent is not None else RecentPredictions(RECENT_CAPACITY)
    app = FastAPI(
        title="shopsense inference API",
        version="1",
        description="Sentiment of e-commerce reviews from their text and product photos.",
    )
    app.state.metrics = metrics
    app.state.recent = recent
    _add_exception_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.serve.max_body_bytes)

    app.add_middleware(ObserveRequests, metrics=metrics)

    model_cache: dict[str, Any] = {}

    async def model_ref() -> ModelRef:
        if "model" not in model_cache:
            info = await service.describe()
            model_cache["model"] = ModelRef(**info["model"])
            metrics.model_info.labels(info["model"]["name"], str(info["model"]["version"]),
                                      info["backend"]).set(1)
        return model_cache["model"]

    async def similar(req: SentimentRequest, item: ClassifierInput) -> list[SimilarReview]:
        k = settings.serve.similar_k if req.similar_k is None else req.similar_k
        mode = settings.serve.similar_mode
        if search is None or k == 0 or (mode == "sparse" and not item.text):
            return []
        query = item.text[:SIMILAR_QUERY_CHARS] if item.text else None
        image = item.image if mode != "sparse" else None
        try:
            hits = await search.search(query, image, k=k, mode=mode)
        except Exception as exc:  # noqa: BLE001 - the prediction stands without neighbours
            metrics.retrieval_failures.labels("similar", type(exc).__name__).inc()
            log.warning("similar reviews unavailable: %s: %s", type(exc).__name__, exc)
            return []
        return [SimilarReview(id=h["id"], text=h["text"], label=h.get("label"),
                              score=round(float(h["score"]), 6)) for h in hits]

    async def predict(reqs: list[SentimentRequest]) -> list[Prediction]:
        start = time.perf_counter()
        items = list(await asyncio.gather(*(to_input(r, settings) for r in reqs)))
        ref = await model_ref()
        outputs, neighbours = await asyncio.gather(
            service.classify(items),
            asyncio.gather(*(similar(r, i) for r, i in zip(reqs, items, strict=True))),
        )
        latency = (time.perf_counter() - start) * 1000
        preds = []
        for (out, batch), near, req in zip(outputs, neighbours, reqs, strict=True):
            metrics.batch_size.observe(batch)
            metrics.predictions.labels(out.label, "+".join(out.modalities),
                                       metrics.category_label(req.category)).inc()
            recent.add(category=req.category, product=req.product, label=out.label,
                       modalities=out.modalities, model_version=ref.version)
            preds.append(Prediction(label=out.label, scores=out.scores, model=ref,
                                    modalities=out.modalities, similar=near,
                                    latency_ms=round(latency, 2)))
        return preds

    @app.post("/v1/sentiment", response_model=Prediction, responses=ERROR_RESPONSES,
              summary="Sentiment of one review (text, photo or both)")
    async def sentiment(req: SentimentRequest) -> Prediction:
        return (await predict([req]))[0]

    @app.post("/v1/sentiment/batch", response_model=BatchResponse, responses=ERROR_RESPONSES,
              summary=f"Sentiment of up to {settings.serve.max_batch_items} reviews, in order")
    async def sentiment_batch(req: BatchRequest) -> BatchResponse:
        if not req.items:
            raise InvalidInput("items is empty")
        if len(req.items) > settings.serve.max_batch_items:
            raise PayloadTooLarge(
                f"{len(req.items)} items; the limit is {settings.serve.max_batch_items}"
            )
        return BatchResponse(items=await predict(req.items))

    @app.post("/v1/search", response_model=SearchResponse, responses=ERROR_RESPONSES,
              summary="Indexed reviews similar to a query text and/or photo")
    async def search_reviews(req: SearchRequest) -> SearchResponse:
        start = time.perf_counter()
        if search is None:
            raise ServiceUnavailable("retrieval is switched off in this deployment "
                                     "(SHOPSENSE_SERVE__RETRIEVAL=false)")
        query = check_search(
            req.query, has_image=req.image is not None, mode=req.mode, k=req.k,
            fusion=req.fusion, rerank=req.rerank,
            filters=req.filters.as_retrieval() if req.filters is not None else None,
            max_chars=settings.serve.max_text_chars).query
        image = await _load_image(req.image, settings) if req.image is not None else None
        kwargs: dict[str, Any] = {"k": req.k, "mode": req.mode}
        if req.filters is not None:
            kwargs["filters"] = req.filters.as_retrieval()
        if req.fusion is not None:
            kwargs["fusion"] = req.fusion
        if req.rerank is not None:
            kwargs["rerank"] = req.rerank
        try:
            hits = await search.search(query, image, **kwargs)
        except ShopsenseError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected retriever failure
            metrics.retrieval_failures.labels("search", type(exc).__name__).inc()
            raise UpstreamError(f"retrieval failed: {type(exc).__name__}: {exc}") from exc
        return SearchResponse(hits=[Hit(**h) for h in hits], mode=req.mode,
                              latency_ms=round((time.perf_counter() - start) * 1000, 2))

    @app.get("/v1/predictions/recent", responses={422: {"model": ErrorBody}},
             summary="This replica's recent predictions by product category, over time")
    async def recent_predictions(
        minutes: int = Query(60, ge=1, le=1440, description="how far back to look"),
        bucket_seconds: int | None = Query(
            None, ge=5, le=3600,
            description="width of one time bucket (default: the window in 60 buckets, at "
            "least 5 s)"),
        category: str | None = Query(None, min_length=1, max_length=64,
                                     description="only this category"),
    ) -> dict[str, Any]:
        """Counts of predictions per time bucket and category (the 8 busiest categories by
        name, the rest as ``other``; no category is ``unknown``), totals per category and
        label, and the latest predictions. Kept in memory by each API replica (the last
        10,000 predictions; none of their text or photos), so it starts empty on a restart and
        each replica answers for itself."""
        step = bucket_seconds or max(5, -(-minutes * 60 // 60))
        if -(-minutes * 60 // step) > RECENT_MAX_BUCKETS:
            raise InvalidInput(f"{minutes} minutes in {step}-second buckets is over "
                               f"{RECENT_MAX_BUCKETS} buckets; use wider buckets")
        return recent.summary(minutes, step, category=category)

    @app.get("/healthz", summary="Liveness: the API process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the classifier is loaded and answers",
             responses={503: {"model": ErrorBody}})
    async def readyz() -> JSONResponse:
        try:
            ref = await asyncio.wait_for(model_ref(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return _error(503, "ModelNotReady", f"classifier not ready: {exc}")
        return JSONResponse({"status": "ready", "model": ref.model_dump()})

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    mount_ui(app)
    return app


class LocalClassifierService:
    """A backend in this process (tests, tools); no batching across requests."""

    def __init__(self, backend) -> None:
        self.backend = backend

    async def classify(self, items: list[ClassifierInput]) -> list[tuple[ClassifierOutput, int]]:
        outs = await asyncio.to_thread(self.backend.predict_batch, items)
        return [(o, len(items)) for o in outs]

    async def describe(self) -> dict[str, Any]:
        return {"model": self.backend.model.model_dump(), "backend": self.backend.name}
