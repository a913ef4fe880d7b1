"""Settings from ``SHOPSENSE_*`` environment variables (nested groups use ``__``).

Example: ``SHOPSENSE_SERVE__PORT=9000`` or ``SHOPSENSE_IMAGES__ALLOW_HOSTS='["cdn.example.com"]'``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Inference engines of the text encoder (``shopsense.model.text_engines``).
TextEngineName = Literal["torch", "torch-int8", "onnx", "onnx-int8", "openvino"]
#: Classifier backends (``services.inference.backends.make_backend``).
BackendName = Literal["torch", "vllm"]
#: How the service runs: ``local`` = the API, its batcher and the model in one process on
#: uvicorn (one machine, no hops); ``ray`` = the Ray Serve graph (ingress -> classifier,
#: retriever), what the chart deploys.
ServeEngine = Literal["local", "ray"]
#: How similar reviews are looked up (the retrieval modes).
SimilarMode = Literal["hybrid", "dense", "sparse"]


def _default_data_dir() -> Path:
    """The shared review data, looked up beside the project (``../shared/data``), from the
    working directory up, then from this checkout (editable installs) up."""
    here = Path(__file__).resolve().parent
    for base in (Path.cwd(), *Path.cwd().parents, here, *here.parents):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


class ImageSettings(BaseModel):
    """Limits for images that arrive in requests (base64 or URL). Every cap is checked from the
    image header, before any pixel is decoded."""

    max_bytes: int = Field(8 * 1024 * 1024, description="largest encoded image accepted")
    max_pixels: int = Field(40_000_000, description="largest width*height decoded (bomb guard)")
    max_side: int = Field(12_000, ge=1, description="longest width or height accepted")
    max_aspect_ratio: float = Field(
        12.0, ge=1, description="longest side / shortest side accepted (a 400000x1 PNG is "
        "tiny encoded but huge once scaled to the model's input)")
    reduce_to: int | None = Field(
        224, ge=1, description="decode at the edge straight to this shorter side (the model's "
        "input size; JPEG draft mode, then one resize) so replicas get the small image; None "
        "keeps full size")
    large_pixels: int = Field(
        4_000_000, ge=1, description="images over this many pixels decode on their own "
        "one-thread pool, so big images queue behind each other, not in front of small ones")
    decode_threads: int = Field(2, ge=1, description="threads decoding small images per API "
                                "replica")
    fetch_timeout_s: float = Field(5.0, description="total time allowed for one URL fetch")
    max_redirects: int = Field(3, description="redirects followed for one URL fetch")
    fetch_threads: int = Field(
        16, ge=1, description="URL fetches at once per API replica, on their own pool")
    fetch_queue: int = Field(
        64, ge=0, description="URL fetches waiting for a thread per API replica; past it a "
        "request with URLs gets 503 Overloaded at once")
    fetch_per_request: int = Field(4, ge=1, description="URL fetches at once for one request")
    fetch_deadline_s: float = Field(
        10.0, gt=0, description="all of one request's URL fetches together")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="hosts, host:port or CIDRs allowed even if private/loopback (e.g. a test "
        "CDN on 127.0.0.1)",
    )


class AuthSettings(BaseModel):
    """API keys and per-key rate limits for the ``/v1/`` routes.

    ``keys_file`` names a file of lines ``NAME:SHA256_HEX_OF_KEY`` (``#`` comments and blank
    lines allowed); with it set, every ``/v1/`` route needs ``Authorization: Bearer KEY``.
    Unset (the embedded demo's default), the API is open."""

    keys_file: Path | None = Field(None, description="NAME:SHA256_HEX lines; unset = no auth")
    rate_per_s: float = Field(50.0, ge=0, description="requests per second per key (token "
                              "bucket refill; 0 = no limit)")
    burst: int = Field(100, ge=1, description="bucket size: requests a key may send at once")
    key_rates: dict[str, float] = Field(
        default_factory=dict, description="per-key overrides of rate_per_s, by key name")
    anonymous_rate_per_s: float = Field(
        0.0, ge=0, description="rate per client address when auth is off (0 = no limit)")
    reload_s: float = Field(5.0, ge=0, description="how often the keys file is checked for "
                            "changes (a mounted Secret is updated in place)")


class ServeSettings(BaseModel):
    """The HTTP service."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_uri: str | None = Field(
        None, description="model to serve; default models:/shopsense-sentiment@champion"
    )
    engine: ServeEngine = Field(
        "local", description="how `shopsense serve` runs the service on this machine: local "
        "(API, batcher, model and retriever in one process on uvicorn; no cross-process hops) "
        "| ray (the Ray Serve graph the chart deploys, one deployment per part)")
    backend: BackendName = Field("torch", description="classifier backend: torch | vllm")
    max_batch_items: int = Field(64, description="largest items list /v1/sentiment/batch accepts")
    max_text_chars: int = Field(20_000, description="longest review text accepted")
    max_body_bytes: int = Field(32 * 1024 * 1024, description="largest request body accepted "
                                "(read as it streams in; the first byte over the cap answers 413)")
    body_timeout_s: float = Field(30.0, gt=0, description="time allowed to receive a body")
    request_timeout_s: float = Field(
        60.0, gt=0, description="Ray Serve's proxy timeout (http_options.request_timeout_s); a "
        "backstop behind deadline_s")
    deadline_s: float = Field(30.0, gt=0, description="time budget of one /v1/ request in the "
                              "API (504 DeadlineExceeded past it)")
    similar_deadline_s: float = Field(
        2.0, gt=0, description="time budget of the similar-review lookup; past it the "
        "prediction is answered without similar reviews")
    max_in_flight: int = Field(
        128, ge=1, description="/v1/ requests one API replica works on at once; past it 503 "
        "Overloaded with Retry-After at once")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with 503 Overloaded")
    ingress_max_queued: int = Field(
        256, ge=-1, description="Serve max_queued_requests of the ingress deployment (-1 = "
        "unbounded)")
    classifier_max_ongoing: int = Field(256, ge=1, description="Serve max_ongoing_requests of "
                                        "each classifier replica")
    classifier_max_queued: int = Field(
        512, ge=-1, description="Serve max_queued_requests of the classifier (handle calls past "
        "it fail fast with 503)")
    retriever_max_queued: int = Field(
        128, ge=-1, description="Serve max_queued_requests of the retriever (similar-review "
        "lookups past it are skipped at once)")
    max_query_terms: int = Field(
        512, ge=1, description="words in a /v1/search query (more is 422); a similar-review "
        "lookup keeps the first ones")
    max_term_repeats: int = Field(
        32, ge=1, description="times one word may appear in a /v1/search query (more is 422); "
        "a similar-review lookup drops the extra copies")
    batch_max_size: int = Field(32, ge=1, description="largest batch the classifier's batcher "
                                "forms (services/inference/batching.py)")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="longest an item waits for company when requests arrive "
        "faster than this (a lone caller never waits)")
    batching: bool = Field(True, description="dynamic batching on (False sends items one by one)")
    classifier_replicas: int = 1
    ingress_replicas: int = 1
    threads: int = Field(0, description="torch threads per classifier replica; 0 = all cores")
    text_engine: TextEngineName = Field(
        "torch", description="how the classifier runs its text encoder: torch | torch-int8 | "
        "onnx | onnx-int8 | openvino (exported here from the loaded weights on first use and "
        "cached under engine_cache_dir; benchmarks/speed.py --engines compares them)")
    engine_cache_dir: Path | None = Field(
        None, description="where exported text encoders are kept; default "
        "<home>/cache/text-engines")
    retrieval: bool = Field(True, description="run the retriever deployment (/v1/search and "
                            "similar reviews in /v1/sentiment)")
    similar_k: int = Field(3, ge=0, le=50, description="similar reviews returned with each "
                           "prediction by default (0 = none; a request may ask for another k)")
    similar_mode: SimilarMode = Field("hybrid", description="how similar reviews are found: "
                                      "hybrid | dense | sparse")
    cache_fold_case: bool = Field(
        False, description="response cache: texts that differ only in letter case share an "
        "answer (right for an uncased text encoder such as the torch backend's MiniLM)")
    similar_max_concurrent: int = Field(
        8, ge=0, description="similar-review lookups one API replica runs at once; a request "
        "finding them all busy is answered without similar reviews at once, saying so "
        "(similar_skipped: load), instead of slowing every request (0 = never look up)")
    retriever_replicas: int = Field(1, ge=1, description="retriever replicas (keep 1 with the "
                                    "embedded Qdrant: its folder lock admits one process)")


class VLLMSettings(BaseModel):
    """The GPU path: LLaVA-v1.6 served by vLLM through ray.serve.llm."""

    model_id: str = "llava-hf/llava-v1.6-mistral-7b-hf"
    model_source: str | None = Field(None, description="local path or registry URI of weights")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint of a running app")
    api_key: str | None = None
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    accelerator_type: str | None = None
    timeout_s: float = 60.0
    structured_output: Literal["json_schema", "json_object"] = Field(
        "json_schema", description="how requests constrain the answer to the label schema: "
        "json_schema (vLLM, OpenAI) | json_object with a schema (llama.cpp's server)")
    message_content: Literal["parts", "text"] = Field(
        "parts", description="message contents as lists of parts (text, image_url; "
        "LLaVA-1.6-Mistral's chat template reads them so) | strings (text-only servers such as "
        "llama.cpp's with a GGUF chat template)")


class LLMSettings(BaseModel):
    """The embedded LLM server (used when no ``SHOPSENSE_LLM_BASE_URL`` is set)."""

    embedded_model: str = Field("qwen2.5-coder-1.5b-instruct-q4_k_m", description="offline "
                                "model: qwen2.5-coder-1.5b-instruct-q4_k_m | "
                                "qwen2.5-coder-0.5b-instruct-q4_k_m | smollm2-135m-instruct-q4_1")
    threads: int = Field(0, ge=0, description="CPU threads of the embedded server; 0 = all cores")
    cache_dir: Path | None = Field(None, description="where sliced models are joined (verified "
                                   "GGUF files); default $XDG_CACHE_HOME/shopsense/llm")
    context: int = Field(2048, ge=256, description="context window (tokens) of the embedded server")
    label_max_chars: int = Field(700, ge=100, description="longest review text the labeller "
                                 "shows the LLM (head and tail kept); prompt cost grows with it")


class Settings(BaseSettings):
    """Everything the platform reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPSENSE_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(Path(".shopsense"), description="local state: registry, stores, caches")
    data_dir: Path = Field(default_factory=_default_data_dir, description="shared labelled data")
    store_uri: str | None = Field(None, description="object store root: file://… or s3://bucket/prefix")
    s3_endpoint: str | None = Field(None, description="MinIO/S3 endpoint host:port for s3:// URIs")
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = False
    mlflow_tracking_uri: str | None = Field(None, description="default: sqlite under home")
    model_name: str = "shopsense-sentiment"
    pushgateway_url: str | None = Field(None, description="Prometheus Pushgateway (host:port) "
                                        "the validate step pushes its quality figures to")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible LLM endpoint (…/v1); "
                                     "unset: the embedded llama.cpp server is started when needed")
    llm_model: str | None = Field(None, description="model name sent to llm_base_url")
    llm_api_key: str | None = None
    llm_timeout_s: float = Field(120.0, description="timeout of one LLM request")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)

    def resolved_home(self) -> Path:
        home = self.home.expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home

    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.resolved_home() / 'mlflow.db'}"

    def artifact_root(self) -> str:
        return (self.resolved_home() / "mlartifacts").as_uri()

    def default_store_uri(self) -> str:
        return self.store_uri or (self.resolved_home() / "store").as_uri()

    def default_model_uri(self) -> str:
        return self.serve.model_uri or f"models:/{self.model_name}@champion"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
