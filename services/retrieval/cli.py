"""``shopsense index``, ``shopsense search`` and ``shopsense retrieval evaluate|status|
train-reranker|review-set``: the
retrieval service's sub-commands, registered on the root command by ``register(app)`` (entry
point group ``shopsense.commands``). ``python -m services.retrieval.cli ...`` runs the root
command with them registered, for use before the entry point is installed.

Errors are ShopsenseError subclasses: the root command prints them as one line and exits 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from shopsense.errors import InvalidInput

log = logging.getLogger("shopsense.retrieval")

retrieval_app = typer.Typer(help="Similar-review retrieval: quality and state of the indexes.",
                            no_args_is_help=True)


def _settings():
    from services.retrieval.settings import RetrievalSettings

    return RetrievalSettings()


def _split_ids(value: str) -> list[str]:
    if value.strip() == "-":
        value = sys.stdin.read()
    return [i for i in value.replace(",", " ").split() if i]


def index_cmd(
    data: list[str] | None = typer.Option(
        None, "--data", help="set name (blitzer-dvd …), dataset URI/dir with manifest.json, or "
        "a JSONL file of reviews; repeat for several"),
    delete: str | None = typer.Option(
        None, "--delete", help="review ids to remove from both indexes (comma/space separated; "
        "'-' reads them from stdin)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Index reviews into the dense (Qdrant) and sparse (BM25) indexes, or delete them.

    Re-running upserts by review id. A review's first image is embedded too, when it has one."""
    from services.retrieval.retriever import HybridRetriever
    from services.retrieval.sources import open_source

    if bool(data) == (delete is not None):
        raise InvalidInput("give --data PATH to index or --delete IDS to remove (one of them)")
    settings = _settings()
    if delete is not None:
        ids = _split_ids(delete)
        if not ids:
            raise InvalidInput("--delete got no ids")
        with HybridRetriever.open(settings) as retriever:
            rep = retriever.delete(ids)
        if as_json:
            typer.echo(json.dumps(rep.as_dict()))
        else:
            msg = f"deleted {rep.deleted} of {rep.requested} reviews from both indexes"
            if rep.not_found:
                msg += f" ({len(rep.not_found)} were not indexed)"
            typer.echo(msg)
        return
    sources = [open_source(d) for d in data or []]  # fail on a bad --data before any write
    reports = []
    with HybridRetriever.open(settings) as retriever:
        for src in sources:
            rep = retriever.index(src.reviews, image_loader=src.image_loader, progress=True,
                                  total=src.total, description=f"index {src.description}")
            reports.append({"data": src.description, **rep.as_dict()})
            if not as_json:
                extra = f", {rep.with_image} with an image" if rep.with_image else ""
                if rep.image_errors:
                    extra += f", {len(rep.image_errors)} images unreadable (indexed by text)"
                typer.echo(f"indexed {rep.indexed} reviews from {src.description}{extra} into "
                           f"{rep.dense} and {rep.sparse} in {rep.seconds:.1f}s")
    if as_json:
        typer.echo(json.dumps(reports[0] if len(reports) == 1 else reports))


def _read_query_image(value: str) -> bytes:
    from shopsense.images import load_image_bytes
    from shopsense.settings import get_settings

    path = Path(value).expanduser()
    if path.is_file():
        return path.read_bytes()
    if value.startswith(("http://", "https://", "data:")) or len(value) > 256:
        return load_image_bytes(value, get_settings().images)
    raise InvalidInput(f"--image {value!r}: no such file (give a path, an http(s) URL, a data: "
                       "URL or base64)")


