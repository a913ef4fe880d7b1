"""The LangChain chat model the data agents speak (selector proposals and source priors when
scraping, review text when synthesizing): ``ChatOpenAI`` against any OpenAI-compatible
endpoint: vLLM in a cluster, the embedded llama.cpp server on one machine."""

from __future__ import annotations

import os

__all__ = ["chat_model_for", "chat_model_from_env"]


def chat_model_for(endpoint, *, timeout_s: float = 120.0, temperature: float = 0.0):
    """``ChatOpenAI`` for an :class:`~shopsense.llm.server.LLMEndpoint`."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "none",
                      model=endpoint.model, temperature=temperature, timeout=timeout_s,
                      max_retries=1)


def chat_model_from_env(env: dict[str, str] | None = None):
    """``ChatOpenAI`` for ``SHOPSENSE_LLM_BASE_URL`` (``SHOPSENSE_LLM_MODEL``,
    ``SHOPSENSE_LLM_API_KEY``, ``SHOPSENSE_LLM_TIMEOUT_S``), or ``None`` when no URL is set."""
    env = dict(os.environ if env is None else env)
    base_url = env.get("SHOPSENSE_LLM_BASE_URL")
    if not base_url:
        return None
    from shopsense.llm.server import LLMEndpoint

    model = env.get("SHOPSENSE_LLM_MODEL") or "meta-llama/Llama-3.1-8B-Instruct"
    return chat_model_for(LLMEndpoint(base_url=base_url, model=model, identity=model,
                                      api_key=env.get("SHOPSENSE_LLM_API_KEY")),
                          timeout_s=float(env.get("SHOPSENSE_LLM_TIMEOUT_S") or 60))
