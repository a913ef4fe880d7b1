import pytest

from shopsense import registry
from shopsense.errors import ModelNotFound
from shopsense.settings import Settings


@pytest.fixture()
def fresh_settings(tmp_path):
    return Settings(home=tmp_path / "home")


def _register(settings, result, f1, records=None):
    metrics = {**result.metrics, "eval_macro_f1": f1}
    return registry.log_and_register(
        settings, bundle_dir=result.bundle_dir, params=result.params, metrics=metrics,
        evaluation=result.evaluation, eval_records=records or result.eval_records,
    )


def test_champion_moves_only_when_beaten_on_the_same_data(fresh_settings, tiny_train_result):
    s, r = fresh_settings, tiny_train_result
    v1 = _register(s, r, 0.70)
    assert v1["promote"] and v1["reason"] == "no champion yet"
    v2 = _register(s, r, 0.65)
    assert not v2["promote"] and "does not beat champion v1" in v2["reason"]
    v3 = _register(s, r, 0.75)
    assert v3["promote"] and v3["previous"] == v1["version"]
    assert registry.resolve(s).version == v3["version"]
    rows = registry.list_versions(s)
    assert [x["aliases"] for x in rows] == [[], [], ["champion"]]
    assert "does not beat" in rows[1]["decision"]


def test_other_held_out_data_is_rescored_or_not_compared(fresh_settings, tiny_train_result):
    s, r = fresh_settings, tiny_train_result
    _register(s, r, 0.7)
    other = [{"text": "x", "label": "positive"}]
    out = _register(s, r, 0.9, records=other)
    assert not out["promote"] and "scored on other data" in out["reason"]
    calls = []

    def scorer(bundle):
        calls.append(bundle)
        return {"macro_f1": 0.5}

    out = registry.log_and_register(
        s, bundle_dir=r.bundle_dir, params=r.params,
        metrics={**r.metrics, "eval_macro_f1": 0.6}, evaluation=r.evaluation,
        eval_records=other, champion_scorer=scorer,
    )
    assert calls and out["promote"] and out["champion_score"] == 0.5


def test_resolve_downloads_a_bundle_and_rejects_bad_uris(fresh_settings, tiny_train_result):
    s = fresh_settings
    v = _register(s, tiny_train_result, 0.7)
    res = registry.resolve(s, f"models:/shopsense-sentiment/{v['version']}")
    assert (res.bundle_dir / "shopsense_model.json").is_file() and res.version == v["version"]
    assert registry.resolve(s, str(res.bundle_dir)).version == "local"
    with pytest.raises(ModelNotFound, match="is not models:/"):
        registry.resolve(s, "s3://x/y")
    with pytest.raises(ModelNotFound, match="not in the registry"):
        registry.resolve(s, "models:/shopsense-sentiment@nope")
