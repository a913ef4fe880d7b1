"""The Classifier deployment on a real Ray Serve (in this process): one item the model cannot
take, batched by ``@serve.batch`` with good ones, fails its own call alone."""

import os

import pytest

from services.inference.backends.base import ClassifierInput

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier(tiny_train_result, home):
    import ray
    from ray import serve

    from services.inference.app import AppArgs, Classifier

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        args = AppArgs(model_uri=str(tiny_train_result.bundle_dir), batching=True,
                       batch_max_size=8, batch_wait_timeout_s=0.5,
                       settings_env={"SHOPSENSE_HOME": str(home)})
        handle = serve.run(Classifier.options(num_replicas=1).bind(args.model_dump()),
                           name="batch-test", route_prefix=None)
        yield handle
    finally:
        serve.shutdown()
        ray.shutdown()


def test_a_bad_item_in_a_serve_batch_fails_alone(classifier):
    items = [ClassifierInput(text=f"good product number {i}") for i in range(4)]
    # a lone surrogate: the real tokenizer raises TypeError on it (the API refuses it at the
    # edge; here it reaches the replica, as any input the model cannot take would)
    items.insert(2, ClassifierInput(text="bad \ud800 text"))
    responses = [classifier.predict.remote(i) for i in items]  # all in flight at once
    results = []
    for r in responses:
        try:
            results.append(r.result(timeout_s=120))
        except Exception as exc:  # noqa: BLE001 - the one expected failure
            results.append(exc)
    assert isinstance(results[2], Exception) and "TypeError" in str(results[2])
    good = [r for i, r in enumerate(results) if i != 2]
    assert all(not isinstance(r, Exception) for r in good), good
    # the bad item shared a batch (batch wait 0.5 s): that batch raised and its items were run
    # alone, so its good items report batches of one; items that came later may batch together
    stats = classifier.batcher_stats.remote().result(timeout_s=60)
    assert stats["isolated_failures"] >= 1, stats
    assert stats["items"] == len(items) and stats["batches"] < len(items), stats
