"""The platform's LLM client: an OpenAI-compatible chat endpoint (vLLM serving Llama-3.1 in a
cluster, any compatible server elsewhere), used by the data agents (selector proposals and
source priors when scraping, review text when synthesizing)."""

from __future__ import annotations

import os

__all__ = ["chat_model_from_env"]


def chat_model_from_env(env: dict[str, str] | None = None):
    """``ChatOpenAI`` for ``SHOPSENSE_LLM_BASE_URL`` (``SHOPSENSE_LLM_MODEL``,
    ``SHOPSENSE_LLM_API_KEY``, ``SHOPSENSE_LLM_TIMEOUT_S``), or ``None`` when no URL is set."""
    env = dict(os.environ if env is None else env)
    base_url = env.get("SHOPSENSE_LLM_BASE_URL")
    if not base_url:
        return None
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        api_key=env.get("SHOPSENSE_LLM_API_KEY") or "none",
        model=env.get("SHOPSENSE_LLM_MODEL") or "meta-llama/Llama-3.1-8B-Instruct",
        temperature=0.0,
        timeout=float(env.get("SHOPSENSE_LLM_TIMEOUT_S") or 60),
        max_retries=1,
    )
