"""Operator-wide settings from ``SHOPSENSE_OPERATOR_*`` environment variables (the chart sets
them); a SentimentModel's own spec overrides the per-model defaults here."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, Field
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


class RegistryEntry(BaseModel):
    """One MLflow registry the operator may talk to, with the credentials bound to it."""

    name: str = Field(description="a short name, used in status messages")
    url: str = Field(description="http(s) URL of the MLflow server")
    credentials_dir: str | None = Field(
        None, description="folder of this registry's credentials (a mounted Secret): files "
        "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; "
        "sent to this URL only")

    def matches(self, url: str) -> bool:
        return normalise_url(url) == normalise_url(self.url)


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/").lower()


class OperatorSettings(BaseSettings):
    """Everything the operator reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="SHOPSENSE_OPERATOR_",
                                      env_nested_delimiter="__", extra="ignore")

    registry_url: str | None = Field(
        None, description="the one allowed MLflow server when ``registries`` is empty (its "
        "credentials from MLFLOW_TRACKING_* in the operator's environment)")
    registries: list[RegistryEntry] = Field(
        default_factory=list, description="the allow-list of MLflow servers: a SentimentModel's "
        "spec.model.registryUrl must be one of these URLs (empty: the first entry); each "
        "entry's credentials go to its own URL only")
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
    tick_seconds: float = Field(
        30.0, description="the clock of each SentimentModel: registry polls (further spaced "
        "by pollIntervalSeconds), canary pauses and timeouts; changes of its RayServices are "
        "watched and acted on at once")
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
    # -- traffic -------------------------------------------------------------------------
    gateway_name: str | None = Field(
        None, description="Gateway (Gateway API) the HTTPRoutes attach to when a "
        "SentimentModel names none")
    gateway_namespace: str | None = Field(None, description="its namespace (default: the "
                                          "SentimentModel's)")
    gateway_section: str | None = Field(None, description="its listener (sectionName), if any")
    gateway_class_name: str | None = Field(
        None, description="GatewayClass for KubeRay's incremental upgrade (strategy "
        "KubeRayIncremental) when a SentimentModel names none")
    kuberay_incremental_upgrade: bool = Field(
        False, description="the installed KubeRay offers upgradeStrategy "
        "NewClusterWithIncrementalUpgrade (KubeRay >= 1.5.1 with the "
        "RayServiceIncrementalUpgrade feature gate on)")
    # -- policy --------------------------------------------------------------------------
    allowed_images: list[str] = Field(
        default_factory=lambda: ["ghcr.io/shopsense/*"],
        description="patterns (fnmatch) of images a SentimentModel may name in spec.image")
    allowed_secrets: list[str] = Field(
        default_factory=list, description="Secrets a SentimentModel may mount (spec."
        "envFromSecrets, spec.auth.apiKeysSecretName), besides the operator's own "
        "env_from_secrets and api_keys_secret")
    api_keys_secret: str | None = Field(
        None, description="Secret with the API keys file (key ``keys``: lines "
        "NAME:SHA256_HEX_OF_KEY) when a SentimentModel names none; empty: no API keys")
    # -- network policy: who may reach the Ray pods ----------------------------------------
    network_policy: bool = Field(True, description="render a NetworkPolicy per SentimentModel")
    ingress_namespaces: list[str] = Field(
        default_factory=list, description="namespaces of the Gateway / ingress controller "
        "pods, the only ones that may reach the Serve port (default: the Gateway's)")
    kuberay_namespace: str = Field("kuberay", description="namespace of the KubeRay operator, "
                                   "the only one that may reach Ray's dashboard port")
    prometheus_namespaces: list[str] = Field(
        default_factory=lambda: ["monitoring"],
        description="namespaces whose pods may scrape Ray's metrics port")

    def registry_entries(self) -> list[RegistryEntry]:
        if self.registries:
            return list(self.registries)
        if self.registry_url:
            return [RegistryEntry(name="default", url=self.registry_url)]
        return []

    def image_allowed(self, image: str) -> bool:
        return image in (self.image, self.gpu_image) or any(
            fnmatchcase(image, pattern) for pattern in self.allowed_images)

    def secret_allowed(self, name: str) -> bool:
        return name in {*self.allowed_secrets, *self.env_from_secrets,
                        *([self.api_keys_secret] if self.api_keys_secret else [])}
