"""The platform's exception tree. Each name says the condition; the API maps them to statuses
in one place (``services/inference/api.py``).

ShopsenseError
├── InvalidInput            (422) the request is well-formed JSON but its content is unusable
│   ├── InvalidImage        (422) bytes that are not a supported image, bad base64
│   └── ImageFetchRefused   (400) URL not allowed: scheme, private/loopback/metadata address
├── ImageFetchFailed        (400) the URL could not be fetched: timeout, DNS, HTTP error
├── PayloadTooLarge         (413) bytes, pixels or item counts over a configured cap
├── ModelNotFound                 no such model / alias in the registry
├── ModelNotReady           (503) the model is still loading
├── UpstreamError           (502) a model server behind the API answered nonsense
├── LLMUnavailable          (503) no LLM can be reached or started (runtime or weights
│   │                             missing, endpoint down)
│   └── WeightsCorrupt            an offline model's file has the wrong size or sha256
└── DataError                     a data file or dataset that cannot be read
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
    pass


class PayloadTooLarge(ShopsenseError):
    pass


class ModelNotFound(ShopsenseError):
    pass


class ModelNotReady(ShopsenseError):
    pass


class UpstreamError(ShopsenseError):
    pass


class ServiceUnavailable(ShopsenseError):
    """A part of the service is switched off or not up yet (HTTP 503)."""


class LLMUnavailable(ShopsenseError):
    """No LLM can be reached or started: the runtime or the weights are not installed, or the
    configured endpoint does not answer."""


class WeightsCorrupt(LLMUnavailable):
    """An offline model's joined GGUF file does not have the published size or sha256."""


class DataError(ShopsenseError):
    pass
