import pytest
from pydantic import ValidationError

from services.retrieval.settings import RetrievalSettings


def test_env_standalone_urls_and_nested(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOPSENSE_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("SHOPSENSE_OPENSEARCH_URL", "https://os:9200")
    monkeypatch.setenv("SHOPSENSE_RETRIEVAL__FUSION", "weighted")
    monkeypatch.setenv("SHOPSENSE_RETRIEVAL__RRF_K", "10")
    monkeypatch.setenv("SHOPSENSE_RETRIEVAL__WEIGHT_SPARSE", "0.25")
    monkeypatch.setenv("SHOPSENSE_RETRIEVAL__DIR", str(tmp_path / "idx"))
    s = RetrievalSettings()
    assert (s.qdrant_url, s.opensearch_url) == ("http://qdrant:6333", "https://os:9200")
    assert s.fusion == "weighted" and s.rrf_k == 10
    assert s.weights() == {"dense": 1.0, "sparse": 0.25, "image": 1.0}
    assert s.index_dir() == tmp_path / "idx" and (tmp_path / "idx").is_dir()
    monkeypatch.delenv("SHOPSENSE_QDRANT_URL")
    monkeypatch.setenv("SHOPSENSE_RETRIEVAL__QDRANT_URL", "http://other:6333")
    assert RetrievalSettings().qdrant_url == "http://other:6333"


def test_defaults_are_embedded_under_home(monkeypatch, tmp_path):
    for var in ("SHOPSENSE_QDRANT_URL", "SHOPSENSE_OPENSEARCH_URL"):
        monkeypatch.delenv(var, raising=False)
    s = RetrievalSettings()
    assert s.qdrant_url is None and s.opensearch_url is None and s.fusion == "weighted"
    assert s.rrf_k == 60 and s.index_dir(tmp_path) == tmp_path / "retrieval"


@pytest.mark.parametrize("field, value", [
    ("fusion", "max"), ("rrf_k", 0), ("collection", "Bad Name"), ("qdrant_url", "qdrant:6333"),
    ("weight_dense", -1), ("text_max_length", 4096)])
def test_bad_values_are_rejected(field, value):
    with pytest.raises(ValidationError):
        RetrievalSettings(**{field: value})
