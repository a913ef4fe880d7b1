"""The HTTP API (FastAPI). Transport only: requests are validated and converted to
``ClassifierInput`` here, at the edge; every error is mapped to a status in one place
(``services/inference/errors.py``); what a request meets before any of this (API key, rate
limit, admission, body cap, structure budget, catch-all) is ``services/inference/guard.py``;
the classifier is reached through ``ClassifierService``.

Work is bounded at the edge: text must be valid Unicode (a lone surrogate is a 422, never a
tokenizer crash); images are checked from their header and decoded straight to the model's
input size on the API's own threads (``ImageDecoder``), URLs fetched on a pool of their own
(``ImageFetcher``); each ``/v1/`` request has a deadline (``deadline_s``, 504 past it) and the
similar-review lookup a shorter one; a /v1/search query may not repeat a word without limit.

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
import re
import time
from collections import Counter as Tally
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopsense.errors import (
    DeadlineExceeded,
    InvalidInput,
    PayloadTooLarge,
    ServiceUnavailable,
    ShopsenseError,
)
from shopsense.images.decode import ImageDecoder
from shopsense.images.fetch import FetchSession, ImageFetcher
from shopsense.images.source import image_url, load_image_bytes
from shopsense.schemas import Label, ModelRef, Prediction, SimilarReview
from shopsense.settings import Settings

from services.retrieval import Hit, check_search

from services.inference.backends import describe_backend
from services.inference.backends.base import ClassifierInput, ClassifierOutput, predict_isolated
from services.inference.cache import (
    CacheSettings,
    ResponseCache,
    build_cache,
    cache_metrics_for,
    image_digest,
    normalise_text,
    response_key,
)
from services.inference.errors import (
    ERROR_RESPONSES,
    ErrorBody,
    error_json,
    error_response,
    kind_of_status,
    note_error,
    platform_error,
)
from services.inference.guard import JsonBudget, RequestGuard, keyring_from_settings, state_of
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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(value: str) -> str:
    """Refuse lone surrogates (``"\\ud800"`` in JSON): valid JSON, but not text any tokenizer,
    index or log can take."""
    bad = _SURROGATE.search(value)
    if bad is not None:
        raise ValueError(f"not valid Unicode: a lone surrogate (U+{ord(bad.group()):04X}) at "
                         f"character {bad.start()}")
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]


def _json_integer(value: Any) -> Any:
    """A JSON Schema integer: an int or an integral number (``10.0``), never a boolean or a
    string (pydantic's lax mode would take ``false`` as 0 and ``"3"`` as 3)."""
    if isinstance(value, bool) or isinstance(value, str):
        raise ValueError("should be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(**bounds: int) -> Any:
    """An integer field type with bounds (``ge``, ``le``) that takes JSON integers only (the
    bounds sit inside, so the OpenAPI schema states them as minimum/maximum)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_json_integer)]


class SentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"text": "The screen arrived cracked and support never answered."}],
    })

    text: Text | None = Field(None, description="the review text")
    image: Text | None = Field(
        None, description="a product photo: base64, a data: URL, or an http(s) URL"
    )
    similar_k: json_int(ge=0, le=50) | None = Field(
        None, description="similar indexed reviews to return (default from the service; 0 = "
        "none)",
    )
    category: Text | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$",
        description="the product's category (e.g. 'electronics'): recorded with the prediction "
        "for the recent-predictions chart and the metrics' category label (at most 32 distinct "
        "categories per replica get their own label value, the rest count as 'other')",
    )
    product: Text | None = Field(
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

    category: Text | None = None
    label: Label | None = None
    product: Text | None = Field(None, description="product id (e.g. an ASIN)")
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
                      "filters": {"label": "negative", "rating": {"lte": 2}}}],
    })

    query: Text | None = Field(None, description="what to look for")
    image: Text | None = Field(
        None, description="a query photo (base64, data: URL or http(s) URL): searches the "
        "image vectors, fused with the text lists when a query is given too"
    )
    k: json_int(ge=1, le=100) = Field(10, description="how many reviews")
    filters: SearchFilters | None = None
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"
    fusion: Literal["rrf", "weighted"] | None = Field(
        None, description="how hybrid lists are fused (default from the service settings)"
    )
    rerank: StrictBool | None = Field(
        None, description="re-score the fused head with the trained cross-encoder (default "
        "from the service settings; needs a query text and a trained reranker)"
    )


class SearchResponse(BaseModel):
    hits: list[Hit]
    mode: str
    latency_ms: float


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[SentimentRequest] = Field(..., description="reviews, answered in the same order",
                                          json_schema_extra={"minItems": 1})


class BatchResponse(BaseModel):
    items: list[Prediction]


def _add_exception_handlers(app: FastAPI) -> None:
    """The errors FastAPI itself raises (unknown routes, validation) and the platform's own,
    answered through ``errors.error_response`` like everything else."""

    def context(request: Request) -> dict[str, Any]:
        state = state_of(request.scope)
        return {"request_id": state.get("request_id"), "key": state.get("key"),
                "route": request.url.path, "metrics": app.state.metrics}

    @app.exception_handler(ShopsenseError)
    async def _shopsense_error(request: Request, exc: ShopsenseError) -> JSONResponse:
        return error_response(exc, **context(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths (404) and methods (405) answer in the API's error shape too.
        kind = kind_of_status(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else kind
        if exc.status_code == 404:
            message = "no such route; see /docs for the API and / for the web page"
        ctx = context(request)
        note_error(exc.status_code, kind.lower(), request_id=ctx["request_id"], key=ctx["key"],
                   route=ctx["route"], metrics=ctx["metrics"], detail=message)
        return error_json(exc.status_code, kind, message, ctx["request_id"],
                          getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(InvalidInput("; ".join(parts) or "invalid request"),
                              **context(request))


class ObserveRequests:
    """ASGI middleware: request counts, errors and latency per route (pure ASGI: Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request)."""

    def __init__(self, app, metrics: ApiMetrics, routes: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    @staticmethod
    def route_label(scope) -> str:
        """The matched route's template (``/v1/sentiment``, ``/ui/static/{name}``), or
        ``unmatched``: a label value per route, never per requested path."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str) and path:
            return path
        # refused before routing (key, rate, size): the path, if it is one of the API's routes
        known = scope.get("shopsense.routes")
        return scope.get("path", "") if known and scope.get("path") in known else "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}
        scope["shopsense.routes"] = self.routes

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
            key = state_of(scope).get("key")
            if key is not None:
                self.metrics.key_requests.labels(key, str(code)).inc()


class ImageLoader:
    """Images of one request: URLs through the replica's ``ImageFetcher`` (this request's
    share and deadline), bytes decoded by the replica's ``ImageDecoder``."""

    def __init__(self, settings: Settings, decoder: ImageDecoder, fetches: FetchSession) -> None:
        self.settings = settings
        self.decoder = decoder
        self.fetches = fetches

    async def load(self, value: str):
        return (await self.load_with_digest(value))[0]

    async def load_with_digest(self, value: str):
        """The decoded image and the sha256 of its encoded bytes."""
        text = value.strip()
        if not text:
            raise InvalidInput("image is empty")
        url = image_url(text)
        if url is not None:
            raw = await self.fetches.fetch(url)
        else:
            raw = await self.decoder.run(load_image_bytes, text, self.settings.images)
        return await self.decoder.decode(raw), image_digest(raw)


async def to_input(req: SentimentRequest, settings: Settings,
                   images: ImageLoader) -> ClassifierInput:
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
    image = digest = None
    if req.image is not None:
        image, digest = await images.load_with_digest(req.image)
    if text is None and image is None:
        raise InvalidInput("give text, an image, or both")
    return ClassifierInput(text=text, image=image, image_sha256=digest)


_WORD = re.compile(r"[^\W_]+")


def repeated_terms(query: str, *, max_terms: int, max_repeats: int) -> None:
    """Refuse a search query of more than ``max_terms`` words or with one word more than
    ``max_repeats`` times (BM25 scores each occurrence as a clause: 3,333 copies of one word
    cost 200x a single one)."""
    words = [w.lower() for w in _WORD.findall(query)]
    if len(words) > max_terms:
        raise InvalidInput(f"query has {len(words)} words; the limit is {max_terms}")
    if words:
        word, count = Tally(words).most_common(1)[0]
        if count > max_repeats:
            raise InvalidInput(f"query repeats {word[:40]!r} {count} times; the limit is "
                               f"{max_repeats} (repeating a word does not find more)")


def collapse_terms(text: str, *, max_terms: int, max_repeats: int) -> str:
    """The query a similar-review lookup sends: the first ``max_terms`` words, each kept at
    most ``max_repeats`` times (the prediction must stand whatever the review says, so the
    lookup trims instead of refusing). Text without excess comes back unchanged."""
    words = _WORD.findall(text)
    if len(words) <= max_repeats or (
            len(words) <= max_terms
            and Tally(w.lower() for w in words).most_common(1)[0][1] <= max_repeats):
        return text
    seen: Tally[str] = Tally()
    kept = []
    for w in words:
        low = w.lower()
        seen[low] += 1
        if seen[low] <= max_repeats:
            kept.append(w)
            if len(kept) >= max_terms:
                break
    return " ".join(kept)


def _remaining(request: Request, settings: Settings) -> float:
    """Seconds left of this request's ``deadline_s`` (counted from the guard's admission)."""
    started = state_of(request.scope).get("started", time.monotonic())
    return started + settings.serve.deadline_s - time.monotonic()


async def within_deadline(request: Request, settings: Settings, work):
    """Await ``work`` within the request's deadline (``DeadlineExceeded``, 504, past it)."""
    try:
        async with asyncio.timeout(max(0.0, _remaining(request, settings))):
            return await work
    except TimeoutError as exc:
        raise DeadlineExceeded(f"the request took longer than its "
                               f"{settings.serve.deadline_s:g}s budget") from exc


# The longest query text sent to the retrievers for similar reviews (BM25 over a whole long
# review costs a term lookup per word; its opening carries most of what it is about).
SIMILAR_QUERY_CHARS = 2000


RECENT_CAPACITY = 10_000
RECENT_MAX_BUCKETS = 720


def build_api(service: ClassifierService, settings: Settings,
              search: SearchService | None = None,
              recent: RecentPredictions | None = None,
              echo_request_id: bool = True,
              cache: ResponseCache | None = None) -> FastAPI:
    """The FastAPI app over ``service`` (and ``search`` for similar reviews), with the web page.
    ``recent`` is the ring buffer of recent predictions (a new one of ``RECENT_CAPACITY``
    entries by default); ``cache`` the response cache (default: none; the engines pass the
    one ``SHOPSENSE_CACHE_*`` describes). The same app runs inside Ray Serve, on uvicorn in
    the ``local`` engine, and in tests."""
    metrics = ApiMetrics()
    cache = cache if cache is not None else build_cache(CacheSettings(enabled=False))
    cache_metrics_for(cache, metrics)
    recent = recent if recent is not None else RecentPredictions(RECENT_CAPACITY)
    app = FastAPI(
        title="shopsense inference API",
        version="1",
        description="Sentiment of e-commerce reviews from their text and product photos.",
    )
    app.state.metrics = metrics
    app.state.recent = recent
    retry = settings.serve.retry_after_s
    decoder = ImageDecoder(settings.images, retry_after_s=retry)
    fetcher = ImageFetcher(settings.images, retry_after_s=retry)
    app.state.decoder, app.state.fetcher = decoder, fetcher
    keyring = keyring_from_settings(settings)  # a bad keys file fails here, at start-up
    app.state.keyring = keyring
    _add_exception_handlers(app)
    max_items = settings.serve.max_batch_items

    def too_many_items(containers: int, commas: int) -> PayloadTooLarge:
        if containers - 2 > max_items:  # the outer object and the items list, then one each
            return PayloadTooLarge(f"the body holds about {containers - 2} items; "
                                   f"the limit is {max_items}")
        return PayloadTooLarge(f"the body holds more values ({commas + 1}) than {max_items} "
                               f"items can; the limit is {max_items} items")

    # Structure budgets: what the routes' schemas allow (SentimentRequest: 5 fields; the search
    # request: 7 fields, filters 4, rating 2), with some slack so that a slightly wrong body
    # still gets the schema's own message.
    budgets = {
        "/v1/sentiment": JsonBudget(max_containers=3, max_commas=16),
        "/v1/sentiment/batch": JsonBudget(max_containers=max_items + 3,
                                          max_commas=5 * max_items + 8,
                                          too_many=too_many_items),
        "/v1/search": JsonBudget(max_containers=6, max_commas=24),
    }
    app.add_middleware(RequestGuard, settings=settings, metrics=metrics, keyring=keyring,
                       budgets=budgets, echo_request_id=echo_request_id)
    api_routes = frozenset(budgets) | {"/v1/predictions/recent"}
    app.add_middleware(ObserveRequests, metrics=metrics, routes=api_routes)

    model_cache: dict[str, Any] = {}

    async def model_ref() -> ModelRef:
        if "model" not in model_cache:
            info = await service.describe()
            model_cache["model"] = ModelRef(**info["model"])
            # what the answers depend on (the response cache's key): the backend's identity
            model_cache["identity"] = info.get("identity") or ModelRef(
                **info["model"]).model_dump_json() + "/" + str(info["backend"])
            model_cache["image_encoder_id"] = info.get("image_encoder_id")
            metrics.model_info.labels(info["model"]["name"], str(info["model"]["version"]),
                                      info["backend"]).set(1)
        return model_cache["model"]

    lookups = {"running": 0}

    async def similar(req: SentimentRequest, item: ClassifierInput, request_id: str | None,
                      classified: asyncio.Future, index: int,
                      ) -> tuple[list[SimilarReview], str | None]:
        """Similar reviews of one item and, when there are none although some were asked for,
        why (``load``, ``deadline`` or ``error``). The lookup reuses the photo's image features
        the classifier computed (the same EfficientNet-Lite0), so a photo is encoded once per
        request. At most ``similar_max_concurrent`` lookups run at once per API replica: a
        request that finds them all busy is answered without similar reviews at once."""
        k = settings.serve.similar_k if req.similar_k is None else req.similar_k
        mode = settings.serve.similar_mode
        if search is None or k == 0 or (mode == "sparse" and not item.text):
            return [], None
        if lookups["running"] >= settings.serve.similar_max_concurrent:
            metrics.similar_skipped.labels("load").inc()
            return [], "load"
        lookups["running"] += 1
        try:
            query = None
            if item.text:
                query = collapse_terms(item.text[:SIMILAR_QUERY_CHARS],
                                       max_terms=settings.serve.max_query_terms,
                                       max_repeats=settings.serve.max_term_repeats)
            image: Any = item.image if mode != "sparse" else None
            extra: dict[str, Any] = {}
            if image is not None and model_cache.get("image_encoder_id"):
                # the photo's features from the classifier (before the lookup's own time
                # budget starts): the retriever uses them when its image encoder is the same,
                # instead of encoding the photo again
                outs = await asyncio.shield(classified)
                vec = outs[index][0].image_vector
                if vec is not None:
                    extra["image_features"] = (model_cache["image_encoder_id"], vec)
            async with asyncio.timeout(settings.serve.similar_deadline_s):
                hits = await search.search(query, image, k=k, mode=mode, **extra)
        except TimeoutError:
            metrics.similar_skipped.labels("deadline").inc()
            log.warning("request %s: similar reviews skipped: no answer within %gs",
                        request_id, settings.serve.similar_deadline_s)
            return [], "deadline"
        except Exception as exc:  # noqa: BLE001 - the prediction stands without neighbours
            if classified.done() and classified.exception() is exc:
                raise  # the classifier failed: the request fails, not only its neighbours
            metrics.retrieval_failures.labels("similar", type(exc).__name__).inc()
            metrics.similar_skipped.labels("error").inc()
            log.warning("request %s: similar reviews unavailable: %s: %s", request_id,
                        type(exc).__name__, exc)
            return [], "error"
        finally:
            lookups["running"] -= 1
        return [SimilarReview(id=h["id"], text=h["text"], label=h.get("label"),
                              score=round(float(h["score"]), 6)) for h in hits], None

    fold_case = settings.serve.cache_fold_case

    def cache_key(identity: str, req: SentimentRequest, item: ClassifierInput) -> str:
        k = settings.serve.similar_k if req.similar_k is None else req.similar_k
        options = {"similar_k": k, "similar_mode": settings.serve.similar_mode} if (
            search is not None and k) else {}
        return response_key(model=identity, text=normalise_text(item.text, fold_case=fold_case),
                            image_sha256=item.image_sha256, options=options)

    async def answer(items: list[ClassifierInput], reqs: list[SentimentRequest],
                     rid: str | None) -> list[tuple[dict[str, Any], int | None]]:
        """Each item's answer (label, scores, modalities, similar, similar_skipped, cached)
        and the size of the batch that computed it (``None`` for a cached answer)."""
        identity = model_cache["identity"]
        keys = [cache_key(identity, r, i) for r, i in zip(reqs, items, strict=True)]
        found = await asyncio.gather(*(cache.get(k) for k in keys))
        todo = [n for n, hit in enumerate(found) if hit is None]
        results: list[tuple[dict[str, Any], int | None]] = [
            ({**hit, "cached": True}, None) if hit is not None else ({}, None) for hit in found]
        if not todo:
            return results
        classified = asyncio.ensure_future(service.classify([items[n] for n in todo]))
        try:
            neighbours = await asyncio.gather(*(
                similar(reqs[n], items[n], rid, classified, pos) for pos, n in enumerate(todo)))
            outputs = await classified
        finally:
            if not classified.done():
                classified.cancel()
        for n, (out, batch), (near, skipped) in zip(todo, outputs, neighbours, strict=True):
            body = {"label": out.label, "scores": out.scores, "modalities": out.modalities,
                    "similar": [s.model_dump() for s in near], "similar_skipped": skipped}
            if skipped is None:  # a partial answer is not kept: asked again, it may be whole
                await cache.put(keys[n], body)
            results[n] = ({**body, "cached": False}, batch)
        return results

    async def predict(request: Request, reqs: list[SentimentRequest]) -> list[Prediction]:
        start = time.perf_counter()
        rid = state_of(request.scope).get("request_id")
        images = ImageLoader(settings, decoder, fetcher.session())
        items = list(await asyncio.gather(*(to_input(r, settings, images) for r in reqs)))
        ref = await model_ref()
        answers = await answer(items, reqs, rid)
        latency = (time.perf_counter() - start) * 1000
        preds = []
        for (body, batch), req in zip(answers, reqs, strict=True):
            if batch is not None:
                metrics.batch_size.observe(batch)
            metrics.predictions.labels(body["label"], "+".join(body["modalities"]),
                                       metrics.category_label(req.category)).inc()
            recent.add(category=req.category, product=req.product, label=body["label"],
                       modalities=body["modalities"], model_version=ref.version)
            preds.append(Prediction(model=ref, latency_ms=round(latency, 2), **body))
        return preds

    @app.post("/v1/sentiment", response_model=Prediction, responses=ERROR_RESPONSES,
              summary="Sentiment of one review (text, photo or both)")
    async def sentiment(req: SentimentRequest, request: Request) -> Prediction:
        return (await within_deadline(request, settings, predict(request, [req])))[0]

    @app.post("/v1/sentiment/batch", response_model=BatchResponse, responses=ERROR_RESPONSES,
              summary=f"Sentiment of up to {settings.serve.max_batch_items} reviews, in order")
    async def sentiment_batch(req: BatchRequest, request: Request) -> BatchResponse:
        if not req.items:
            raise InvalidInput("items is empty")
        if len(req.items) > settings.serve.max_batch_items:
            raise PayloadTooLarge(
                f"{len(req.items)} items; the limit is {settings.serve.max_batch_items}"
            )
        return BatchResponse(items=await within_deadline(request, settings,
                                                         predict(request, req.items)))

    @app.post("/v1/search", response_model=SearchResponse, responses=ERROR_RESPONSES,
              summary="Indexed reviews similar to a query text and/or photo")
    async def search_reviews(req: SearchRequest, request: Request) -> SearchResponse:
        return await within_deadline(request, settings, run_search(req, request))

    async def run_search(req: SearchRequest, request: Request) -> SearchResponse:
        start = time.perf_counter()
        if search is None:
            raise ServiceUnavailable("retrieval is switched off in this deployment "
                                     "(SHOPSENSE_SERVE__RETRIEVAL=false)")
        query = check_search(
            req.query, has_image=req.image is not None, mode=req.mode, k=req.k,
            fusion=req.fusion, rerank=req.rerank,
            filters=req.filters.as_retrieval() if req.filters is not None else None,
            max_chars=settings.serve.max_text_chars).query
        if query is not None:
            repeated_terms(query, max_terms=settings.serve.max_query_terms,
                           max_repeats=settings.serve.max_term_repeats)
        image = None
        if req.image is not None:
            image = await ImageLoader(settings, decoder, fetcher.session()).load(req.image)
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
            # the detail is logged (under the request id) by the error handler, never answered
            raise platform_error(exc, retry_after_s=settings.serve.retry_after_s) from exc
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
    async def readyz(request: Request) -> JSONResponse:
        try:
            ref = await asyncio.wait_for(model_ref(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            rid = state_of(request.scope).get("request_id")
            log.warning("request %s: classifier not ready: %s: %s", rid, type(exc).__name__, exc)
            return error_json(503, "ModelNotReady", "classifier not ready yet", rid)
        return JSONResponse({"status": "ready", "model": ref.model_dump()})

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    mount_ui(app)
    _schema_limits(app, settings)
    return app


def _schema_limits(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI schema with this deployment's limits (text length, batch size), which the
    code enforces with its own messages."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            parts = schema.get("components", {}).get("schemas", {})
            for name, field in (("SentimentRequest", "text"), ("SearchRequest", "query")):
                prop = parts.get(name, {}).get("properties", {}).get(field, {})
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "string":
                        option["maxLength"] = settings.serve.max_text_chars
            items = parts.get("BatchRequest", {}).get("properties", {}).get("items")
            if items is not None:
                items["maxItems"] = settings.serve.max_batch_items
        return app.openapi_schema

    app.openapi = openapi


class LocalClassifierService:
    """A backend in this process (tests, tools); no batching across requests."""

    def __init__(self, backend) -> None:
        self.backend = backend

    async def classify(self, items: list[ClassifierInput]) -> list[tuple[ClassifierOutput, int]]:
        outs = await asyncio.to_thread(predict_isolated, self.backend, items)
        for o in outs:
            if isinstance(o, Exception):
                raise o
        return [(o, len(items)) for o in outs]

    async def describe(self) -> dict[str, Any]:
        return describe_backend(self.backend)

