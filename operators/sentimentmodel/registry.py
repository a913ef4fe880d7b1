"""Resolve ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` against an MLflow server
through its documented REST API (no MLflow import in the operator image):

* ``GET /api/2.0/mlflow/registered-models/alias?name=N&alias=A`` -> ``{"model_version": {...}}``
* ``GET /api/2.0/mlflow/model-versions/get?name=N&version=V``    -> ``{"model_version": {...}}``

Errors answer ``{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}`` with HTTP 404.

Exceptions say whether to retry: :class:`RegistryUnavailable` (network, timeouts, 5xx, a
version still registering) is temporary; :class:`ModelVersionNotFound` (unknown name, alias or
version) is the user's to fix, also reported and retried at the poll interval.
"""

from __future__ import annotations

import httpx

from operators.sentimentmodel.spec import ModelRef


class RegistryError(Exception):
    """Base of the registry errors."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully; try again later."""


class ModelVersionNotFound(RegistryError):
    """The registry answered: no such model, alias or version."""


class RegistryClient:
    """A small async client of MLflow's model-registry REST API."""

    def __init__(self, *, timeout_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                         headers=headers or {})

    async def aclose(self) -> None:
        await self._client.aclose()

    async def resolve(self, ref: ModelRef, *, url: str | None) -> str:
        """The version ``ref`` points at now (a string such as ``"4"``)."""
        if not url:
            raise RegistryUnavailable("no registry URL: set spec.model.registryUrl or the "
                                      "operator's SHOPSENSE_OPERATOR_REGISTRY_URL")
        name, alias, version = ref.parts
        base = url.rstrip("/") + "/api/2.0/mlflow"
        if alias:
            path, params = "/registered-models/alias", {"name": name, "alias": alias}
        else:
            path, params = "/model-versions/get", {"name": name, "version": version}
        try:
            r = await self._client.get(base + path, params=params)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"registry {url} unreachable: "
                                      f"{type(exc).__name__}: {exc}") from exc
        if r.status_code == 404 or (r.status_code == 400 and _code(r) == "INVALID_PARAMETER_VALUE"):
            raise ModelVersionNotFound(f"{ref.uri}: {_message(r)}")
        if r.status_code >= 400:
            raise RegistryUnavailable(f"registry {url} answered HTTP {r.status_code}: "
                                      f"{_message(r)}")
        try:
            mv = r.json()["model_version"]
            found = str(mv["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(f"registry {url} answered something that is not a "
                                      f"model version: {r.text[:200]!r}") from exc
        status = mv.get("status", "READY")
        if status != "READY":
            raise RegistryUnavailable(f"{ref.uri} -> version {found} is {status}, not READY")
        return found


def _code(r: httpx.Response) -> str | None:
    try:
        return r.json().get("error_code")
    except ValueError:
        return None


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{body.get('error_code', '')}: {body.get('message', '')}".strip(": ")
    except ValueError:
        return r.text[:200]
