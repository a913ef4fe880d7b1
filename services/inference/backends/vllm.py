"""The GPU path: LLaVA-v1.6 (Mistral-7B) served by vLLM through ``ray.serve.llm``, used as a
three-way classifier.

Two halves:

* **Deploying** the model: :func:`build_llm_config` makes the ``ray.serve.llm.LLMConfig`` and
  :func:`build_llm_app` the OpenAI-compatible Serve application (``build_openai_app``). These
  need ``ray[llm]`` (which brings vLLM) on a GPU node; the config alone validates without vLLM.
* **Calling** it: :class:`VLLMBackend` implements ``ClassifierBackend`` by sending one
  ``/v1/chat/completions`` request per review to a running app (``settings.base_url``). The
  answer is constrained to the JSON schema ``{"label": "negative"|"neutral"|"positive"}``
  (OpenAI ``response_format`` of type ``json_schema``, which vLLM turns into structured-output
  decoding), and per-label scores come from the log-probabilities of the label token(s).

Three modules: ``vllm_deploy`` (the deployment config and app), ``vllm_protocol`` (the prompt,
the request body and the reading of the answer: pure functions that hold all the format
knowledge and are tested without a server) and this one (the HTTP client), which re-exports
the other two.
"""


from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
import httpx

from shopsense.schemas import ModelRef
from shopsense.settings import Settings, VLLMSettings

from services.inference.backends.base import ClassifierInput, ClassifierOutput
from services.inference.backends.vllm_deploy import (
    LIMIT_MM_PER_PROMPT,
    build_llm_app,
    build_llm_config,
    llm_config_dict,
)
from services.inference.backends.vllm_protocol import (
    IMAGE_MAX_SIDE,
    LABEL_SCHEMA,
    MAX_REVIEW_CHARS,
    SYSTEM_PROMPT,
    BackendResponseError,
    BackendUnavailable,
    _error_message,
    build_messages,
    build_request,
    chat_completions_url,
    encode_image,
    parse_response,
    response_format,
)

__all__ = [
    "BackendResponseError",
    "BackendUnavailable",
    "IMAGE_MAX_SIDE",
    "LIMIT_MM_PER_PROMPT",
    "LABEL_SCHEMA",
    "MAX_REVIEW_CHARS",
    "SYSTEM_PROMPT",
    "VLLMBackend",
    "build_llm_app",
    "build_llm_config",
    "build_messages",
    "build_request",
    "chat_completions_url",
    "encode_image",
    "llm_config_dict",
    "parse_response",
    "response_format",
]


# --------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------


class VLLMBackend:
    """``ClassifierBackend`` over a running OpenAI-compatible vLLM app (``build_llm_app``).

    One chat completion per item, at most ``max_concurrency`` in flight for this backend (a
    shared thread pool, so concurrent batches share the bound), each with
    ``settings.timeout_s``. Outputs keep the input order. ``transport`` replaces httpx's
    network transport (tests).
    """

    name = "vllm"

    def __init__(
        self,
        settings: VLLMSettings | Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        max_concurrency: int = 8,
        model_version: str | None = None,
    ) -> None:
        if isinstance(settings, Settings):
            settings = settings.vllm
        if not settings.base_url:
            raise ValueError(
                "the vllm backend needs the endpoint of a running app: "
                "set SHOPSENSE_VLLM__BASE_URL"
            )
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.settings = settings
        self.url = chat_completions_url(settings.base_url)
        self._model = ModelRef(
            name=settings.model_id, version=model_version, uri=settings.model_source
        )
        headers = {"Accept": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            transport=transport,
        )
        self._max_concurrency = max_concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> ModelRef:
        return self._model

    #: LLaVA's vision tower is not the retrieval index's image encoder.
    image_encoder_id = None

    @property
    def identity(self) -> str:
        m = self._model
        return f"vllm/{m.name}/{m.uri or ''}/{m.version or ''}"

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._max_concurrency, thread_name_prefix="vllm-backend"
                )
            return self._pool

    def predict_batch(self, items: list[ClassifierInput]) -> list[ClassifierOutput]:
        if not items:
            return []
        if len(items) == 1:
            return [self._predict_one(items[0])]
        return list(self._executor().map(self._predict_one, items))

    def _predict_one(self, item: ClassifierInput) -> ClassifierOutput:
        body = build_request(build_messages(item.text, item.image, as_parts=(
            self.settings.message_content == "parts")), self.settings)
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(
                f"model server did not answer within {self.settings.timeout_s}s"
            ) from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"model server unreachable: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            detail = _error_message(data) or resp.text[:300]
            unavailable = resp.status_code in (502, 503, 504)
            cls = BackendUnavailable if unavailable else BackendResponseError
            raise cls(f"model server answered HTTP {resp.status_code}: {detail}")
        if data is None:
            raise BackendResponseError(f"model server answered non-JSON: {resp.text[:200]!r}")
        return replace(parse_response(data), modalities=item.modalities())

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
