"""Adversarial validation: discriminator AUC, rejection until the AUC nears 0.5 or the floor,
label consistency, duplicates, length and language gates, outputs in the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.validate.run import ValidateConfig, discriminator_auc, run_validate
from shopsense.data.dataset import read_dataset, write_dataset
from shopsense.data.loaders import load_set
from shopsense.schemas import Review, Source
from shopsense.store import LocalStore


def _synthetic(texts_labels):
    return [Review.make(source=Source(kind="synthetic", name="t", source_id=str(i),
                                      generator="test"), text=t, label=lbl)
            for i, (t, lbl) in enumerate(texts_labels)]


def test_discriminator_auc_is_half_for_identical_distributions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = np.array([0] * 100 + [1] * 100)
    auc, p = discriminator_auc(X, y, folds=5, seed=0)
    assert 0.3 < auc < 0.7 and p.shape == (200,)
    X[100:, 0] += 5
    assert discriminator_auc(X, y, folds=5, seed=0)[0] > 0.95


def test_validate_rejects_easy_fakes_and_reports(tmp_path, data_dir):
    real = [r for r in load_set("blitzer-electronics", data_dir)][:400]
    # half the synthetic set looks like real reviews (real texts, lightly edited), half is
    # obviously machine-made; plus one of each gate's failure
    mimic = [(" ".join(r.text.split()[::-1][:60][::-1]) + " Overall fine.", r.label)
             for r in load_set("blitzer-books", data_dir)[:60]]
    fake = [(f"PRODUCT {i} IS GOOD!!! BUY NOW!!! 5 STARS!!! {i * 7}", "positive")
            for i in range(40)]
    gates = [("ok", "positive"),  # length
             ("zzzz qqqq vvvv kkkk xxxx pppp wwww", "negative"),  # language
             (real[0].text, real[0].label),  # exact duplicate of a real review
             ("This is the best purchase I ever made, wonderful, perfect, I love it so much, "
              "fantastic quality and great value.", "negative")]  # label contradicts the text
    syn = _synthetic(mimic + fake + gates)
    store = LocalStore(tmp_path)
    write_dataset(store, "syn", syn, name="syn")
    write_dataset(store, "real", real, name="real")
    cfg = ValidateConfig(text_features="style", target_auc=0.65, reject_step=0.1,
                         min_keep_fraction=0.4)
    rep = run_validate((tmp_path / "real").as_uri(), (tmp_path / "syn").as_uri(),
                       (tmp_path / "kept").as_uri(), cfg)
    assert rep.synthetic == len(syn) and rep.kept + rep.rejected == len(syn)
    for reason in ("length", "language", "duplicate", "label", "adversarial"):
        assert rep.rejected_by_reason.get(reason, 0) >= 1, (reason, rep.rejected_by_reason)
    assert rep.auc_before > 0.8 and rep.auc_after < rep.auc_before
    _, kept = read_dataset(store, "kept")
    kept_texts = [r.text for r in kept]
    assert sum("BUY NOW" in t for t in kept_texts) < 10  # the easy fakes went first
    rejected = [json.loads(line) for line in
                store.get_bytes("kept-rejected/rejected.jsonl").decode().splitlines()]
    assert len(rejected) == rep.rejected and {r["reason"] for r in rejected} >= {"adversarial"}
    report = json.loads(store.get_bytes("kept/report.json"))
    assert report["auc_before"] == rep.auc_before


@pytest.mark.slow
def test_validate_with_minilm_embeddings(tmp_path, data_dir):
    syn = _synthetic([(f"Great item number {i}, works as described, would buy again.",
                       "positive") for i in range(24)])
    store = LocalStore(tmp_path)
    write_dataset(store, "syn", syn, name="syn")
    rep = run_validate("blitzer-electronics", (tmp_path / "syn").as_uri(),
                       (tmp_path / "kept").as_uri(),
                       ValidateConfig(max_real=48, min_keep_fraction=0.5, folds=3,
                                      reject_step=0.25), data_dir=data_dir)
    assert "minilm" in rep.features and rep.auc_before > 0.9
    assert rep.kept >= 12  # the floor holds even when the AUC stays high
