"""Operator-wide settings from ``SHOPSENSE_OPERATOR_*`` environment variables (the chart sets
them); a SentimentModel's own spec overrides the per-model defaults here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: PromQL of the error-rate gate: the track's ``/v1/`` requests in the window, and those of them
#: answered 5xx (client errors never count: bad input must not roll a good canary back).
#: Placeholders: {namespace}, {name} (the SentimentModel), {track} (stable | canary),
#: {version}, {window}. The series are the API's counters exported by Ray's per-node metrics
#: agent (``ray_`` prefix; each replica is reported once, by the node it runs on); the
#: shopsense_io_* labels come from the chart's PodMonitor, which copies them from the pods.
_SELECTOR = ('namespace="{namespace}",shopsense_io_sentimentmodel="{name}",'
             'shopsense_io_track="{track}",route=~"/v1/.*"')
DEFAULT_REQUESTS_QUERY = (
    "sum(increase(ray_shopsense_requests_total{{" + _SELECTOR + "}}[{window}]))")
DEFAULT_ERRORS_QUERY = (
    "sum(increase(ray_shopsense_requests_total{{" + _SELECTOR + ',code=~"5.."}}[{window}]))')


class OperatorSettings(BaseSettings):
    """Everything the operator reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="SHOPSENSE_OPERATOR_",
                                      env_nested_delimiter="__", extra="ignore")

    registry_url: str | None = Field(
        None, description="default MLflow server when a SentimentModel names none")
    image: str = Field("ghcr.io/shopsense/inference-cpu:0.1.0",
                       description="default Ray image for backend torch")
    gpu_image: str = Field("ghcr.io/shopsense/inference-gpu:0.1.0",
                           description="default Ray image for backend vllm or GPUs")
    ray_version: str = Field("2.60.0", description="rayVersion of the RayClusters (the images')")
    prometheus_url: str | None = Field(
        None, description="default Prometheus for the error-rate gate (none: gate skipped)")
    requests_query: str = Field(DEFAULT_REQUESTS_QUERY,
                                description="PromQL template: requests of a track in a window")
    errors_query: str = Field(DEFAULT_ERRORS_QUERY,
                              description="PromQL template: 5xx answers of a track in a window")
    tick_seconds: float = Field(10.0, description="how often each SentimentModel is looked at "
                                "(registry polls are further spaced by pollIntervalSeconds)")
    registry_timeout_s: float = Field(5.0, description="timeout of one registry request")
    max_backoff_s: float = Field(600.0, description="longest wait between failed registry polls")
    metrics_port: int = Field(9090, description="port of the operator's /metrics (0: off)")
    peering: str = Field("shopsense", description="kopf peering name (one active operator)")
    standalone: bool = Field(False, description="run without peering (development only)")
    namespaces: list[str] = Field(default_factory=list,
                                  description="namespaces to watch; empty: the whole cluster")
    pod_env: dict[str, str] = Field(
        default_factory=dict, description="extra environment of every Ray pod (non-secret "
        "settings such as SHOPSENSE_S3_ENDPOINT)")
    env_from_secrets: list[str] = Field(
        default_factory=list, description="Secrets mounted as env into every Ray pod (names)")
    service_port: int = Field(8000, description="port of the Serve HTTP proxy")
