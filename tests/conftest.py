"""Shared fixtures: an isolated SHOPSENSE_HOME, the real shared data, a tiny trained model.

The tiny model goes through the real training loop (real MiniLM + LoRA, real EfficientNet
features, real MLflow registry on sqlite) on a few dozen reviews, so the code paths are the
production ones; only the sizes are small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _data_dir() -> Path | None:
    from shopsense.settings import Settings

    d = Path(os.environ.get("SHOPSENSE_DATA_DIR") or Settings().data_dir)
    return d if (d / "uci-sentiment-labelled-sentences").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("the shared review data (../shared/data) is not on this machine")
    return d


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    """One SHOPSENSE_HOME for the session (registry, caches), outside the project tree."""
    h = tmp_path_factory.mktemp("shopsense-home")
    os.environ["SHOPSENSE_HOME"] = str(h)
    from shopsense.settings import get_settings

    get_settings.cache_clear()
    return h


@pytest.fixture(scope="session")
def tiny_train_result(home, data_dir, tmp_path_factory):
    from shopsense.model.train import TrainConfig, train

    cfg = TrainConfig(
        data_dir=data_dir,
        output_dir=tmp_path_factory.mktemp("bundle") / "tiny",
        train_sets=["uci-amazon", "huliu"],
        eval_sets=["uci-imdb"],
        max_train_per_set=40,
        max_eval_per_set=40,
        epochs=1,
        batch_size=16,
        max_length=32,
        image_pool=12,
        progress=False,
    )
    return train(cfg)


@pytest.fixture(scope="session")
def registered_model(home, tiny_train_result):
    """The tiny model registered as a champion in the session's MLflow (sqlite)."""
    from shopsense import registry
    from shopsense.settings import get_settings

    r = tiny_train_result
    return registry.log_and_register(
        get_settings(), bundle_dir=r.bundle_dir, params=r.params, metrics=r.metrics,
        evaluation=r.evaluation, eval_records=r.eval_records,
    )


@pytest.fixture()
def mlflow_uris_restored():
    """MLflow's process-global tracking and registry URIs (and the environment variables
    ``mlflow.set_registry_uri`` exports) as they were before the test."""
    import mlflow

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: os.environ.get(k) for k in keys}
    tracking, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry_uri)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def smol_llm():
    """The real llama.cpp OpenAI-compatible server with SmolLM2-135M (weak, fast: for the
    mechanics), started once for the session."""
    from shopsense.llm.server import EmbeddedServer
    from shopsense.llm.weights import embedded_model

    with EmbeddedServer(embedded_model("smollm2-135m-instruct-q4_1"), threads=1,
                        context=1024) as endpoint:
        yield endpoint


@pytest.fixture()
def smol_llm_env(smol_llm, monkeypatch):
    """Settings that point every LLM user at the session's SmolLM2 server."""
    from shopsense.settings import get_settings

    monkeypatch.setenv("SHOPSENSE_LLM_BASE_URL", smol_llm.base_url)
    monkeypatch.setenv("SHOPSENSE_LLM_MODEL", smol_llm.model)
    get_settings.cache_clear()
    yield smol_llm
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def mlflow_server_url(tmp_path_factory):
    """A real ``mlflow server`` whose tracking and registry store is a real PostgreSQL 15, both
    started on 127.0.0.1 by the tests (what a cluster runs; sqlite stays the embedded default).
    ``make test`` installs PostgreSQL when it is missing and requires it here."""
    from tests.servers import ServerDidNotStart, mlflow_on_postgres, postgres_bin

    if postgres_bin() is None:
        msg = "PostgreSQL 15 (initdb, postgres) is not installed: run `make postgres`"
        if os.environ.get("SHOPSENSE_REQUIRE_POSTGRES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        with mlflow_on_postgres(tmp_path_factory.mktemp("mlflow-pg")) as url:
            yield url
    except ServerDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture()
def redis_url():
    """A fresh real ``redis-server`` on 127.0.0.1 (the response cache's tests): its URL and
    process (a test may stop it). ``make test`` installs Debian's package and requires it."""
    from tests.servers import ServerDidNotStart, redis_bin, redis_server

    if redis_bin() is None:
        msg = "redis-server is not installed: run `make redis`"
        if os.environ.get("SHOPSENSE_REQUIRE_REDIS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        with redis_server() as (url, proc):
            yield url, proc
    except ServerDidNotStart as exc:
        pytest.fail(str(exc))


# -- leaving the test process ----------------------------------------------------------------
# Native libraries loaded side by side in this one process (torch's and ONNX Runtime's /
# OpenVINO's thread pools among them) can crash in their atexit teardown after every test has
# passed (seen as a segfault of the whole run, exit 139, after "N passed"). The verdict is
# known by then: the process leaves with pytest's own exit status, skipping that teardown.
_SESSION: list = []


def pytest_sessionfinish(session, exitstatus):
    _SESSION.append(session)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _SESSION and os.environ.get("SHOPSENSE_TESTS_HARD_EXIT", "1") == "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(_SESSION[0].exitstatus))
