"""Resolve ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` against an MLflow server
through its documented REST API (no MLflow import in the operator image):

* ``GET /api/2.0/mlflow/registered-models/alias?name=N&alias=A`` -> ``{"model_version": {...}}``
* ``GET /api/2.0/mlflow/model-versions/get?name=N&version=V``    -> ``{"model_version": {...}}``
* ``GET /api/2.0/mlflow/model-versions/get-download-uri?name=N&version=V`` -> ``{"artifact_uri"}``

Errors answer ``{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}`` with HTTP 404.

The operator talks only to the registries of its allow-list (``OperatorSettings.registries``),
each with its own credentials, and the registry's reply never reaches a SentimentModel's
status: messages say what happened (status code, MLflow's error code when it is a known one),
in the operator's own words.

Exceptions say whether to retry: :class:`RegistryUnavailable` (network, timeouts, 5xx, a
version still registering) is temporary; :class:`ModelVersionNotFound` (unknown name, alias or
version) is the user's to fix, also reported and retried at the poll interval.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import httpx

from operators.sentimentmodel.settings import RegistryEntry
from operators.sentimentmodel.spec import ModelRef

log = logging.getLogger("shopsense.operator.registry")
#: MLflow error codes that may appear in a status message (a fixed vocabulary, not the reply).
KNOWN_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED",
               "UNAUTHENTICATED", "INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE",
               "RESOURCE_EXHAUSTED", "BAD_REQUEST"}


class RegistryError(Exception):
    """Base of the registry errors."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully; try again later."""


class ModelVersionNotFound(RegistryError):
    """The registry answered: no such model, alias or version."""


def credentials_headers(entry: RegistryEntry) -> dict[str, str]:
    """The Authorization header for one registry, from its own credentials folder (a mounted
    Secret: MLflow's client variable names as file names). None for the others."""
    if not entry.credentials_dir:
        return {}
    d = Path(entry.credentials_dir)

    def read(key: str) -> str | None:
        f = d / key
        return f.read_text().strip() if f.is_file() else None

    if token := read("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, pw = read("MLFLOW_TRACKING_USERNAME"), read("MLFLOW_TRACKING_PASSWORD")
    if user and pw:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}
    return {}


class RegistryClient:
    """A small async client of MLflow's model-registry REST API."""

    def __init__(self, *, timeout_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None,
                 headers: dict[str, str] | None = None) -> None:
        # headers: for the registry configured without an allow-list entry of its own (the
        # operator's MLFLOW_TRACKING_* environment); never sent to any other registry
        self._default_headers = headers or {}
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                         follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _headers(self, entry: RegistryEntry) -> dict[str, str]:
        if entry.credentials_dir:
            return credentials_headers(entry)
        return dict(self._default_headers) if entry.name == "default" else {}

    async def _get(self, entry: RegistryEntry, path: str, params: dict[str, str]) -> httpx.Response:
        try:
            return await self._client.get(entry.url.rstrip("/") + "/api/2.0/mlflow" + path,
                                          params=params, headers=self._headers(entry))
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"registry {entry.name} unreachable "
                                      f"({type(exc).__name__})") from exc

    async def resolve(self, ref: ModelRef, *, registry: RegistryEntry | None) -> str:
        """The version ``ref`` points at now (a string such as ``"4"``)."""
        if registry is None:
            raise RegistryUnavailable("no allowed registry for this SentimentModel")
        name, alias, version = ref.parts
        if alias:
            path, params = "/registered-models/alias", {"name": name, "alias": alias}
        else:
            path, params = "/model-versions/get", {"name": name, "version": version}
        r = await self._get(registry, path, params)
        code = _code(r)
        if r.status_code == 404 or (r.status_code == 400 and code == "INVALID_PARAMETER_VALUE"):
            raise ModelVersionNotFound(f"{ref.uri}: not found in registry {registry.name}"
                                       f"{_said(code)}")
        if r.status_code >= 400:
            log.info("registry %s answered HTTP %s to %s", registry.name, r.status_code, path)
            raise RegistryUnavailable(f"registry {registry.name} answered HTTP "
                                      f"{r.status_code}{_said(code)}")
        try:
            mv = r.json()["model_version"]
            found = str(mv["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(f"registry {registry.name} answered something that is "
                                      "not a model version") from exc
        if not found.isdigit():
            raise RegistryUnavailable(f"registry {registry.name} answered a version that is "
                                      "not a number")
        status = mv.get("status", "READY")
        if status != "READY":
            raise RegistryUnavailable(f"{ref.uri} -> version {found} is not READY yet")
        return found

    async def download_uri(self, ref: ModelRef, version: str, *,
                           registry: RegistryEntry | None) -> str:
        """Where the registry keeps version ``version``'s artifacts (an object store URI)."""
        if registry is None:
            raise RegistryUnavailable("no allowed registry for this SentimentModel")
        name, _, _ = ref.parts
        r = await self._get(registry, "/model-versions/get-download-uri",
                            {"name": name, "version": version})
        if r.status_code >= 400:
            raise RegistryUnavailable(f"registry {registry.name} answered HTTP "
                                      f"{r.status_code}{_said(_code(r))} for the artifact "
                                      f"location of version {version}")
        try:
            uri = r.json()["artifact_uri"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(f"registry {registry.name} answered no artifact "
                                      f"location for version {version}") from exc
        if not isinstance(uri, str) or len(uri) > 1024 or not _SAFE_URI.match(uri):
            raise RegistryUnavailable(f"registry {registry.name} answered an unusable artifact "
                                      f"location for version {version}")
        return uri


_SAFE_URI = re.compile(r"^(s3|gs|abfss|azure|file)://[A-Za-z0-9._~/:@+=-]+$")


def _code(r: httpx.Response) -> str | None:
    try:
        code = r.json().get("error_code")
    except (ValueError, AttributeError):
        return None
    return code if code in KNOWN_CODES else None


def _said(code: str | None) -> str:
    return f" ({code})" if code else ""
