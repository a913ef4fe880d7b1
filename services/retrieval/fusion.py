"""Rank fusion, as pure functions over ranked lists.

A ranking is a sequence of ``(id, score)`` pairs, best first (scores are only read by the
weighted method). ``rankings`` maps a list name (``dense``, ``sparse``, ``image``) to its ranking;
``weights`` maps the same names to non-negative weights (missing names weigh 1).

* :func:`rrf`, reciprocal rank fusion (Cormack et al. 2009):
  ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks, over the lists that contain
  ``d``; ``k`` (default 60) damps the head of each list. With all weights 1 this is plain RRF.
* :func:`weighted`: each list's scores are min-max normalised to [0, 1] (a list whose scores are
  all equal, e.g. a single hit, normalises to 1.0), then
  ``score(d) = sum_i w_i * norm_i(d) / sum_i w_i`` over the non-empty lists (a list without
  ``d`` contributes 0), so fused scores stay in [0, 1].

Both return ``[(id, fused score)]`` sorted by score, ties broken by the best rank the id has in
any list, then by id, so the order is deterministic. An id repeated inside one list counts at
its first (best) position only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Ranking = Sequence[tuple[str, float]]

__all__ = ["FUSION_METHODS", "Ranking", "fuse", "rrf", "weighted"]

FUSION_METHODS: tuple[str, ...] = ("rrf", "weighted")


def _first_positions(ranking: Ranking) -> dict[str, tuple[int, float]]:
    """id -> (1-based rank, score) at its first occurrence."""
    out: dict[str, tuple[int, float]] = {}
    for rank, (doc_id, score) in enumerate(ranking, start=1):
        if doc_id not in out:
            out[doc_id] = (rank, float(score))
    return out


def _weight(weights: Mapping[str, float] | None, name: str) -> float:
    w = 1.0 if weights is None else float(weights.get(name, 1.0))
    if w < 0:
        raise ValueError(f"fusion weight of {name!r} must be >= 0, got {w}")
    return w


def _order(scores: dict[str, float], best_rank: dict[str, int]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], kv[0]))


def rrf(
    rankings: Mapping[str, Ranking], *, k: int = 60, weights: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ``rankings`` (see the module docstring)."""
    if k < 1:
        raise ValueError(f"RRF rank constant must be >= 1, got {k}")
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    for name, ranking in rankings.items():
        w = _weight(weights, name)
        for doc_id, (rank, _score) in _first_positions(ranking).items():
            scores[doc_id] = scores.get(doc_id, 0.0) + w / (k + rank)
            best[doc_id] = min(best.get(doc_id, rank), rank)
    return _order(scores, best)


def weighted(
    rankings: Mapping[str, Ranking], *, weights: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """Weighted sum of min-max normalised scores (see the module docstring)."""
    positions = {name: _first_positions(r) for name, r in rankings.items()}
    live = {name: pos for name, pos in positions.items() if pos}
    total = sum(_weight(weights, name) for name in live)
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    for name, pos in live.items():
        w = _weight(weights, name)
        values = [s for _, s in pos.values()]
        lo, hi = min(values), max(values)
        for doc_id, (rank, score) in pos.items():
            norm = 1.0 if hi == lo else (score - lo) / (hi - lo)
            contrib = (w * norm / total) if total > 0 else 0.0
            scores[doc_id] = scores.get(doc_id, 0.0) + contrib
            best[doc_id] = min(best.get(doc_id, rank), rank)
    return _order(scores, best)


def fuse(
    rankings: Mapping[str, Ranking],
    method: str = "rrf",
    *,
    rrf_k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Dispatch on ``method`` (``rrf`` | ``weighted``)."""
    if method == "rrf":
        return rrf(rankings, k=rrf_k, weights=weights)
    if method == "weighted":
        return weighted(rankings, weights=weights)
    raise ValueError(f"unknown fusion method {method!r}; choose rrf or weighted")
