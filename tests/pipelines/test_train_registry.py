"""The promotion gate: challenger alias, margin, absolute floors and ceilings, provenance
tags; and the calibration figure of the evaluation report."""

import json

import numpy as np
import pytest

from shopsense import registry
from shopsense.model.train import calibration, evaluation_report
from shopsense.settings import Settings


@pytest.fixture()
def fresh_settings(tmp_path):
    return Settings(home=tmp_path / "home")


def _register(settings, result, metrics, **kw):
    return registry.log_and_register(
        settings, bundle_dir=result.bundle_dir, params=result.params,
        metrics={**result.metrics, **metrics}, evaluation=result.evaluation,
        eval_records=result.eval_records, challenger=True, **kw)


def test_champion_moves_only_past_the_margin_and_the_floors(fresh_settings, tiny_train_result):
    s, r = fresh_settings, tiny_train_result
    policy = registry.PromotionPolicy(margin=0.01, floors={"eval_accuracy": 0.6},
                                      ceilings={"eval_ece": 0.3})
    ok = {"eval_accuracy": 0.8, "eval_ece": 0.1}
    v1 = _register(s, r, {**ok, "eval_macro_f1": 0.70}, policy=policy,
                   dataset_digest="d" * 64)
    assert v1["promote"] and v1["reason"] == "no champion yet"
    v2 = _register(s, r, {**ok, "eval_macro_f1": 0.705}, policy=policy)
    assert not v2["promote"]
    assert "does not beat champion v1 0.7000 by more than 0.0100" in v2["reason"]
    c = registry.client(s)
    aliases = c.get_registered_model(s.model_name).aliases  # challenger: the newest version
    assert {k: str(v) for k, v in aliases.items()} == {"champion": v1["version"],
                                                       "challenger": v2["version"]}
    v3 = _register(s, r, {**ok, "eval_macro_f1": 0.95, "eval_accuracy": 0.5}, policy=policy)
    assert not v3["promote"]
    assert v3["reason"] == f"v{v3['version']} fails the absolute floors: " \
                           "eval_accuracy=0.5000 below floor 0.6000"
    v4 = _register(s, r, {**ok, "eval_macro_f1": 0.95, "eval_ece": 0.4}, policy=policy)
    assert not v4["promote"] and "eval_ece=0.4000 above ceiling 0.3000" in v4["reason"]
    v5 = _register(s, r, {**ok, "eval_macro_f1": 0.72}, policy=policy)
    assert v5["promote"] and v5["previous"] == v1["version"]

    aliases = c.get_registered_model(s.model_name).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": v5["version"],
                                                       "challenger": v5["version"]}
    # why not, recorded on the version
    mv3 = c.get_model_version(s.model_name, v3["version"])
    assert mv3.tags["champion_decision"] == v3["reason"]
    assert json.loads(mv3.tags["promotion_policy"])["floors"] == {"eval_accuracy": 0.6}
    # provenance on the run and the version
    mv1 = c.get_model_version(s.model_name, v1["version"])
    assert mv1.tags["dataset_digest"] == "d" * 64
    assert mv1.tags["git_commit"] == v1["git_commit"] != ""
    run = c.get_run(mv1.run_id)
    assert run.data.tags["git_commit"] == v1["git_commit"]
    assert run.data.tags["dataset_digest"] == "d" * 64


def test_source_commit_reads_the_git_folder_without_git(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOPSENSE_GIT_COMMIT", raising=False)
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    (tmp_path / "repo" / "pkg").mkdir()
    assert registry.source_commit(tmp_path / "repo" / "pkg") == "a" * 40
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text("# pack-refs\n" + "b" * 40 + " refs/heads/main\n")
    assert registry.source_commit(tmp_path / "repo") == "b" * 40
    monkeypatch.setenv("SHOPSENSE_GIT_COMMIT", "c" * 40)
    assert registry.source_commit(tmp_path) == "c" * 40


def test_calibration_error_and_the_report_figures():
    # confident and right -> ECE 0; 0.9 confident and half right -> |0.5 - 0.9| = 0.4
    right = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert calibration(right, ["positive", "negative"], ["negative", "positive"])["ece"] == 0
    half = np.array([[0.1, 0.0, 0.9], [0.1, 0.0, 0.9]])
    cal = calibration(half, ["positive", "negative"], ["negative", "positive"])
    assert cal["ece"] == pytest.approx(0.4) and cal["bins"][0]["n"] == 2
    rows = [{"text": "a", "label": "positive", "category": "dvd", "set": "blitzer-dvd"},
            {"text": "b", "label": "negative", "category": "dvd", "set": "blitzer-dvd"},
            {"text": "c", "label": "positive", "category": "movies", "set": "uci-imdb"},
            {"text": "d", "label": "negative", "category": "movies", "set": "uci-imdb"}]
    proba = np.array([[0.1, 0.0, 0.9], [0.8, 0.0, 0.2], [0.3, 0.0, 0.7], [0.4, 0.0, 0.6]])
    rep = evaluation_report(rows, proba)
    assert rep["n"] == 4 and rep["accuracy"] == 0.75
    assert set(rep["per_class"]) == {"negative", "positive"}  # per label
    assert rep["per_category"]["dvd"]["accuracy"] == 1.0
    assert rep["per_category"]["movies"]["accuracy"] == 0.5
    assert 0 < rep["per_category"]["movies"]["ece"] and 0 <= rep["ece"] <= 1
    assert rep["per_set"]["uci-imdb"]["ece"] == pytest.approx(
        calibration(proba[2:], ["positive", "negative"], ["negative", "positive"])["ece"])
