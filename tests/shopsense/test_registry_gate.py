"""The champion gate on a real ``mlflow server`` backed by a real PostgreSQL 15 (both started on
127.0.0.1 by the tests): it fails closed when the champion cannot be read, and two versions
promoted at the same moment are compared with each other, so at most one of them wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shopsense import registry
from shopsense.settings import Settings
from tests.servers import free_port

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [{"text": "works well", "label": "positive"}, {"text": "broke", "label": "negative"}]


@pytest.fixture()
def bundle(tmp_path) -> Path:
    """A folder with a bundle marker: the gate reads tags, never the weights."""
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "shopsense_model.json").write_text("{}")
    return b


@pytest.fixture()
def server_settings(mlflow_server_url, tmp_path, mlflow_uris_restored) -> Settings:
    return Settings(home=tmp_path / "home", mlflow_tracking_uri=mlflow_server_url,
                    model_name=f"gate-{uuid.uuid4().hex[:8]}")


def register(settings: Settings, bundle: Path, f1: float) -> dict:
    return registry.log_and_register(
        settings, bundle_dir=bundle, params={"recipe": "test"},
        metrics={"eval_macro_f1": f1, "eval_accuracy": f1}, evaluation={"macro_f1": f1},
        eval_records=RECORDS)


def test_the_gate_runs_on_mlflow_over_postgresql(server_settings, bundle):
    s = server_settings
    v1 = register(s, bundle, 0.70)
    assert v1["promote"] and v1["reason"] == "no champion yet"
    v2 = register(s, bundle, 0.60)
    assert not v2["promote"] and "does not beat champion v1" in v2["reason"]
    c = registry.client(s)
    assert c.get_model_version_by_alias(s.model_name, "champion").version == v1["version"]
    # the lock is released: only the model itself is registered
    names = {m.name for m in c.search_registered_models(f"name LIKE '{s.model_name}%'")}
    assert names == {s.model_name}


def test_an_unreadable_champion_is_not_no_champion(monkeypatch, tmp_path, mlflow_uris_restored):
    """Nothing listens at the registry's address: the gate must not promote."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    s = Settings(home=tmp_path / "home",
                 mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    out = registry.decide_champion(s, version="7", score=0.99, digest="d", champion_scorer=None)
    assert out["promote"] is False
    assert "could not be read" in out["reason"] and out["previous"] is None


def test_a_missing_alias_or_model_is_no_champion(server_settings, bundle):
    s = server_settings
    out = registry.decide_champion(s, version="1", score=0.5, digest="d", champion_scorer=None)
    assert out == {"promote": True, "previous": None, "reason": "no champion yet"}
    registry.client(s).create_registered_model(s.model_name)  # registered, no alias yet
    out = registry.decide_champion(s, version="1", score=0.5, digest="d", champion_scorer=None)
    assert out["promote"] is True


# Two processes register a version each while a champion (0.70) exists. Each reads the champion
# and then waits (up to a few seconds) until the other has read it too, so without a lock both
# compare with the old champion and both move the alias.
_RACER = r"""
import json, os, sys, time
from pathlib import Path
import mlflow
from shopsense import registry
from shopsense.settings import Settings

me, other, f1, lag = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
real = mlflow.MlflowClient.get_model_version_by_alias

def slow_read(self, name, alias):
    mv = real(self, name, alias)
    Path(me).touch()
    deadline = time.monotonic() + 6
    while not Path(other).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(lag)  # the worse version moves the alias last
    return mv

mlflow.MlflowClient.get_model_version_by_alias = slow_read
s = Settings()
out = registry.log_and_register(
    s, bundle_dir=Path(os.environ["BUNDLE"]), params={}, metrics={"eval_macro_f1": f1},
    evaluation={}, eval_records=json.loads(os.environ["RECORDS"]))
print(json.dumps({"version": out["version"], "promote": out["promote"], "f1": f1,
                  "previous": out["previous"]}))
"""


def test_concurrent_promotions_do_not_both_win(server_settings, bundle, tmp_path):
    s = server_settings
    first = register(s, bundle, 0.70)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "SHOPSENSE_HOME": str(s.home), "SHOPSENSE_MLFLOW_TRACKING_URI": s.tracking_uri(),
           "SHOPSENSE_MODEL_NAME": s.model_name, "BUNDLE": str(bundle),
           "RECORDS": json.dumps(RECORDS), "PYTHONPATH": str(ROOT)}
    a, b = tmp_path / "a.read", tmp_path / "b.read"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(me), str(other), f1, lag],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other, f1, lag in ((a, b, "0.80", "0"), (b, a, "0.75", "1.5"))]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    champion = registry.client(s).get_model_version_by_alias(s.model_name, "champion")
    best = next(r for r in results if r["f1"] == 0.80)
    assert champion.version == best["version"], (results, champion.version)
    winners = [r for r in results if r["promote"]]
    # both may win only one after the other (the second beating the first), never both
    # against the same old champion
    if len(winners) == 2:
        assert {w["previous"] for w in winners} != {first["version"]}, results
