"""Schemathesis against the live API (uvicorn on 127.0.0.1, the real torch backend and a real
retriever), with every check it has, not only "no server error": status codes and content
types the schema documents, response bodies and headers that match it, schema-valid input
accepted and invalid input rejected. Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from services.inference.api import LocalClassifierService, build_api
from services.retrieval.deployment import LocalSearchService
from services.retrieval.retriever import HybridRetriever
from services.retrieval.settings import RetrievalSettings
from shopsense.settings import ImageSettings, ServeSettings, Settings

from .live import LiveServer

pytestmark = pytest.mark.slow

EXAMPLES = 25  # per operation and phase


@pytest.fixture(scope="module")
def live_api(torch_backend, data_dir, tmp_path_factory):
    from shopsense.data.loaders import load_set
    from shopsense.embed import text_embedder

    reviews = load_set("blitzer-electronics", data_dir)[:20]
    retriever = HybridRetriever.open(
        RetrievalSettings(qdrant_url=None, opensearch_url=None, text_max_length=64),
        index_dir=tmp_path_factory.mktemp("st-index"), text_embedder=text_embedder(64, 16))
    retriever.index(reviews)
    s = Settings(serve=ServeSettings(max_text_chars=2000, max_batch_items=8),
                 images=ImageSettings(max_bytes=200_000, allow_hosts=[]))
    app = build_api(LocalClassifierService(torch_backend), s, LocalSearchService(retriever))
    with LiveServer(app) as srv:
        yield srv
    retriever.close()


@pytest.fixture(scope="module")
def api_schema(live_api):
    return schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.include(path_regex="^/(v1/|healthz|readyz)").parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, live_api):
    case.call_and_validate(base_url=live_api.url, timeout=60)
