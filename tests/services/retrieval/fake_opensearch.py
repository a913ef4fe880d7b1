"""A stand-in OpenSearch node on 127.0.0.1 for tests (no OpenSearch can run here).

It speaks HTTP to the real opensearch-py client, records every request, and answers the
endpoints the sparse backend uses with the response shapes OpenSearch documents (create index,
get mapping, ``_bulk``, ``_search``, ``_count``, delete index, error bodies). It interprets only
the query subset the backend is allowed to build and rejects anything else with a 400
``parsing_exception``, so a request body drifting from the documented DSL fails a test:

* ``{"bool": {"must": [{"match": {"content": {"query": q}}}], "filter": [...]}}``
* filters: ``{"term": {field: {"value": v}}}`` (exact, case-sensitive, keyword fields),
  ``{"range": {field: {"gte"?: x, "lte"?: y}}}`` (a document without the field never matches)

Analysis and scoring follow what OpenSearch (Lucene) documents, so rankings can be compared
with tantivy's: the ``content`` field is analysed by the analyzer its mapping names, built from
the index's ``settings.index.analysis`` (tokenizers ``pattern`` (Java regex, split mode) and
``standard`` (approximated by letter/digit runs); token filters ``lowercase``, ``length``,
``stop`` (a list or ``_english_``), ``stemmer`` with ``language`` ``porter2`` (the Snowball
English stemmer, through the ``snowballstemmer`` package, an implementation independent of
tantivy's), ``english``/``porter`` (Porter) or ``possessive_english``); the built-in ``english``
analyzer is Lucene's EnglishAnalyzer (standard tokenizer, possessive, lowercase, the English
stop set, Porter). An unknown analyzer, tokenizer or filter is a 400 at index creation, as in
OpenSearch. Scoring is Lucene's BM25 (k1 = 1.2, b = 0.75, ``idf = ln(1 + (N - n + 0.5) / (n +
0.5))``, ``tf / (tf + k1 (1 - b + b dl / avgdl))`` summed over the query's terms), with the
document length stored in Lucene's one-byte norm (``SmallFloat.intToByte4``) and the average
from the exact lengths. Documents are checked against the index mapping (``dynamic:
strict``).

Failure injection: ``reject_ids`` / ``reject_delete_ids`` (bulk index / delete items answered
with a per-item error) and
``fail_next`` (the next N requests answered with an HTTP error).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: Lucene's English stop set (the built-in english analyzer and "_english_")
STOP = {"a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
        "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
        "there", "these", "they", "this", "to", "was", "will", "with"}
K1, B = 1.2, 0.75


def _long_to_int4(i: int) -> int:
    bits = i.bit_length()
    if bits < 4:
        return i
    shift = bits - 4
    return ((i >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(i: int) -> int:
    bits, shift = i & 0x07, (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_FREE = 255 - _long_to_int4(2**31 - 1)  # 24: lengths below it are stored exactly


def lucene_norm_length(length: int) -> int:
    """A document length as Lucene's BM25 reads it back from its one-byte norm."""
    if length < _FREE:
        return length
    return _FREE + _int4_to_long(_long_to_int4(length - _FREE))


def _stemmer(language: str):
    import snowballstemmer

    if language == "porter2":
        stem = snowballstemmer.stemmer("english").stemWord
        return lambda toks: [stem(t) for t in toks]
    if language in ("english", "porter"):
        stem = snowballstemmer.stemmer("porter").stemWord
        return lambda toks: [stem(t) for t in toks]
    if language == "possessive_english":
        return lambda toks: [t[:-2] if t.lower().endswith(("'s", "\u2019s")) else t
                             for t in toks]
    raise BadRequest("illegal_argument_exception", f"unknown stemmer language [{language}]")