def _search_service(url: str, query: str | None, image: bytes | None, *, k: int, filters,
                    mode: str, fusion: str | None, rerank: bool | None) -> list:
    """``POST {url}/v1/search``; the API's error message becomes the one-line CLI error."""
    import base64

    import httpx

    from services.retrieval.schema import Hit
    from shopsense.errors import ServiceUnavailable, ShopsenseError

    body: dict[str, Any] = {"query": query, "k": k, "mode": mode}
    if image is not None:
        body["image"] = base64.b64encode(image).decode()
    f = filters.model_dump(exclude_none=True)
    rating = {op: f.pop(f"rating_{op}") for op in ("gte", "lte") if f"rating_{op}" in f}
    if rating:
        f["rating"] = rating
    if f:
        body["filters"] = f
    if fusion is not None:
        body["fusion"] = fusion
    if rerank is not None:
        body["rerank"] = rerank
    try:
        r = httpx.post(url.rstrip("/") + "/v1/search", json=body, timeout=60)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"{url}: the service did not answer ({exc})") from exc
    if r.status_code != 200:
        try:
            msg = r.json()["message"]
        except (ValueError, KeyError, TypeError):
            msg = r.text[:200]
        raise ShopsenseError(f"{url} answered HTTP {r.status_code}: {msg}")
    return [Hit(**h) for h in r.json()["hits"]]


