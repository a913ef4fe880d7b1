"""Every error the API answers, in one place: the exception → status table (``STATUS``), the
body (``{"error", "message", "request_id"}``), the ``Retry-After`` header, the rejection
reason counted in ``shopsense_rejected_requests_total``, and the log line.

Messages are the exception's own text only for errors about the request (4xx) and for the
service's own 503s; errors about servers behind the API (``UpstreamError``) and anything
unexpected answer a fixed message, and the detail goes to the log under the request id.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shopsense.errors import (
    DeadlineExceeded,
    ImageFetchFailed,
    ImageFetchRefused,
    InvalidImage,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    ShopsenseError,
    Unauthorized,
    UpstreamError,
)

log = logging.getLogger("shopsense.api")

REQUEST_ID_HEADER = "x-request-id"


class BodyTimeout(DeadlineExceeded):
    """The client did not finish sending its body in time (HTTP 408)."""


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error type")
    message: str = Field(description="what was wrong, in words")
    request_id: str | None = Field(None, description="this request's id (also in the "
                                   "X-Request-Id header and the service's logs)")


# (exception class, status, rejection reason); the first match wins, so subclasses first.
STATUS: list[tuple[type[Exception], int, str]] = [
    (Unauthorized, 401, "unauthorized"),
    (RateLimited, 429, "rate_limited"),
    (PayloadTooLarge, 413, "too_large"),
    (ImageFetchRefused, 400, "image_refused"),
    (ImageFetchFailed, 400, "image_fetch_failed"),
    (InvalidImage, 422, "invalid_image"),
    (InvalidInput, 422, "invalid_input"),
    (ModelNotFound, 404, "not_found"),
    (BodyTimeout, 408, "body_timeout"),
    (DeadlineExceeded, 504, "deadline"),
    (Overloaded, 503, "overloaded"),
    # an upstream error is one whatever else it is (the vLLM backend's BackendUnavailable is
    # also a ModelNotReady): its message is internal
    (UpstreamError, 502, "upstream"),
    (ModelNotReady, 503, "not_ready"),
    (ServiceUnavailable, 503, "unavailable"),
]

# Statuses whose message is fixed (the exception's text may hold internals).
_FIXED: dict[int, str] = {
    500: "internal error",
    502: "a service behind the API failed",
}
_UPSTREAM_NOT_READY = "a service behind the API is not ready"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 429, 502, 503, 504)
}


def classify(exc: BaseException) -> tuple[int, str]:
    """``(status, reason)`` of an exception (500, ``internal`` when it is not ours)."""
    for cls, status, reason in STATUS:
        if isinstance(exc, cls):
            if status == 502 and isinstance(exc, ModelNotReady):
                return 503, "upstream_not_ready"
            return status, reason
    return 500, "internal"


def kind_of_status(status: int) -> str:
    return "".join(w.capitalize() for w in HTTPStatus(status).phrase.split())


def error_json(status: int, kind: str, message: str, request_id: str | None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if request_id:
        headers.setdefault(REQUEST_ID_HEADER, request_id)
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": kind, "message": message, "request_id": request_id})


def error_response(exc: BaseException, *, request_id: str | None, key: str | None = None,
                   route: str = "", metrics=None) -> JSONResponse:
    """The response for ``exc`` (the one mapping of the API), counted and logged."""
    status, reason = classify(exc)
    if isinstance(exc, ShopsenseError) and status not in _FIXED and reason != "upstream_not_ready":
        kind, message = type(exc).__name__, str(exc) or kind_of_status(status)
    elif reason == "upstream_not_ready":
        kind, message = "ServiceUnavailable", _UPSTREAM_NOT_READY
    else:
        kind = "InternalError" if status == 500 else "UpstreamError"
        message = _FIXED[status]
    if status >= 500 and request_id:
        message = f"{message} (request id {request_id})"
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if status in (429, 503) and retry is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry)))
    note_error(status, reason, request_id=request_id, key=key, route=route, metrics=metrics,
               detail=f"{type(exc).__name__}: {exc}", exc=exc if status == 500 else None)
    return error_json(status, kind, message, request_id, headers)


def note_error(status: int, reason: str, *, request_id: str | None, key: str | None,
               route: str, metrics=None, detail: str = "", exc: BaseException | None = None
               ) -> None:
    """Count a rejection (``shopsense_rejected_requests_total``) and log it with the request
    id and key name (never the key)."""
    if metrics is not None:
        metrics.rejected.labels(reason, key or "none").inc()
    level = logging.ERROR if status >= 500 else logging.INFO
    log.log(level, "request %s key=%s %s -> %d %s: %s", request_id, key or "-", route or "-",
            status, reason, detail[:500], exc_info=exc)


def platform_error(exc: BaseException, *, retry_after_s: float = 1.0) -> BaseException:
    """What a failed call to another deployment means for the API: the platform error the
    replica raised (out of Ray's ``RayTaskError``), ``Overloaded`` for Serve's backpressure or
    an unavailable deployment, else an ``UpstreamError`` (502; the detail is logged only)."""
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    cause = getattr(exc, "cause", None)
    if isinstance(exc, ShopsenseError):
        return exc
    if isinstance(cause, ShopsenseError):
        return cause
    for err in (exc, cause):
        if isinstance(err, BackPressureError):
            return Overloaded("a service behind the API has a full queue; try again shortly",
                              retry_after_s=err.retry_after_s or retry_after_s)
        if isinstance(err, DeploymentUnavailableError):
            return Overloaded("a service behind the API is not available right now",
                              retry_after_s=retry_after_s)
    return UpstreamError(f"call failed: {type(exc).__name__}: {exc}")