def _filter(name: str, defined: dict[str, Any]):
    spec = defined.get(name, {"type": name})
    kind = spec.get("type")
    if kind == "lowercase":
        return lambda toks: [t.lower() for t in toks]
    if kind == "length":
        lo, hi = int(spec.get("min", 0)), int(spec.get("max", 2**31 - 1))
        return lambda toks: [t for t in toks if lo <= len(t) <= hi]
    if kind == "stop":
        words = spec.get("stopwords", "_english_")
        stop = STOP if words == "_english_" else set(words)
        return lambda toks: [t for t in toks if t not in stop]
    if kind == "stemmer":
        return _stemmer(spec.get("language", spec.get("name", "english")))
    if kind == "porter_stem":
        return _stemmer("porter")
    raise BadRequest("illegal_argument_exception", f"unknown token filter [{name}]")


def _tokenizer(name: str, defined: dict[str, Any]):
    import regex

    spec = defined.get(name, {"type": name})
    if spec.get("type") == "pattern":
        pattern = regex.compile(spec.get("pattern", r"\W+"))
        return lambda text: [t for t in pattern.split(text) if t]
    if spec.get("type") == "standard":
        word = regex.compile(r"[\p{L}\p{N}]+(?:['\u2019][\p{L}\p{N}]+)*")
        return lambda text: word.findall(text)
    raise BadRequest("illegal_argument_exception", f"unknown tokenizer [{name}]")


def build_analyzer(name: str, analysis: dict[str, Any]):
    """``text -> tokens`` for the analyzer ``name`` of an index's ``analysis`` settings."""
    custom = (analysis.get("analyzer") or {}).get(name)
    if custom is None:
        if name == "english":
            custom = {"type": "custom", "tokenizer": "standard",
                      "filter": ["possessive", "lowercase", "stop", "porter_stem"]}
            analysis = {"filter": {"possessive": {"type": "stemmer",
                                                  "language": "possessive_english"}}}
        elif name == "standard":
            custom = {"type": "custom", "tokenizer": "standard", "filter": ["lowercase"]}
        else:
            raise BadRequest("mapper_parsing_exception",
                             f"analyzer [{name}] has not been configured in mappings")
    if custom.get("type", "custom") != "custom":
        raise BadRequest("illegal_argument_exception", f"analyzer type {custom.get('type')}")
    tokenize = _tokenizer(custom["tokenizer"], analysis.get("tokenizer") or {})
    filters = [_filter(f, analysis.get("filter") or {}) for f in custom.get("filter", [])]

    def analyze(text: str) -> list[str]:
        toks = tokenize(text or "")
        for f in filters:
            toks = f(toks)
        return toks

    return analyze


