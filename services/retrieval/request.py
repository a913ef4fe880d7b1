"""The checks of a search request, in one place: the retriever, the CLI and the inference API all
call :func:`check_search` before anything is opened, loaded or fetched, so a bad request gets the
same answer wherever it comes in. ``cli=True`` names the fields as the command line spells them
(``--mode``, ``--rating-gte``, ``QUERY``); otherwise as the API and ``HybridRetriever.search``
do (``mode``, ``rating_gte``, ``query``). Every failure is an ``InvalidInput`` (HTTP 422, exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.retrieval.fusion import FUSION_METHODS
from services.retrieval.schema import MODES, Filters
from shopsense.errors import InvalidInput

__all__ = ["MAX_K", "SearchArgs", "check_search", "parse_filters"]

#: the most hits one search returns
MAX_K = 1000


@dataclass(frozen=True)
class SearchArgs:
    """A checked request: ``query`` stripped (``None`` when there is no text)."""

    query: str | None
    has_image: bool
    mode: str
    k: int
    fusion: str | None
    rerank: bool | None
    filters: Filters | None


def _flag(name: str, cli: bool) -> str:
    return "--" + name.replace("_", "-") if cli else name


def parse_filters(filters: Filters | Mapping[str, Any] | None, *, cli: bool = False
                  ) -> Filters | None:
    """``Filters`` from a mapping of its fields (``category``, ``label``, ``product``,
    ``rating_gte``, ``rating_lte``); the first problem becomes one ``InvalidInput``."""
    if filters is None or isinstance(filters, Filters):
        return filters
    if not isinstance(filters, Mapping):
        raise InvalidInput(f"filters must be an object, got {type(filters).__name__}")
    from pydantic import ValidationError

    try:
        return Filters(**filters)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = str(first.get("msg")).removeprefix("Value error, ")
        if cli:
            raise InvalidInput(f"{_flag(loc, True) if loc else 'filters'}: {msg}") from exc
        raise InvalidInput(f"invalid filter {loc or 'filters'}: {msg}") from exc


def check_search(
    query: str | None,
    *,
    has_image: bool = False,
    mode: str = "hybrid",
    k: int = 10,
    fusion: str | None = None,
    rerank: bool | None = None,
    filters: Filters | Mapping[str, Any] | None = None,
    max_chars: int | None = None,
    cli: bool = False,
) -> SearchArgs:
    """Check one search request (see the module docstring); returns it normalised."""
    if mode not in MODES:
        raise InvalidInput(f"{'--mode' if cli else 'unknown mode'} {mode!r}: choose "
                           f"{', '.join(MODES)}")
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"{_flag('k', cli)} must be between 1 and {MAX_K}, got {k}")
    if fusion is not None and fusion not in FUSION_METHODS:
        raise InvalidInput(f"{'--fusion' if cli else 'unknown fusion'} {fusion!r}: choose "
                           f"{' or '.join(FUSION_METHODS)}")
    if (cli and isinstance(filters, Mapping) and filters.get("rating_gte") is not None
            and filters.get("rating_lte") is not None
            and filters["rating_gte"] > filters["rating_lte"]):
        raise InvalidInput(f"--rating-gte {filters['rating_gte']:g} is above --rating-lte "
                           f"{filters['rating_lte']:g}")
    parsed = parse_filters(filters, cli=cli)
    text = (query or "").strip() or None
    q, img = ("a QUERY text", "an --image") if cli else ("a query text", "a query image")
    if text is None and not has_image:
        empty = "query is empty: " if query is not None and not cli else ""
        raise InvalidInput(f"{empty}give {q}, {img} or both")
    if text is not None and max_chars is not None and len(text) > max_chars:
        raise InvalidInput(f"query has {len(text)} characters; the limit is {max_chars}")
    if mode == "sparse" and text is None:
        raise InvalidInput(f"{'--mode sparse' if cli else 'sparse'} (BM25) search needs {q}")
    if mode == "sparse" and has_image:
        raise InvalidInput(f"{'--mode sparse' if cli else 'sparse'} (BM25) search cannot use "
                           f"{img.split(' ', 1)[1] if cli else 'an image'}; use hybrid or dense")
    if rerank and text is None:
        raise InvalidInput(f"{'--rerank' if cli else 'reranking'} needs {q}")
    return SearchArgs(query=text, has_image=has_image, mode=mode, k=k, fusion=fusion,
                      rerank=rerank, filters=parsed)
