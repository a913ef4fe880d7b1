"""Retrieval settings, from ``SHOPSENSE_RETRIEVAL__*`` environment variables.

The two store URLs also have short standalone names, as the design's "each store chosen by its
URL" table suggests::

    SHOPSENSE_QDRANT_URL=http://qdrant:6333           dense index on a Qdrant server
    SHOPSENSE_OPENSEARCH_URL=https://os:9200          sparse index on OpenSearch
    SHOPSENSE_RETRIEVAL__FUSION=rrf                   weighted (default) | rrf
    SHOPSENSE_RETRIEVAL__RRF_K=60
    SHOPSENSE_RETRIEVAL__RERANK=true                  rerank the fused top RERANK_DEPTH (default off)
    SHOPSENSE_RETRIEVAL__RERANK_DEPTH=30
    SHOPSENSE_RETRIEVAL__RERANKER_DIR=/models/rr      default <SHOPSENSE_HOME>/retrieval/reranker

Unset URLs mean the embedded default: qdrant-client local mode and a tantivy index, both on disk
under ``<SHOPSENSE_HOME>/retrieval/`` (or ``SHOPSENSE_RETRIEVAL__DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FusionMethod = Literal["rrf", "weighted"]


class RetrievalSettings(BaseSettings):
    """Where the indexes live and how their rankings are fused."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPSENSE_RETRIEVAL__", env_nested_delimiter="__", extra="ignore",
        populate_by_name=True,
    )

    qdrant_url: str | None = Field(
        None,
        validation_alias=AliasChoices("SHOPSENSE_QDRANT_URL", "SHOPSENSE_RETRIEVAL__QDRANT_URL"),
        description="Qdrant server; unset = qdrant-client local mode on disk",
    )
    qdrant_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "SHOPSENSE_QDRANT_API_KEY", "SHOPSENSE_RETRIEVAL__QDRANT_API_KEY"
        ),
    )
    opensearch_url: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "SHOPSENSE_OPENSEARCH_URL", "SHOPSENSE_RETRIEVAL__OPENSEARCH_URL"
        ),
        description="OpenSearch node (http[s]://user:pass@host:9200); unset = tantivy on disk",
    )
    opensearch_verify_certs: bool = True
    opensearch_max_retries: int = Field(2, ge=0)
    timeout_s: float = Field(30.0, gt=0, description="per request to Qdrant / OpenSearch")

    dir: Path | None = Field(None, description="embedded indexes; default <home>/retrieval")
    collection: str = Field(
        "shopsense-reviews",
        description="Qdrant collection and OpenSearch index name (also the local subfolder)",
    )

    fusion: FusionMethod = Field(
        "weighted",
        description="how hybrid lists are fused: weighted (min-max normalised scores, the "
        "default: better than rrf on the dvd dev review set and on the held-out review set, "
        "level on Cranfield; benchmarks/retrieval_quality.py) | rrf",
    )
    rrf_k: int = Field(60, ge=1, description="RRF rank constant: score = sum 1/(rrf_k + rank)")
    weight_dense: float = Field(1.0, ge=0, description="text-vector list weight in fusion")
    weight_sparse: float = Field(1.0, ge=0, description="BM25 list weight in fusion")
    weight_image: float = Field(1.0, ge=0, description="image-vector list weight in fusion")
    candidates: int = Field(100, ge=1, le=10_000, description="hits taken from each retriever")

    rerank: bool = Field(False, description="re-score the fused top rerank_depth with the "
                         "trained cross-encoder (shopsense retrieval train-reranker)")
    rerank_depth: int = Field(30, ge=1, le=200, description="fused hits the reranker re-scores")
    rerank_max_length: int = Field(256, ge=16, le=512, description="tokens per query+review pair")
    rerank_batch_size: int = Field(16, ge=1, description="pairs per cross-encoder forward pass")
    reranker_dir: Path | None = Field(
        None, description="trained reranker; default <SHOPSENSE_HOME>/retrieval/reranker")

    batch_size: int = Field(512, ge=1, le=10_000, description="reviews per indexing batch "
                            "(each batch is one tantivy commit: larger batches index faster)")
    embed_batch_size: int = Field(32, ge=1, description="texts per MiniLM forward pass")
    text_max_length: int = Field(256, ge=8, le=512, description="MiniLM tokens per text")

    @field_validator("collection")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # valid as a Qdrant collection, an OpenSearch index and a directory name
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,99}", v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 100)")
        return v

    @field_validator("qdrant_url", "opensearch_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v

    def weights(self) -> dict[str, float]:
        return {"dense": self.weight_dense, "sparse": self.weight_sparse,
                "image": self.weight_image}

    def resolved_reranker_dir(self, home: Path | None = None) -> Path:
        """Where the trained reranker lives (not created)."""
        if self.reranker_dir is not None:
            return self.reranker_dir.expanduser().resolve()
        if home is None:
            from shopsense.settings import get_settings

            home = get_settings().resolved_home()
        return Path(home) / "retrieval" / "reranker"

    def index_dir(self, home: Path | None = None) -> Path:
        """The folder of the embedded indexes (created)."""
        if self.dir is not None:
            base = self.dir.expanduser().resolve()
        else:
            if home is None:
                from shopsense.settings import get_settings

                home = get_settings().resolved_home()
            base = Path(home) / "retrieval"
        base.mkdir(parents=True, exist_ok=True)
        return base