class BadRequest(Exception):
    def __init__(self, type_: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.type, self.reason, self.status = type_, reason, status


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    body: Any  # parsed JSON, list of NDJSON objects, or None


@dataclass
class FakeOpenSearch:
    indices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    reject_ids: set[str] = field(default_factory=set)
    reject_delete_ids: set[str] = field(default_factory=set)
    fail_next: list[tuple[int, str]] = field(default_factory=list)  # (status, error type)
    url: str = ""

    # -- endpoints ---------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append(Recorded(method, path, params, body))
        if self.fail_next:
            status, type_ = self.fail_next.pop(0)
            return status, self._error(type_, "injected failure", status)
        parts = [p for p in path.split("/") if p]
        try:
            if parts == ["_bulk"] or (len(parts) == 2 and parts[1] == "_bulk"):
                return 200, self._bulk(parts[0] if len(parts) == 2 else None, body)
            if len(parts) == 1 and not parts[0].startswith("_"):
                return self._index_op(method, parts[0], body)
            if len(parts) == 2 and parts[1] == "_mapping" and method == "GET":
                idx = self._get(parts[0])
                return 200, {parts[0]: {"mappings": idx["body"]["mappings"]}}
            if len(parts) == 2 and parts[1] == "_search":
                return 200, self._search(parts[0], body or {})
            if len(parts) == 2 and parts[1] == "_count":
                return 200, {"count": len(self._get(parts[0])["docs"]),
                             "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        except BadRequest as exc:
            return exc.status, self._error(exc.type, exc.reason, exc.status)
        return 400, self._error("illegal_argument_exception",
                                f"no handler for {method} {path}", 400)

    @staticmethod
    def _error(type_: str, reason: str, status: int) -> dict[str, Any]:
        return {"error": {"root_cause": [{"type": type_, "reason": reason}], "type": type_,
                          "reason": reason}, "status": status}

    def _analyzer(self, name: str):
        """The analyzer of the ``content`` field of index ``name`` (built once)."""
        idx = self._get(name)
        if "analyze" not in idx:
            props = idx["body"].get("mappings", {}).get("properties", {})
            analyzer = props.get("content", {}).get("analyzer", "standard")
            analysis = ((idx["body"].get("settings") or {}).get("index") or {}).get(
                "analysis") or {}
            idx["analyze"] = build_analyzer(analyzer, analysis)
        return idx["analyze"]

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self.indices:
            raise BadRequest("index_not_found_exception", f"no such index [{name}]", 404)
        return self.indices[name]

    def _index_op(self, method: str, name: str, body: Any) -> tuple[int, Any]:
        if method == "HEAD":
            return (200 if name in self.indices else 404), None
        if method == "PUT":
            if name in self.indices:
                raise BadRequest("resource_already_exists_exception",
                                 f"index [{name}] already exists")
            if not isinstance(body, dict) or set(body) - {"settings", "mappings"}:
                raise BadRequest("parsing_exception", "unknown key in index body")
            self.indices[name] = {"body": body, "docs": {}}
            try:
                self._analyzer(name)
            except BadRequest:
                del self.indices[name]
                raise
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
        if method == "DELETE":
            self._get(name)
            del self.indices[name]
            return 200, {"acknowledged": True}
        raise BadRequest("illegal_argument_exception", f"{method} /{name} not supported")

    def _check_source(self, idx: dict[str, Any], source: dict[str, Any]) -> None:
        props = idx["body"]["mappings"]["properties"]
        for key, value in source.items():
            if key not in props:
                raise BadRequest("strict_dynamic_mapping_exception",
                                 f"mapping set to strict, dynamic introduction of [{key}] "
                                 "within [_doc] is not allowed")
            if props[key]["type"] == "float" and not isinstance(value, (int, float)):
                raise BadRequest("mapper_parsing_exception",
                                 f"failed to parse field [{key}] of type [float]")

    def _bulk(self, default_index: str | None, lines: list[dict[str, Any]]) -> dict[str, Any]:
        items, errors, i = [], False, 0
        while i < len(lines):
            (op, meta), = lines[i].items()
            name = meta.get("_index", default_index)
            doc_id = str(meta["_id"])
            base = {"_index": name, "_id": doc_id}
            idx = self.indices.get(name)
            if op == "index":
                source = lines[i + 1]
                i += 2
                try:
                    if idx is None:
                        raise BadRequest("index_not_found_exception",
                                         f"no such index [{name}]", 404)
                    if doc_id in self.reject_ids:
                        raise BadRequest("mapper_parsing_exception", "rejected by the test")
                    self._check_source(idx, source)
                except BadRequest as exc:
                    errors = True
                    items.append({"index": {**base, "status": exc.status,
                                            "error": {"type": exc.type, "reason": exc.reason}}})
                    continue
                created = doc_id not in idx["docs"]
                idx["docs"][doc_id] = source
                items.append({"index": {**base, "_version": 1, "result":
                                        "created" if created else "updated",
                                        "_shards": {"total": 1, "successful": 1, "failed": 0},
                                        "_seq_no": len(items), "_primary_term": 1,
                                        "status": 201 if created else 200}})
            elif op == "delete":
                i += 1
                if idx is not None and doc_id in self.reject_delete_ids:
                    errors = True
                    items.append({"delete": {**base, "status": 409, "error": {
                        "type": "version_conflict_engine_exception", "reason": "by the test"}}})
                    continue
                found = idx is not None and idx["docs"].pop(doc_id, None) is not None
                items.append({"delete": {**base, "_version": 2,
                                         "result": "deleted" if found else "not_found",
                                         "status": 200 if found else 404}})
            else:
                raise BadRequest("illegal_argument_exception", f"unsupported bulk op {op}")
        return {"took": 1, "errors": errors, "items": items}

    # -- search ------------------------------------------------------------------------
    def _search(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        idx = self._get(name)
        unknown = set(body) - {"size", "query", "_source", "track_total_hits"}
        if unknown:
            raise BadRequest("parsing_exception", f"unknown key {sorted(unknown)}")
        boolean = body["query"].get("bool")
        if boolean is None or set(body["query"]) != {"bool"}:
            raise BadRequest("parsing_exception", "expected a bool query")
        if set(boolean) - {"must", "filter"}:
            raise BadRequest("parsing_exception", f"unexpected bool keys {sorted(boolean)}")
        must = boolean.get("must", [])
        if len(must) != 1 or set(must[0]) != {"match"}:
            raise BadRequest("parsing_exception", "expected one match clause in must")
        (fname, spec), = must[0]["match"].items()
        if fname != "content" or set(spec) != {"query"}:
            raise BadRequest("parsing_exception", "match must be {content: {query}}")
        analyze = self._analyzer(name)
        terms = analyze(spec["query"])
        filters = boolean.get("filter", [])
        props = idx["body"]["mappings"]["properties"]
        analysed = {doc_id: analyze(src.get("content", "")) for doc_id, src in idx["docs"].items()}
        n_docs = sum(1 for toks in analysed.values() if toks)
        avgdl = sum(len(t) for t in analysed.values()) / max(1, n_docs)
        df = {t: sum(1 for toks in analysed.values() if t in toks) for t in set(terms)}
        hits = []
        for doc_id, src in idx["docs"].items():
            toks = analysed[doc_id]
            dl = lucene_norm_length(len(toks))
            score = 0.0
            for t in terms:
                tf = toks.count(t)
                if tf:
                    idf = math.log(1 + (n_docs - df[t] + 0.5) / (df[t] + 0.5))
                    score += idf * tf / (tf + K1 * (1 - B + B * dl / avgdl))
            if score <= 0 or not all(self._passes(f, src, props) for f in filters):
                continue
            hits.append((score, doc_id, src))
        hits.sort(key=lambda h: (-h[0], h[1]))
        excludes = set((body.get("_source") or {}).get("excludes", []))
        out = [{"_index": name, "_id": d, "_score": s,
                "_source": {k: v for k, v in src.items() if k not in excludes}}
               for s, d, src in hits[: body.get("size", 10)]]
        return {"took": 2, "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": len(hits), "relation": "eq"},
                         "max_score": out[0]["_score"] if out else None, "hits": out}}

    @staticmethod
    def _passes(clause: dict[str, Any], src: dict[str, Any], props: dict[str, Any]) -> bool:
        (kind, spec), = clause.items()
        (fname, cond), = spec.items()
        if fname not in props:
            raise BadRequest("query_shard_exception", f"no mapping for [{fname}]")
        value = src.get(fname)
        if kind == "term":
            if props[fname]["type"] != "keyword" or set(cond) != {"value"}:
                raise BadRequest("parsing_exception", "term filter must be {field: {value}} on "
                                 "a keyword field")
            return value == cond["value"]
        if kind == "range":
            if set(cond) - {"gte", "lte"} or not cond:
                raise BadRequest("parsing_exception", f"unexpected range keys {sorted(cond)}")
            if value is None:
                return False
            return (("gte" not in cond or value >= cond["gte"])
                    and ("lte" not in cond or value <= cond["lte"]))
        raise BadRequest("parsing_exception", f"unknown filter [{kind}]")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenSearch

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            text = raw.decode("utf-8")
            if url.path.endswith("/_bulk"):
                body = [json.loads(line) for line in text.split("\n") if line.strip()]
            else:
                body = json.loads(text)
        status, answer = self.fake.handle(self.command, url.path, params, body)
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


class FakeOpenSearchServer:
    """``with FakeOpenSearchServer() as fake: ... fake.url ...``"""

    def __enter__(self) -> FakeOpenSearch:
        self.fake = FakeOpenSearch()
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.fake.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
