"""Automatic labels: the LLM and the champion pooled, confident labels only, provenance."""

import numpy as np
import pytest

from pipelines.label.run import AutoLabelConfig, auto_label, run_auto_label
from shopsense.data.dataset import read_dataset, write_dataset
from shopsense.schemas import Review, Source
from shopsense.store import LocalStore


def _r(i, text, **kw):
    return Review.make(source=Source(kind="imported", name="handed-in", source_id=str(i)),
                       text=text, **kw)


class Table:
    """A labeller whose answers are given per text (the pooling logic under test)."""

    identity = "table@test"

    def __init__(self, rows):
        self.rows, self.asked = rows, []

    def proba(self, texts, cache=None):
        self.asked.extend(texts)
        return np.array([self.rows[t] for t in texts])


def test_pooling_thresholds_ratings_and_sources():
    reviews = [_r(0, "a"), _r(1, "b"), _r(2, "c"), _r(3, "d", rating=5.0),
               _r(4, "e", label="negative", label_source="human")]
    llm = Table({"a": [0.02, 0.01, 0.97], "b": [0.6, 0.1, 0.3], "c": [0.05, 0.05, 0.9]})
    champion = {"a": [0.1, 0.1, 0.8], "b": [0.5, 0.2, 0.3], "c": [0.9, 0.05, 0.05]}
    out, rep = auto_label(reviews, AutoLabelConfig(min_confidence=0.9, llm_weight=0.75),
                          llm=llm, champion=lambda ts: np.array([champion[t] for t in ts]))
    a, b, c, d, e = out
    assert (a.label, a.label_source) == ("positive", "ensemble") and a.label_confidence > 0.9
    assert b.label is None and b.label_source is None  # nobody is sure: stays unlabelled
    assert c.label is None  # the two disagree: the pool is not confident
    assert (d.label, d.label_source) == ("positive", "rating")
    assert (e.label, e.label_source) == ("negative", "human")
    assert rep.to_label == 3 and rep.labelled == {"ensemble": 1, "llm": 0, "model": 0}
    assert rep.coverage == pytest.approx(1 / 3, abs=1e-3) and rep.from_rating == 1


def test_an_llm_budget_reads_the_least_certain_first():
    reviews = [_r(i, t) for i, t in enumerate("abc")]
    champion = {"a": [0.01, 0.01, 0.98], "b": [0.4, 0.2, 0.4], "c": [0.2, 0.1, 0.7]}
    llm = Table({t: [0.98, 0.01, 0.01] for t in "abc"})
    out, rep = auto_label(reviews, AutoLabelConfig(llm_budget_s=1e-9), llm=llm,
                          champion=lambda ts: np.array([champion[t] for t in ts]))
    assert llm.asked == ["b"] and rep.llm_read == 1  # the budget ends after the first read
    assert [(r.label, r.label_source) for r in out] == [
        ("positive", "model"), ("negative", "ensemble"), (None, None)]


def test_run_auto_label_with_the_real_llm_and_champion(smol_llm_env, registered_model, tmp_path):
    store = LocalStore(tmp_path)
    texts = ["Broke after a day, total junk, returned it.", "Absolutely love it, works great!",
             "It arrived on Tuesday.", "Worst purchase ever. Avoid."]
    write_dataset(store, "in", [_r(i, t) for i, t in enumerate(texts)], name="handed-in")
    report = run_auto_label((tmp_path / "in").as_uri(), (tmp_path / "out").as_uri(),
                            AutoLabelConfig(min_confidence=0.5))
    manifest, reviews = read_dataset(store, "out")
    reviews = list(reviews)
    assert len(reviews) == 4 and report.to_label == 4 and report.llm_read == 4
    assert report.teacher == f"{smol_llm_env.model}@127.0.0.1"  # as its URL names it
    assert report.champion == f"shopsense-sentiment/{registered_model['version']}"
    for r in reviews:
        assert (r.label is None) == (r.label_source is None)
        if r.label:
            assert r.label_source == "ensemble" and 0.5 <= r.label_confidence <= 1
    assert manifest.provenance[-1]["step"] == "auto_label"
    # the LLM's labels went to the teacher cache: a second run asks it nothing new
    again = run_auto_label((tmp_path / "in").as_uri(), (tmp_path / "out2").as_uri(),
                           AutoLabelConfig(min_confidence=0.5))
    assert again.labelled == report.labelled
