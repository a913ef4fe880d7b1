"""The vLLM backend's HTTP client against a real OpenAI-compatible server: llama.cpp's, with
SmolLM2 (no GPU and no vLLM here). The label schema goes as ``json_object`` + ``schema``, the
form llama.cpp's server turns into a grammar (vLLM accepts it too)."""

import pytest

from shopsense import LABELS
from shopsense.settings import VLLMSettings

from services.inference.backends.base import ClassifierInput
from services.inference.backends.vllm import VLLMBackend, response_format


def test_json_schema_is_the_default_for_vllm():
    assert VLLMSettings().structured_output == "json_schema"
    assert response_format("json_schema")["json_schema"]["strict"] is True
    assert response_format("json_object")["schema"]["required"] == ["label"]


@pytest.mark.slow
def test_backend_answers_through_the_real_server(smol_llm):
    settings = VLLMSettings(base_url=smol_llm.base_url.removesuffix("/v1"),
                            model_id=smol_llm.model, structured_output="json_object",
                            message_content="text", timeout_s=120)
    with VLLMBackend(settings, max_concurrency=2, model_version="7") as backend:
        out = backend.predict_batch([ClassifierInput(text="Broke on the first day. Avoid."),
                                     ClassifierInput(text="Lovely, works perfectly."),
                                     ClassifierInput(text="It is a phone.")])
    assert len(out) == 3
    for o in out:
        assert o.label in LABELS and list(o.modalities) == ["text"]
        assert set(o.scores) == set(LABELS) and sum(o.scores.values()) == pytest.approx(1, 1e-3)
    # scores come from the label tokens' logprobs (a confident answer can round to 1.0)
    assert any(max(o.scores.values()) < 0.9999 for o in out)
    assert backend.model.version == "7"


def test_a_schema_the_server_does_not_know_is_a_clear_error(smol_llm):
    from shopsense.errors import UpstreamError

    settings = VLLMSettings(base_url=smol_llm.base_url.removesuffix("/v1"),
                            model_id=smol_llm.model, message_content="text",
                            timeout_s=60)  # json_schema: a format that server does not know
    with VLLMBackend(settings) as backend, pytest.raises(UpstreamError, match="HTTP 4|HTTP 5"):
        backend.predict_batch([ClassifierInput(text="fine")])
