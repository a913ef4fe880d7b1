"""The sparse (BM25) backends of :class:`~services.retrieval.indexes.SparseIndex` (opened by
``indexes.open_sparse``):

* :class:`TantivySparseIndex` (default): a tantivy index on disk, ``<index dir>/tantivy/<name>``.
* :class:`OpenSearchSparseIndex`: OpenSearch through opensearch-py when
  ``SHOPSENSE_OPENSEARCH_URL`` is set.

What both index, per review: ``content`` (title and text) for BM25; ``review_id``, and the filter
fields ``category``, ``label``, ``product`` as exact, case-sensitive keywords; ``rating`` as a
number; the display fields (text, title, product name, source) stored, not indexed.

Query semantics (the same in both): documents and queries are read by one English analysis,
defined in ``analysis.py`` (negated contractions spelled out, letters-and-digits tokens,
lowercase, Lucene's English stop words *without* "no"/"not", Snowball English stemmer), built as
a tantivy analyzer and as an OpenSearch custom analyzer; a document matches if it contains at
least one query term and passes every filter; it is scored by BM25 (k1=1.2, b=0.75) on
``content`` only (filters do not score: OpenSearch ``bool.filter`` clauses, tantivy
constant-score-0 ``Must`` clauses). Filters: exact term on category/label/product, inclusive
range on rating; a document without the field does not match a filter on it. Both compute BM25
with Lucene's formula and its one-byte document-length encoding; tantivy's scores are Lucene's
times (k1 + 1), the same ranking.

Writes: ``upsert(docs)`` replaces documents by review id, ``delete(ids)`` removes them; both
return ``{id: reason}`` for items the backend rejected (empty when all succeeded) and raise on
a failure of the whole request. tantivy is transactional (one commit per call: all or
nothing); OpenSearch is not (a bulk request can half-apply), hence ``transactional``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.retrieval.analysis import (
    ANALYZER_NAME,
    bm25_text,
    opensearch_analysis,
    tantivy_analyzer,
)
from services.retrieval.errors import IndexLocked, IndexMismatch, StoreUnavailable
from services.retrieval.schema import BackendHit, Doc, Filters
from services.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)

__all__ = [
    "OPENSEARCH_BODY",
    "OpenSearchSparseIndex",
    "TantivySparseIndex",
    "opensearch_query",
    "opensearch_source",
]


def _dedupe(docs: Sequence[Doc]) -> list[Doc]:
    """Last version of each id wins (upsert order), first-seen order kept."""
    last = {d.id: d for d in docs}
    seen: set[str] = set()
    out = []
    for d in docs:
        if d.id not in seen:
            seen.add(d.id)
            out.append(last[d.id])
    return out


# ------------------------------------------------------------------------------------ tantivy


class TantivySparseIndex:
    """BM25 over a tantivy index on disk (the ``analysis.py`` analyzer on ``content``)."""

    transactional = True
    HEAP_BYTES = 32_000_000

    def __init__(self, path: Path) -> None:
        import tantivy as t

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.where = f"tantivy {self.path}"
        sb = t.SchemaBuilder()
        sb.add_text_field("review_id", stored=True, tokenizer_name="raw", index_option="basic")
        sb.add_text_field("content", stored=False, tokenizer_name=ANALYZER_NAME)
        for name in ("category", "label", "product"):
            sb.add_text_field(name, stored=False, tokenizer_name="raw", index_option="basic")
        sb.add_float_field("rating", stored=False, indexed=True, fast=True)
        sb.add_bytes_field("payload", stored=True, indexed=False)
        self.schema = sb.build()
        try:
            self.index = t.Index(self.schema, path=str(self.path), reuse=True)
        except ValueError as exc:
            raise IndexMismatch(f"{self.where}: {exc} (an index of an earlier layout: remove "
                                "the folder and index again)") from exc
        self._analyzer = tantivy_analyzer()
        self.index.register_tokenizer(ANALYZER_NAME, self._analyzer)
        # the searcher is reloaded on the first read after a commit, not after every commit:
        # a bulk index commits once per batch and reads nothing in between, and a reload costs
        # about as much as a small commit's flush (benchmarks/retrieval_speed.py)
        self._commits = 0  # commits made through this object
        self._seen = -1  # the value of _commits at the last reload

    # -- writes --------------------------------------------------------------------------
    def _writer(self):
        try:
            return self.index.writer(heap_size=self.HEAP_BYTES, num_threads=1)
        except ValueError as exc:
            raise IndexLocked(f"{self.where}: another process is writing to it ({exc})") from exc

    def _document(self, doc: Doc):
        import tantivy as t

        d = t.Document()
        d.add_text("review_id", doc.id)
        d.add_text("content", bm25_text(doc.content))
        for name in ("category", "label", "product"):
            value = getattr(doc, name)
            if value is not None:
                d.add_text(name, value)
        if doc.rating is not None:
            d.add_float("rating", float(doc.rating))
        d.add_bytes("payload", json.dumps(doc.payload(), ensure_ascii=False).encode())
        return d

    def _commit(self, ops) -> None:
        writer = self._writer()
        try:
            ops(writer)
            writer.commit()
        except BaseException:
            try:
                writer.rollback()
            except Exception as exc:  # pragma: no cover
                log.warning("%s: rollback failed: %s", self.where, exc)
            raise
        finally:
            writer.wait_merging_threads()  # consumes the writer: releases the lock
            del writer
            self._commits += 1

    def _searcher(self):
        """A searcher that sees every committed write of this process (and of others up to
        the last commit seen here or the last reload)."""
        commits = self._commits
        if self._seen != commits:
            self.index.reload()
            self._seen = commits
        return self.index.searcher()

    def upsert(self, docs: Sequence[Doc]) -> dict[str, str]:
        docs = _dedupe(docs)

        def ops(writer):
            for doc in docs:  # delete-then-add in one commit: the delete sees only older docs
                writer.delete_documents_by_term("review_id", doc.id)
                writer.add_document(self._document(doc))

        if docs:
            self._commit(ops)
        return {}

    def delete(self, ids: Sequence[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(ids))

        def ops(writer):
            for i in ids:
                writer.delete_documents_by_term("review_id", i)

        if ids:
            self._commit(ops)
        return {}

    def drop(self) -> None:
        self._commit(lambda writer: writer.delete_all_documents())

    # -- reads ---------------------------------------------------------------------------
    def analyze(self, text: str) -> list[str]:
        """The terms BM25 reads of ``text`` (documents and queries alike)."""
        return self._analyzer.analyze(bm25_text(text))

    def _filter_queries(self, filters: Filters | None) -> list[Any]:
        import tantivy as t

        if filters is None:
            return []
        out = [t.Query.term_query(self.schema, name, value)
               for name, value in filters.terms().items()]
        if filters.rating_gte is not None or filters.rating_lte is not None:
            out.append(t.Query.range_query(
                self.schema, "rating", t.FieldType.Float,
                lower_bound=filters.rating_gte, upper_bound=filters.rating_lte,
                include_lower=True, include_upper=True))
        return out

    def search(self, query: str, *, k: int = 10,
               filters: Filters | None = None) -> list[BackendHit]:
        import tantivy as t

        terms = self.analyze(query)
        if not terms or k < 1:
            return []
        text_q = t.Query.boolean_query(
            [(t.Occur.Should, t.Query.term_query(self.schema, "content", term)) for term in terms])
        clauses = [(t.Occur.Must, text_q)] + [
            (t.Occur.Must, t.Query.const_score_query(q, 0.0))
            for q in self._filter_queries(filters)]
        searcher = self._searcher()
        hits = []
        for score, address in searcher.search(t.Query.boolean_query(clauses), limit=k).hits:
            doc = searcher.doc(address)
            payload = json.loads(bytes(doc.get_first("payload")).decode())
            hits.append(BackendHit(id=doc.get_first("review_id"), score=float(score),
                                   payload=payload))
        return hits

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        import tantivy as t

        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        searcher = self._searcher()
        q = t.Query.term_set_query(self.schema, "review_id", ids)
        out = {}
        for _score, address in searcher.search(q, limit=len(ids)).hits:
            doc = searcher.doc(address)
            out[doc.get_first("review_id")] = json.loads(bytes(doc.get_first("payload")).decode())
        return out

    def count(self) -> int:
        self.index.reload()
        return int(self.index.searcher().num_docs)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------- OpenSearch

#: index settings and mapping (``PUT /<index>``). One shard: BM25 statistics are then computed
#: over the whole collection, as in tantivy (several shards score with per-shard statistics).
OPENSEARCH_BODY: dict[str, Any] = {
    "settings": {"index": {"number_of_shards": 1, "analysis": opensearch_analysis()}},
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "review_id": {"type": "keyword"},
            "content": {"type": "text", "analyzer": ANALYZER_NAME},
            "category": {"type": "keyword"},
            "label": {"type": "keyword"},
            "product": {"type": "keyword"},
            "rating": {"type": "float"},
            "text": {"type": "text", "index": False},
            "title": {"type": "text", "index": False},
            "product_name": {"type": "text", "index": False},
            "source": {"type": "keyword", "index": False},
        },
    },
}


def opensearch_source(doc: Doc) -> dict[str, Any]:
    """The ``_source`` of one review."""
    return {**doc.payload(), "content": bm25_text(doc.content)}


def opensearch_query(query: str, *, k: int, filters: Filters | None) -> dict[str, Any]:
    """The ``_search`` body: BM25 ``match`` on content, filters as non-scoring bool filters."""
    clauses: list[dict[str, Any]] = []
    if filters is not None:
        clauses += [{"term": {name: {"value": value}}} for name, value in filters.terms().items()]
        bounds = {op: v for op, v in (("gte", filters.rating_gte), ("lte", filters.rating_lte))
                  if v is not None}
        if bounds:
            clauses.append({"range": {"rating": bounds}})
    boolean: dict[str, Any] = {"must": [{"match": {"content": {"query": bm25_text(query)}}}]}
    if clauses:
        boolean["filter"] = clauses
    return {"size": k, "query": {"bool": boolean}, "_source": {"excludes": ["content"]},
            "track_total_hits": False}


def _display_url(url: str | None) -> str:
    """The URL without credentials (never print a password)."""
    if not url:
        return "(injected client)"
    from urllib.parse import urlsplit

    u = urlsplit(url)
    netloc = u.hostname or ""
    if u.port:
        netloc += f":{u.port}"
    return f"{u.scheme}://{netloc}{u.path.rstrip('/')}"


def _os_error(where: str, what: str, exc: BaseException) -> StoreUnavailable:
    status = getattr(exc, "status_code", None)
    info = getattr(exc, "info", None)
    reason = None
    if isinstance(info, dict):
        err = info.get("error")
        if isinstance(err, dict):
            reason = f"{err.get('type')}: {err.get('reason')}"
        elif err:
            reason = str(err)
    if reason is None:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    prefix = f"HTTP {status} " if isinstance(status, int) else ""
    return StoreUnavailable(f"{where}: {what} failed: {prefix}{reason}")


def _item_failures(response: dict[str, Any], ok_not_found: bool = False) -> dict[str, str]:
    """``{id: reason}`` of the failed items of a ``_bulk`` response (documented shape:
    ``{"errors": bool, "items": [{"<op>": {"_id", "status", "error"?, "result"?}}]}``)."""
    failed: dict[str, str] = {}
    if not isinstance(response, dict) or not isinstance(response.get("items"), list):
        raise ValueError("bulk response has no items list")
    for item in response["items"]:
        (_op, info), = item.items()
        status = int(info.get("status", 500))
        if ok_not_found and status == 404 and info.get("result") == "not_found":
            continue
        if status >= 300 or "error" in info:
            err = info.get("error") or {}
            reason = (f"{err.get('type')}: {err.get('reason')}" if isinstance(err, dict)
                      else str(err)) or f"HTTP {status}"
            failed[str(info.get("_id"))] = reason
    return failed


class OpenSearchSparseIndex:
    """BM25 on an OpenSearch index (the ``analysis.py`` analyzer), written with ``_bulk``."""

    transactional = False

    def __init__(self, client: Any, index: str, *, where: str) -> None:
        self.client = client
        self.index = index
        self.where = where

    @classmethod
    def open(cls, settings: RetrievalSettings, *, index: str | None = None,
             client: Any = None) -> OpenSearchSparseIndex:
        if client is None:
            from opensearchpy import OpenSearch

            if not settings.opensearch_url:
                raise ValueError("OpenSearchSparseIndex.open needs settings.opensearch_url")
            client = OpenSearch(
                hosts=[settings.opensearch_url],
                verify_certs=settings.opensearch_verify_certs,
                ssl_show_warn=False,
                timeout=settings.timeout_s,
                max_retries=settings.opensearch_max_retries,
                retry_on_timeout=True,
            )
        # the client logs every failed request at WARNING; our errors already say it in one line
        os_log = logging.getLogger("opensearch")
        if os_log.level == logging.NOTSET:
            os_log.setLevel(logging.ERROR)
        self = cls(client, index or settings.collection,
                   where=f"opensearch {_display_url(settings.opensearch_url)}")
        self.ensure_index()
        return self

    def _call(self, what: str, fn, **kwargs):
        from opensearchpy.exceptions import OpenSearchException

        try:
            return fn(**kwargs)
        except OpenSearchException as exc:
            raise _os_error(self.where, what, exc) from exc

    def ensure_index(self) -> None:
        if self._call("index check", self.client.indices.exists, index=self.index):
            mapping = self._call("get mapping", self.client.indices.get_mapping, index=self.index)
            props = ((mapping.get(self.index) or next(iter(mapping.values()), {}))
                     .get("mappings", {}).get("properties", {})) if mapping else {}
            content = props.get("content", {})
            if (content.get("type") != "text" or content.get("analyzer") != ANALYZER_NAME
                    or props.get("category", {}).get("type") != "keyword"):
                raise IndexMismatch(
                    f"{self.where}: index {self.index!r} exists with another mapping (content "
                    f"analyzer {content.get('analyzer')!r}, expected {ANALYZER_NAME!r}); drop "
                    "it and index again, or choose another SHOPSENSE_RETRIEVAL__COLLECTION")
            return
        self._call("create index", self.client.indices.create, index=self.index,
                   body=OPENSEARCH_BODY)

    def _bulk(self, what: str, actions: list[dict[str, Any]], *,
              ok_not_found: bool) -> dict[str, str]:
        if not actions:
            return {}
        response = self._call(what, self.client.bulk, body=actions, refresh="wait_for")
        try:
            return _item_failures(response, ok_not_found=ok_not_found)
        except (ValueError, AttributeError, TypeError) as exc:
            raise StoreUnavailable(
                f"{self.where}: {what}: unreadable bulk response ({exc})") from exc

    def upsert(self, docs: Sequence[Doc]) -> dict[str, str]:
        actions: list[dict[str, Any]] = []
        for doc in _dedupe(docs):
            actions.append({"index": {"_index": self.index, "_id": doc.id}})
            actions.append(opensearch_source(doc))
        return self._bulk("bulk index", actions, ok_not_found=False)

    def delete(self, ids: Sequence[str]) -> dict[str, str]:
        actions = [{"delete": {"_index": self.index, "_id": i}} for i in dict.fromkeys(ids)]
        return self._bulk("bulk delete", actions, ok_not_found=True)

    def search(self, query: str, *, k: int = 10,
               filters: Filters | None = None) -> list[BackendHit]:
        if not query.strip() or k < 1:
            return []
        body = opensearch_query(query, k=k, filters=filters)
        response = self._call("search", self.client.search, index=self.index, body=body)
        try:
            return [BackendHit(id=str(h["_id"]), score=float(h["_score"] or 0.0),
                               payload={**h.get("_source", {}), "review_id": str(h["_id"])})
                    for h in response["hits"]["hits"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreUnavailable(f"{self.where}: search: unreadable response ({exc})") from exc

    def count(self) -> int:
        return int(self._call("count", self.client.count, index=self.index)["count"])

    def drop(self) -> None:
        self._call("delete index", self.client.indices.delete, index=self.index)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception as exc:  # pragma: no cover
            log.debug("closing %s: %s", self.where, exc)
