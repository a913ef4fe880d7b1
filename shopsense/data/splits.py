"""Seeded splits of review sets that do not depend on the order reviews were read in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal, TypeVar

from shopsense.schemas import Review

R = TypeVar("R", bound=Review)

__all__ = ["seeded_half"]


def seeded_half(reviews: Sequence[R], half: Literal["a", "b"], seed: int = 7) -> list[R]:
    """Half ``a`` or ``b`` of ``reviews`` (per label, so both halves keep the label mix), in
    the order of a seeded hash of each review's id: the same review always lands in the same
    half, whatever else the list holds."""
    def rank(r: R) -> bytes:
        return hashlib.sha256(f"{seed}:{r.id}".encode()).digest()

    by_label: dict[str | None, list[R]] = {}
    for r in reviews:
        by_label.setdefault(r.label, []).append(r)
    out: list[R] = []
    for group in by_label.values():
        ranked = sorted(group, key=rank)
        cut = (len(ranked) + 1) // 2
        out.extend(ranked[:cut] if half == "a" else ranked[cut:])
    # One seeded order across labels, so that any prefix (``half[:n]``) keeps the label mix
    # too (grouped by label, the first n of a half were all of one label).
    return sorted(out, key=rank)
