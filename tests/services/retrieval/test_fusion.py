import math

import pytest

from services.retrieval.fusion import fuse, rrf, weighted


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def test_rrf_by_hand():
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    sparse = [("c", 12.0), ("a", 3.0)]
    out = dict(rrf({"dense": dense, "sparse": sparse}, k=60))
    assert close(out["a"], 1 / 61 + 1 / 62)
    assert close(out["b"], 1 / 62)
    assert close(out["c"], 1 / 63 + 1 / 61)
    assert [d for d, _ in rrf({"dense": dense, "sparse": sparse})] == ["a", "c", "b"]


def test_rrf_rank_constant_and_weights():
    lists = {"dense": [("a", 1.0), ("b", 0.5)], "sparse": [("b", 2.0), ("a", 1.0)]}
    # a tie at k=1 (1/2 + 1/3 each): broken by best rank, then id
    out = rrf(lists, k=1)
    assert [d for d, _ in out] == ["a", "b"] and close(out[0][1], out[1][1])
    out = dict(rrf(lists, k=1, weights={"dense": 2.0, "sparse": 1.0}))
    assert close(out["a"], 2 / 2 + 1 / 3) and close(out["b"], 2 / 3 + 1 / 2)
    with pytest.raises(ValueError):
        rrf(lists, k=0)
    with pytest.raises(ValueError):
        rrf(lists, weights={"dense": -1})


def test_rrf_ignores_scores_and_repeats():
    a = rrf({"x": [("a", -5.0), ("b", 100.0), ("a", 7.0)]}, k=10)
    assert [d for d, _ in a] == ["a", "b"]
    assert close(dict(a)["a"], 1 / 11)  # the repeat at rank 3 does not count


def test_weighted_by_hand():
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]      # norm: a 1, b .5, c 0
    sparse = [("c", 10.0), ("d", 6.0), ("a", 2.0)]    # norm: c 1, d .5, a 0
    out = dict(weighted({"dense": dense, "sparse": sparse}, weights={"dense": 3, "sparse": 1}))
    assert close(out["a"], (3 * 1 + 1 * 0) / 4)
    assert close(out["b"], 3 * 0.5 / 4)
    assert close(out["c"], (3 * 0 + 1 * 1) / 4)
    assert close(out["d"], 1 * 0.5 / 4)
    assert all(0 <= s <= 1 for s in out.values())


def test_weighted_degenerate_lists():
    # one hit, or all-equal scores, normalise to 1; an empty list does not count in the weights
    out = dict(weighted({"dense": [("a", 0.3)], "sparse": [], "image": [("a", 2.0), ("b", 2.0)]}))
    assert close(out["a"], 1.0) and close(out["b"], 0.5)
    assert weighted({"dense": [], "sparse": []}) == []
    assert weighted({"dense": [("a", 1.0)]}, weights={"dense": 0.0}) == [("a", 0.0)]


def test_fuse_dispatch_and_three_lists():
    lists = {"dense": [("a", 0.9)], "sparse": [("b", 3.0)], "image": [("a", 0.7), ("b", 0.6)]}
    assert fuse(lists, "rrf", rrf_k=60)[0][0] == "a"
    assert dict(fuse(lists, "rrf"))["b"] == pytest.approx(1 / 61 + 1 / 62)
    assert [d for d, _ in fuse(lists, "weighted")] == ["a", "b"]
    with pytest.raises(ValueError):
        fuse(lists, "borda")
