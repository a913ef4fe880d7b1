"""Seeded halves: disjoint, covering, stable, and mixed by label in any prefix."""

from __future__ import annotations

from shopsense.data.splits import seeded_half
from shopsense.schemas import Review, Source

SRC = Source(kind="imported", name="test")


def _reviews(n_neg: int, n_pos: int) -> list[Review]:
    return ([Review(id=f"n{i}", text=f"bad {i}", label="negative", source=SRC) for i in range(n_neg)]
            + [Review(id=f"p{i}", text=f"good {i}", label="positive", source=SRC) for i in range(n_pos)])


def test_halves_are_disjoint_cover_the_set_and_keep_each_label_half():
    reviews = _reviews(101, 60)
    a, b = seeded_half(reviews, "a"), seeded_half(reviews, "b")
    assert {r.id for r in a}.isdisjoint(r.id for r in b)
    assert {r.id for r in a} | {r.id for r in b} == {r.id for r in reviews}
    assert sum(r.label == "negative" for r in a) == 51
    assert sum(r.label == "positive" for r in a) == 30


def test_the_split_does_not_depend_on_order_or_the_other_reviews():
    reviews = _reviews(40, 40)
    a = [r.id for r in seeded_half(reviews, "a")]
    assert [r.id for r in seeded_half(list(reversed(reviews)), "a")] == a
    assert seeded_half(reviews, "a", seed=8) != seeded_half(reviews, "a")


def test_a_prefix_of_a_half_keeps_the_label_mix():
    """The cold-start benchmark's --max-input takes the first N of half A: grouped by label,
    those were all negative."""
    head = seeded_half(_reviews(500, 500), "a")[:100]
    negatives = sum(r.label == "negative" for r in head)
    assert 30 <= negatives <= 70
