"""Schemathesis against the live API (uvicorn on 127.0.0.1, the real torch backend and a real
retriever), with every check it has, not only "no server error": status codes and content
types the schema documents, response bodies and headers that match it, schema-valid input
accepted and invalid input rejected. Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.inference.api import LocalClassifierService, build_api
from services.retrieval.deployment import LocalSearchService
from services.retrieval.retriever import HybridRetriever
from services.retrieval.settings import RetrievalSettings
from shopsense.settings import ImageSettings, ServeSettings, Settings

from .live import LiveServer

pytestmark = pytest.mark.slow

EXAMPLES = 20  # per operation and phase
MAX_SECONDS = 240  # the whole run
ROOT = Path(__file__).resolve().parents[3]


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


def test_api_conforms_to_its_schema(live_api, tmp_path):
    """``schemathesis run --checks all`` (examples and fuzzing phases; bounded in examples
    and time; seeded) against the live server, in a subprocess; it must find nothing."""
    config = tmp_path / "schemathesis.toml"
    # 413 is a rejection too (bodies, batches and images over a cap)
    config.write_text("[checks.negative_data_rejection]\nexpected-statuses = "
                      "[400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n")
    argv = [sys.executable, "-m", "tests.services.inference.schemathesis_cli",
            "--config-file", str(config), "run", f"{live_api.url}/openapi.json",
            "--checks", "all", "--phases", "examples,fuzzing", "-n", str(EXAMPLES),
            "--max-time", str(MAX_SECONDS), "--seed", "16", "--request-timeout", "60",
            "--include-path-regex", "^/(v1/|healthz|readyz)", "--no-color"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=MAX_SECONDS + 240,
                       cwd=tmp_path,  # its crash cache (.schemathesis/) stays out of the tree
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "generated" in out and "Tested: 6" in out
