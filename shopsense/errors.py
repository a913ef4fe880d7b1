"""The platform's exception tree. Each name says the condition; the API maps them to statuses
in one place (``services/inference/api.py``, ``STATUS``).

ShopsenseError
├── InvalidInput            (422) the request is well-formed JSON but its content is unusable
│   ├── InvalidImage        (422) bytes that are not a supported image, bad base64
│   └── ImageFetchRefused   (400) URL not allowed: scheme, private/loopback/metadata address,
│                                 robots.txt (the scraper)
├── ImageFetchFailed        (400) the URL could not be fetched: timeout, DNS, HTTP error
├── PayloadTooLarge         (413) bytes, pixels, sides, aspect ratio or item counts over a cap
├── Unauthorized            (401) no or unknown API key
├── RateLimited             (429) the key is over its request rate (``retry_after_s``)
├── DeadlineExceeded        (504) the request ran out of its time budget
├── ModelNotFound           (404) no such model / alias in the registry
├── ModelNotReady           (503) the model is still loading
├── ServiceUnavailable      (503) a part of the service is off or not up yet
│   ├── Overloaded          (503) too much work in flight: try again (``retry_after_s``)
│   └── LLMUnavailable      (503) no LLM can be reached or started (runtime or weights
│       │                         missing, endpoint down)
│       └── WeightsCorrupt        an offline model's file has the wrong size or sha256
├── UpstreamError           (502) a server behind the API failed or answered nonsense
└── DataError                     a data file or dataset that cannot be read

An error's message is written for the person who sent the request. Errors about servers
behind the API (``UpstreamError``) carry internal detail (addresses, replies): the API logs it
and answers with a fixed message instead.
"""

from __future__ import annotations


class ShopsenseError(Exception):
    """Base of every error the platform raises on purpose."""


class InvalidInput(ShopsenseError):
    pass


class InvalidImage(InvalidInput):
    pass


class ImageFetchRefused(InvalidInput):
    pass


class ImageFetchFailed(ShopsenseError):
    """``status``: the HTTP status the image server answered (``None`` when it did not answer);
    ``retry_after_s``: its ``Retry-After`` in seconds, when it sent one (429/503)."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class PayloadTooLarge(ShopsenseError):
    pass


class Unauthorized(ShopsenseError):
    pass


class RateLimited(ShopsenseError):
    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ShopsenseError):
    pass


class ModelNotFound(ShopsenseError):
    pass


class ModelNotReady(ShopsenseError):
    pass


class UpstreamError(ShopsenseError):
    pass


class ServiceUnavailable(ShopsenseError):
    """A part of the service is switched off or not up yet (HTTP 503)."""


class Overloaded(ServiceUnavailable):
    """More work in flight or queued than the service admits; ``retry_after_s`` says when to
    try again (HTTP 503 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMUnavailable(ServiceUnavailable):
    """No LLM can be reached or started: the runtime or the weights are not installed, or the
    configured endpoint does not answer."""


class WeightsCorrupt(LLMUnavailable):
    """An offline model's joined GGUF file does not have the published size or sha256."""


class DataError(ShopsenseError):
    pass
