"""A small client for OpenAI-compatible chat endpoints (vLLM, llama.cpp's server): plain chat,
and the first answer token's log-probabilities, which the labeller reads instead of parsing
free text."""

from __future__ import annotations

import math
from typing import Any

import httpx

from shopsense.errors import UpstreamError
from shopsense.llm.server import LLMEndpoint
from shopsense.llm.weights import LLMUnavailable

__all__ = ["LLMClient"]


class LLMClient:
    def __init__(self, endpoint: LLMEndpoint, *, timeout_s: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.endpoint = endpoint
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        self._http = httpx.Client(base_url=endpoint.base_url.rstrip("/") + "/",
                                  headers=headers, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = self._http.post(path, json={"model": self.endpoint.model, **body})
        except httpx.HTTPError as exc:
            raise LLMUnavailable(f"LLM at {self.endpoint.base_url} unreachable: "
                                 f"{type(exc).__name__}") from exc
        if r.status_code >= 500:
            raise LLMUnavailable(f"LLM at {self.endpoint.base_url} answered {r.status_code}")
        if r.status_code >= 400:
            raise UpstreamError(f"LLM at {self.endpoint.base_url} refused the request "
                                f"({r.status_code}): {r.text[:200]}")
        try:
            return r.json()
        except ValueError as exc:
            raise UpstreamError("LLM answered something that is not JSON") from exc

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = None, stop: list[str] | None = None,
             **extra: Any) -> str:
        """The assistant's reply text."""
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature, **extra}
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = stop
        out = self._post("chat/completions", body)
        try:
            return str(out["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamError("LLM reply has no choices[0].message.content") from exc

    def first_token_logprobs(self, messages: list[dict[str, str]], *, top: int = 20
                             ) -> dict[str, float]:
        """``{token text: log-probability}`` of the most likely first tokens of the reply."""
        out = self._post("chat/completions", {"messages": messages, "max_tokens": 1,
                                              "temperature": 0.0, "logprobs": True,
                                              "top_logprobs": top})
        try:
            first = out["choices"][0]["logprobs"]["content"][0]
            pairs = [(t["token"], float(t["logprob"])) for t in first["top_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UpstreamError("LLM reply carries no top_logprobs (the server must return "
                                "logprobs for chat completions)") from exc
        best: dict[str, float] = {}
        for token, lp in pairs:
            if math.isfinite(lp):
                best[token] = max(lp, best.get(token, -math.inf))
        return best