def search_cmd(
    query: str | None = typer.Argument(None, help="what to look for (text)"),
    image: str | None = typer.Option(None, "--image", help="query image: path or URL"),
    k: int = typer.Option(10, "--k", help="how many reviews"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid | dense | sparse"),
    category: str | None = typer.Option(None, "--category", help="exact product category"),
    label: str | None = typer.Option(None, "--label", help="negative | neutral | positive"),
    product: str | None = typer.Option(None, "--product", help="exact product id"),
    rating_gte: float | None = typer.Option(None, "--rating-gte", help="rating >= N"),
    rating_lte: float | None = typer.Option(None, "--rating-lte", help="rating <= N"),
    fusion: str | None = typer.Option(None, "--fusion", help="rrf | weighted (default from "
                                         "SHOPSENSE_RETRIEVAL__FUSION)"),
    rerank: bool | None = typer.Option(None, "--rerank/--no-rerank", help="re-score the fused "
                                          "top with the trained reranker (default from "
                                          "SHOPSENSE_RETRIEVAL__RERANK)"),
    url: str | None = typer.Option(None, "--url", help="ask a running service "
                                   "(POST URL/v1/search) instead of opening the local indexes, "
                                   "which the service holds while it runs"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Reviews similar to QUERY (and/or --image), with each retriever's score and the fused one."""
    from services.retrieval.request import check_search
    from services.retrieval.retriever import HybridRetriever

    # check everything before opening indexes or loading models
    filters = check_search(
        query, has_image=image is not None, mode=mode, k=k, fusion=fusion, rerank=rerank,
        filters={name: value for name, value in (
            ("category", category), ("label", label), ("product", product),
            ("rating_gte", rating_gte), ("rating_lte", rating_lte)) if value is not None},
        cli=True).filters
    from services.retrieval.schema import Filters

    filters = filters or Filters()
    image_bytes = _read_query_image(image) if image is not None else None
    settings = _settings()
    if url is not None:
        hits = _search_service(url, query, image_bytes, k=k, filters=filters, mode=mode,
                               fusion=fusion, rerank=rerank)
    else:
        with HybridRetriever.open(settings) as retriever:
            hits = retriever.search(query, image_bytes, k=k, filters=filters, mode=mode,
                                    fusion=fusion, rerank=rerank)
    if as_json:
        out: dict[str, Any] = {
            "query": query, "image": image, "mode": mode, "k": k,
            "fusion": fusion or settings.fusion,
            "rerank": settings.rerank if rerank is None else rerank,
            "filters": filters.model_dump(exclude_none=True),
            "hits": [h.model_dump() for h in hits],
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    import shutil

    width = max(40, shutil.get_terminal_size((100, 20)).columns)
    lists = [n for n in (hits[0].scores if hits else {}) if n != "rerank"]
    how = f", {fusion or settings.fusion} fusion" if len(lists) > 1 else ""
    if hits and "rerank" in hits[0].scores:
        how += ", reranked"
    typer.echo(f"{len(hits)} review{'' if len(hits) == 1 else 's'} ({mode}{how})")
    for n, h in enumerate(hits, start=1):
        per = "  ".join(f"{name} " + ("-" if h.scores[name] is None
                                      else f"{h.scores[name]:.3f} #{h.ranks[name]}")
                        for name in lists)
        meta = "  ".join(x for x in (h.label, None if h.rating is None else f"{h.rating:g}/5",
                                      h.category) if x)
        typer.echo(f"{n:>3}. {h.score:.4f}  {per}  {meta}  {h.id}")
        text = " ".join((((h.title + ". ") if h.title else "") + h.text).split())
        room = width - 5
        typer.echo("     " + (text if len(text) <= room else text[: room - 1] + "…"))


def evaluate_cmd(
    beir: Path = typer.Option(..., "--beir", help="BEIR directory: corpus.jsonl, queries.jsonl, "
                              "qrels/<split>.tsv"),
    split: str = typer.Option("test", "--split", help="qrels file name without .tsv"),
    max_queries: int | None = typer.Option(None, "--max-queries",
                                              help="evaluate at most N queries"),
    rerank: bool | None = typer.Option(None, "--rerank/--no-rerank", help="the +rerank modes: "
                                          "default when a trained reranker exists; --rerank "
                                          "requires one"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """nDCG@10, Recall@100 and MRR@10 (trec_eval's, through ir-measures) of every mode (dense,
    sparse, hybrid-rrf, hybrid-weighted), each with and without the trained reranker, with
    paired significance tests, on a BEIR collection indexed into a throw-away index."""
    from services.retrieval.offline.beir import (
        REPORT_COLUMNS,
        evaluate_beir,
        report_rows,
        report_summary,
    )

    if max_queries is not None and max_queries < 1:
        raise InvalidInput("--max-queries must be >= 1")
    result = evaluate_beir(beir, _settings(), split=split, max_queries=max_queries,
                           progress=True, rerank=rerank)
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{beir} ({result['queries']} queries, {result['corpus']} documents)")
    for col in REPORT_COLUMNS:
        table.add_column(col, justify="left" if col == "mode" else "right")
    for row in report_rows(result):
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 160)  # piped: no wrapped columns
    console.print(table)
    console.print(report_summary(result))


def status_cmd(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Where the indexes are, how many reviews each holds, and any interrupted write."""
    from services.retrieval.retriever import HybridRetriever

    with HybridRetriever.open(_settings()) as retriever:
        st = retriever.status()
    if as_json:
        typer.echo(json.dumps(st))
        return
    typer.echo(f"dense : {st['dense']['count']:>8} reviews  {st['dense']['where']}")
    typer.echo(f"sparse: {st['sparse']['count']:>8} reviews  {st['sparse']['where']}")
    if st["pending"]:
        typer.echo(f"pending: {len(st['pending'])} reviews from an interrupted write "
                   "(repaired by the next index/delete)")


def train_reranker_cmd(
    out: Path | None = typer.Option(None, "--out", help="model folder (default "
                                    "SHOPSENSE_RETRIEVAL__RERANKER_DIR or "
                                    "<SHOPSENSE_HOME>/retrieval/reranker); replaced atomically"),
    sets: str = typer.Option(",".join(("blitzer-books", "huliu-reviews")), "--sets",
                             help="training review sets (comma separated; see shopsense data "
                             "set names); keep them disjoint from what you evaluate on"),
    source: str = typer.Option("llm", "--source", help="training queries: llm (written by the "
                               "local LLM: run generate-queries first), heuristic (derived "
                               "from the reviews) or both"),
    generator: str | None = typer.Option(None, "--generator", help="only the queries of this "
                                         "generator identity (default: every cached one)"),
    keep_top: int = typer.Option(10, "--keep-top", help="llm: keep a query whose review is in "
                                 "the top N of a first-stage list"),
    max_groups: int = typer.Option(1200, "--max-groups", help="training queries (each with 1 "
                                   "positive + --negatives hard negatives)"),
    negatives: int = typer.Option(3, "--negatives", help="hard negatives per query"),
    epochs: int = typer.Option(1, "--epochs"),
    batch_groups: int = typer.Option(8, "--batch-groups", help="queries per optimiser step"),
    lr: float = typer.Option(5e-5, "--lr"),
    max_length: int = typer.Option(128, "--max-length", help="tokens per training pair"),
    dev: str = typer.Option("dvd", "--dev", help="Blitzer category whose review set calibrates "
                            "the interpolation weight alpha, or 'none' (alpha = 1)"),
    dev_queries: int = typer.Option(80, "--dev-queries"),
    seed: int = typer.Option(13, "--seed"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="stop training after "
                                             "this long (the model is still saved)"),
    tiny: bool = typer.Option(False, "--tiny", help="a tiny randomly initialised model "
                              "(tests, smoke runs)", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Train the cross-encoder reranker from the offline MiniLM on LLM-written queries (or pairs
    derived from the reviews), calibrate it, and write it (services/retrieval/offline/
    train_rerank.py)."""
    from services.retrieval.offline.train_rerank import TrainConfig, train_reranker
    from services.retrieval.offline.review_sets import BLITZER_CATEGORIES
    from shopsense.data.loaders import SET_NAMES

    names = [s.strip() for s in sets.split(",") if s.strip()]
    bad = [n for n in names if n not in SET_NAMES]
    if not names or bad:
        raise InvalidInput(f"--sets {bad[0] if bad else sets!r}: choose from "
                           f"{', '.join(SET_NAMES)}")
    dev_category = None if dev.strip().lower() in ("", "none") else dev.strip()
    if dev_category is not None and dev_category not in BLITZER_CATEGORIES:
        raise InvalidInput(f"--dev {dev!r}: choose {', '.join(BLITZER_CATEGORIES)} or none")
    if dev_category is not None and f"blitzer-{dev_category}" in names:
        raise InvalidInput(f"--dev {dev_category} is also a training set; calibrate on data "
                           "the reranker did not see")
    if source not in ("llm", "heuristic", "both"):
        raise InvalidInput(f"--source {source!r}: choose llm, heuristic or both")
    for flag, value in (("--max-groups", max_groups), ("--negatives", negatives),
                        ("--keep-top", keep_top),
                        ("--epochs", epochs), ("--batch-groups", batch_groups),
                        ("--dev-queries", dev_queries)):
        if value < 1:
            raise InvalidInput(f"{flag} must be >= 1, got {value}")
    if not 16 <= max_length <= 512:
        raise InvalidInput(f"--max-length must be in [16, 512], got {max_length}")
    if lr <= 0:
        raise InvalidInput(f"--lr must be > 0, got {lr}")
    settings = _settings()
    target = out if out is not None else settings.resolved_reranker_dir()
    cfg = TrainConfig(train_sets=names, source=source, generator=generator, keep_top=keep_top,
                      max_groups=max_groups, negatives=negatives,
                      batch_groups=batch_groups, epochs=epochs, lr=lr, max_length=max_length,
                      seed=seed, dev_category=dev_category, dev_queries=dev_queries,
                      random_init=tiny, max_seconds=max_seconds)
    report = train_reranker(target, cfg, settings=settings, progress=True)
    if as_json:
        typer.echo(json.dumps(report))
        return
    fit = report["fit"]
    llm = report.get("llm_queries")
    kept = (f" ({llm['kept']} of {llm['generated']} LLM queries kept by the first-stage "
            f"filter)" if llm else "")
    typer.echo(f"trained a reranker on {report['groups']} {report['source']} queries{kept} from "
               f"{', '.join(report['train_sets'])}: {fit['steps']} steps, loss "
               f"{fit['loss_first']:.3f} -> {fit['loss_last']:.3f} (chance "
               f"{fit['chance_loss']:.3f}), alpha {report['alpha']:.1f}; wrote "
               f"{report['out_dir']} in {report['seconds']:.0f}s")


def review_set_cmd(
    out: Path = typer.Option(..., "--out", help="folder to write (BEIR layout)"),
    category: list[str] = typer.Option(["electronics"], "--category",
                                       help="Blitzer category (repeat for several)"),
    other_label_gain: int = typer.Option(0, "--other-label-gain", help="gain of same-product "
                                         "reviews with the other label (0 = not relevant)"),
    as_json: bool = typer.Option(False, "--json", help="print the counts as JSON"),
) -> None:
    """Export a review-retrieval test collection (query = a review, relevant = other reviews
    of the same product with the same label) in BEIR layout; see review_sets.py."""
    from services.retrieval.offline.review_sets import export_review_set

    if other_label_gain < 0:
        raise InvalidInput("--other-label-gain must be >= 0")
    rep = export_review_set(out, category, other_label_gain=other_label_gain)
    if as_json:
        typer.echo(json.dumps(rep))
        return
    typer.echo(f"wrote {rep['queries']} queries, {rep['corpus']} documents, {rep['relevant']} "
               f"relevant judgements from {', '.join(rep['source'])} to {rep['out_dir']}")


def generate_queries_cmd(
    sets: str = typer.Option(",".join(("blitzer-books", "huliu-reviews")), "--sets",
                             help="review sets to write queries for (comma separated); keep "
                             "them disjoint from what you evaluate and calibrate on"),
    limit: int | None = typer.Option(None, "--limit", help="at most N reviews not cached yet"),
    per_review: int = typer.Option(4, "--per-review", help="queries asked for per review"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="stop after this "
                                             "long (what was made is kept)"),
    model: str | None = typer.Option(None, "--model", help="embedded model key (default "
                                     "SHOPSENSE_LLM__EMBEDDED_MODEL); ignored when "
                                     "SHOPSENSE_LLM_BASE_URL is set"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Write the queries a shopper would type for training reviews with the local LLM, into the
    resumable query cache (services/retrieval/offline/querygen.py); the reranker trains on them
    (train-reranker --source llm)."""
    from services.retrieval.offline.querygen import (
        QueryCache,
        QueryGenerator,
        generate_queries,
        review_order,
    )
    from shopsense.data.loaders import SET_NAMES, load_set
    from shopsense.llm.client import LLMClient
    from shopsense.llm.server import llm_endpoint
    from shopsense.settings import get_settings

    names = [x.strip() for x in sets.split(",") if x.strip()]
    bad = [n for n in names if n not in SET_NAMES]
    if not names or bad:
        raise InvalidInput(f"--sets {bad[0] if bad else sets!r}: choose from "
                           f"{', '.join(SET_NAMES)}")
    for flag, value in (("--limit", limit), ("--per-review", per_review)):
        if value is not None and value < 1:
            raise InvalidInput(f"{flag} must be >= 1, got {value}")
    if max_seconds is not None and max_seconds <= 0:
        raise InvalidInput(f"--max-seconds must be > 0, got {max_seconds}")
    reviews = review_order({n: load_set(n) for n in names})
    settings = get_settings()
    import signal

    def _stop(*_):  # SIGTERM (a pod stopping, kill): stop like Ctrl-C, keeping what was made
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # one review is one request of a few hundred tokens: minutes on a busy CPU, so the
    # per-request timeout is at least 15 minutes here
    with llm_endpoint(settings, model=model) as endpoint, \
            LLMClient(endpoint, timeout_s=max(settings.llm_timeout_s, 900.0)) as client:
        generator = QueryGenerator(client, per_review=per_review)
        cache = QueryCache(QueryCache.open_store(settings), generator.identity)
        before = len(cache)
        report = generate_queries(reviews, generator, cache, limit=limit,
                                  max_seconds=max_seconds, progress=True)
    report["sets"] = names
    report["reviews_in_sets"] = len(reviews)
    if as_json:
        typer.echo(json.dumps(report))
        return
    c = report["cache"]
    typer.echo(f"wrote {report['generated_queries']} queries for {report['generated_reviews']} "
               f"reviews in {report['seconds']:.0f}s ({report['reviews_without_query']} without "
               f"a usable query); the cache of {c['generator']} holds {c['reviews']} of "
               f"{len(reviews)} reviews ({before} before), {c['queries']} queries")


retrieval_app.command("evaluate")(evaluate_cmd)
retrieval_app.command("generate-queries")(generate_queries_cmd)
retrieval_app.command("train-reranker")(train_reranker_cmd)
retrieval_app.command("review-set")(review_set_cmd)
retrieval_app.command("status")(status_cmd)


def register(app: typer.Typer) -> None:
    """Add ``index``, ``search`` and the ``retrieval`` group to the root command (once)."""
    if getattr(app, "_shopsense_retrieval_registered", False):
        return
    app.command("index")(index_cmd)
    app.command("search")(search_cmd)
    app.add_typer(retrieval_app, name="retrieval")
    app._shopsense_retrieval_registered = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    from shopsense import cli as root

    register(root.app)
    root.main()
