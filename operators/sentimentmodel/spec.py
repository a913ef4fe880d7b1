"""The SentimentModel resource: its CRD (``crd.yaml`` beside this file, the one source of truth),
the API server's structural defaulting applied in Python, and typed views of spec and status.

The operator never trusts that a field is present: :func:`defaulted_spec` applies the CRD's own
``default:`` values the way the API server does, so an object that reached the operator
without defaulting (an old object, a test server that does not validate) reads the same.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "shopsense.io"
VERSION = "v1alpha1"
PLURAL = "sentimentmodels"
KIND = "SentimentModel"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_PATH = Path(__file__).with_name("crd.yaml")

# The core's rule (shopsense.registry.MODEL_URI_PATTERN), copied: the operator does not import
# the core package; tests/contracts pins the two (and the CRD's pattern) to the same URIs.
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$")


@lru_cache(maxsize=1)
def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def openapi_schema(version: str = VERSION) -> dict[str, Any]:
    for v in load_crd()["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(version)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting (what the API server does on create/update and on read):
    missing properties with a ``default`` get it, then defaulting recurses into objects and
    array items. Returns a new value; the input is not changed."""
    value = copy.deepcopy(value)
    return _default(schema, value)


def _default(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(sub, value[key])
    elif isinstance(value, list) and "items" in schema:
        value = [_default(schema["items"], item) for item in value]
    return value


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              frozen=True)


class ModelRef(_Model):
    uri: str
    registry_url: str | None = None

    @property
    def parts(self) -> tuple[str, str | None, str | None]:
        """(name, alias, version): exactly one of alias and version is set."""
        m = _MODELS_URI.fullmatch(self.uri)
        if not m:
            raise ValueError(f"{self.uri!r} is not models:/<name>@<alias> or models:/<name>/<n>")
        return m["name"], m["alias"], m["version"]


class Autoscaling(_Model):
    enabled: bool
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float


class PodResources(_Model):
    cpu: str | int
    memory: str | int


class Resources(_Model):
    head: PodResources
    worker: PodResources
    gpus: int


class Workers(_Model):
    replicas: int
    min_replicas: int
    max_replicas: int


class Toleration(_Model):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class Lora(_Model):
    enabled: bool
    loading_path: str | None = None
    max_adapters_per_replica: int
    max_lora_rank: int


class VLLM(_Model):
    model_id: str
    model_source: str | None = None
    max_model_len: int
    gpu_memory_utilization: float
    tensor_parallel_size: int
    accelerator_type: str | None = None
    lora: Lora


class Retrieval(_Model):
    enabled: bool
    qdrant_url: str | None = None
    opensearch_url: str | None = None
    similar_k: int
    similar_mode: str


class Ingress(_Model):
    enabled: bool
    api: Literal["Gateway", "Ingress"]
    gateway_name: str | None = None
    gateway_namespace: str | None = None
    section_name: str | None = None
    class_name: str
    host: str | None = None
    path: str
    tls_secret_name: str | None = None


class CanaryStep(_Model):
    weight: int
    pause_seconds: int


class Incremental(_Model):
    gateway_class_name: str | None = None
    step_size_percent: int
    interval_seconds: int
    max_surge_percent: int


class Auth(_Model):
    api_keys_secret_name: str | None = None


class Rollout(_Model):
    strategy: Literal["Canary", "KubeRay", "KubeRayIncremental"]
    incremental: Incremental
    canary_steps: list[CanaryStep]
    ready_timeout_seconds: int
    max_error_rate: float
    error_rate_window: str
    min_requests: int
    skip_error_rate_gate: bool
    analysis_seconds: int
    auto_promote: bool
    poll_interval_seconds: int
    prometheus_url: str | None = None


class SentimentModelSpec(_Model):
    """The spec after defaulting; field names mirror the CRD (camelCase in YAML)."""

    model: ModelRef
    backend: Literal["torch", "vllm"]
    image: str | None = None
    image_pull_policy: str
    replicas: int
    autoscaling: Autoscaling
    resources: Resources
    workers: Workers
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    env_from_secrets: list[str] = Field(default_factory=list)
    vllm: VLLM
    retrieval: Retrieval
    ingress: Ingress
    auth: Auth
    rollout: Rollout


def defaulted_spec(spec: dict[str, Any] | None) -> dict[str, Any]:
    schema = openapi_schema()["properties"]["spec"]
    return apply_defaults(schema, dict(spec or {}))


def parse_spec(spec: dict[str, Any] | None) -> SentimentModelSpec:
    """The typed spec, CRD defaults applied."""
    return SentimentModelSpec.model_validate(defaulted_spec(spec))
