"""Ray Train on a real local Ray instance: data-parallel workers, checkpoints in the object
store, resume after a worker dies; the tiny LlavaNext generative classifier through the same
loop."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.train.config import DistributedConfig, FaultInjection
from pipelines.train.distributed import ray_storage, train_distributed
from shopsense.model.train import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def _tiny(data_dir, out: Path, **kw) -> TrainConfig:
    return TrainConfig(data_dir=data_dir, output_dir=out, train_sets=["uci-amazon"],
                       eval_sets=["uci-imdb"], max_train_per_set=32, max_eval_per_set=20,
                       epochs=1, batch_size=8, max_length=32, image_pool=12, progress=False,
                       **kw)


def test_two_workers_resume_from_the_last_checkpoint_after_a_worker_dies(
        ray_local, data_dir, home, tmp_path):
    store = tmp_path / "store"
    marker = tmp_path / "worker-died"
    cfg = DistributedConfig(
        train=_tiny(data_dir, tmp_path / "bundle"), num_workers=2,
        checkpoint_uri=store.as_uri() + "/checkpoints", run_name="resume-test",
        checkpoint_every=2, max_failures=1,
        fault=FaultInjection(after_step=2, marker=str(marker)))
    result = train_distributed(cfg)

    died_after = int(marker.read_text())  # the worker really exited once, after step 2
    assert died_after == 2
    # The restarted workers continued from that checkpoint, not from step 0.
    assert result.resumed_from_step == died_after
    assert result.metrics["train_resumed_from_step"] == died_after
    # Checkpoints live in the object store under the run's name.
    run_dir = store / "checkpoints" / "resume-test"
    ckpts = sorted(p.name for p in run_dir.glob("checkpoint_*"))
    assert ckpts and Path(result.checkpoint_path).parent == run_dir
    assert (Path(result.checkpoint_path) / "state.pt").is_file()
    # The final bundle is the compact model's, evaluated like the core path's.
    assert (result.bundle_dir / "adapter").is_dir() and (result.bundle_dir / "head.pt").is_file()
    ev = result.evaluation
    assert ev["n"] == 20 and 0 <= ev["macro_f1"] <= 1 and 0 <= ev["ece"] <= 1
    assert result.num_workers == 2 and result.samples_per_second > 0
    assert result.train_result.metrics["eval_macro_f1"] == ev["macro_f1"]


def test_tiny_llava_next_trains_as_a_generative_classifier(ray_local, data_dir, home, tmp_path,
                                                           mlflow_uris_restored):
    from safetensors.torch import load_file

    from pipelines.train import llava

    cfg = DistributedConfig(model="llava", train=_tiny(data_dir, tmp_path / "llava"),
                            num_workers=1, checkpoint_uri=(tmp_path / "store").as_uri(),
                            checkpoint_every=2)
    result = train_distributed(cfg)
    bundle = result.bundle_dir
    meta = json.loads((bundle / "llava_bundle.json").read_text())
    assert meta["format"] == "shopsense-llava/1" and meta["model_source"] is None
    adapter = load_file(str(bundle / "adapter" / "adapter_model.safetensors"))
    lora_b = [float(t.abs().sum()) for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(n > 0 for n in lora_b)  # LoRA B starts at zero: it was trained
    assert any("language_model" in k and "q_proj" in k for k in adapter)
    assert any("multi_modal_projector" in k for k in adapter)
    assert result.evaluation["n"] == 20 and 0 <= result.evaluation["ece"] <= 1

    # The reloaded model reads the photo: the prompt's <image> expands to image features.
    model, processor, opts = llava.load_bundle(bundle)
    from PIL import Image

    img = Image.new("RGB", (90, 60), (200, 30, 30))
    enc = llava.encode(processor, [("arrived like this", img), ("great", None)], opts, "cpu")
    image_id = model.config.image_token_index
    assert int((enc["input_ids"][0] == image_id).sum()) > 0
    assert int((enc["input_ids"][1] == image_id).sum()) == 0
    proba = llava.predict_proba(model, processor, opts, ["arrived like this", "great"],
                                [img, None])
    assert proba.shape == (2, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)

    # The pipeline's evaluate and register steps take it: a version of
    # shopsense-sentiment-llava (not of the compact model's name), loadable as a pyfunc.
    _register_llava_through_the_pipeline_steps(bundle, result, tmp_path, data_dir, img)


def _register_llava_through_the_pipeline_steps(bundle, result, tmp_path, data_dir, img):
    import base64
    import io

    import mlflow
    import pandas as pd

    from pipelines import steps
    from shopsense import registry
    from shopsense.settings import Settings, get_settings

    model_dir = tmp_path / "llava-model"
    model_dir.mkdir()
    (model_dir / steps.TRAIN_JSON).write_text(json.dumps({
        "model_kind": "llava", "recipe": "tiny", "bundle": str(bundle),
        "params": result.params, "metrics": result.metrics, "dataset_digest": "0" * 64,
        "run_name": result.run_name}))
    old = {k: os.environ.get(k) for k in ("SHOPSENSE_HOME", "SHOPSENSE_DATA_DIR")}
    os.environ.update(SHOPSENSE_HOME=str(tmp_path / "home"), SHOPSENSE_DATA_DIR=str(data_dir))
    get_settings.cache_clear()
    try:
        steps.import_reviews(sets=["uci-imdb"], out_dir=tmp_path / "heldout", max_per_set=12,
                             seed=1, name="heldout")
        report = steps.evaluate_model(model_dir=model_dir, heldout_data=tmp_path / "heldout",
                                      report_path=tmp_path / "report.json")
        assert report["n"] == 12 and report["model_kind"] == "llava"
        out = steps.register_model(model_dir=model_dir, report_path=tmp_path / "report.json",
                                   heldout_data=tmp_path / "heldout")
        assert (out["name"], out["version"], out["promote"]) == (
            "shopsense-sentiment-llava", "1", True)
        s = Settings()
        c = registry.client(s)
        assert {m.name for m in c.search_registered_models()} == {"shopsense-sentiment-llava"}
        aliases = c.get_registered_model("shopsense-sentiment-llava").aliases
        assert {str(v) for v in aliases.values()} == {"1"}
        mlflow.set_tracking_uri(s.tracking_uri())
        model = mlflow.pyfunc.load_model("models:/shopsense-sentiment-llava/1")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        answer = model.predict(pd.DataFrame({"text": ["arrived like this", "great"],
                                             "image": [base64.b64encode(buf.getvalue()).decode(),
                                                       None]}))
        assert list(answer.columns) == ["label", "score_negative", "score_neutral",
                                        "score_positive"]
        assert set(answer["label"]) <= {"negative", "neutral", "positive"}

        # A second run scored on other held-out data: the champion (a LLaVA bundle) is
        # fetched back and re-scored on the same records before the gate decides.
        steps.import_reviews(sets=["uci-imdb"], out_dir=tmp_path / "heldout2", max_per_set=8,
                             seed=2, name="heldout")
        steps.evaluate_model(model_dir=model_dir, heldout_data=tmp_path / "heldout2",
                             report_path=tmp_path / "report2.json")
        again = steps.register_model(model_dir=model_dir, report_path=tmp_path / "report2.json",
                                     heldout_data=tmp_path / "heldout2", margin=0.01)
        assert (again["name"], again["version"], again["promote"]) == (
            "shopsense-sentiment-llava", "2", False)
        assert "does not beat champion v1" in again["reason"], again["reason"]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def test_s3_checkpoint_storage_uses_the_minio_settings(tmp_path):
    pytest.importorskip("moto")
    from tests.shopsense._s3 import moto_s3_server, new_s3_store

    with moto_s3_server() as settings:
        store = new_s3_store(settings)
        path, fs = ray_storage(f"{store.uri}/ckpt", settings)
        assert path == f"{store.bucket}/root/ckpt"
        with fs.open_output_stream(f"{path}/run/checkpoint_0/state.pt") as out:
            out.write(b"state")
        # written through Ray's filesystem, read back through the project's ObjectStore
        assert store.get_bytes("ckpt/run/checkpoint_0/state.pt") == b"state"
    path, fs = ray_storage((tmp_path / "x").as_uri())
    assert path == str(tmp_path / "x") and fs is None
    with pytest.raises(ValueError, match="file:///"):
        ray_storage("gs://bucket/x")
