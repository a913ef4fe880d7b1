"""The Kubeflow pipeline: the committed YAML is current, the GPU/secret/retry settings are in
it, it runs end to end through kfp.local, and submission speaks KFP's v2beta1 REST API."""

import json
from pathlib import Path

import pytest
import yaml

from pipelines.review_pipeline import MANIFEST, PIPELINE_NAME, compile_pipeline
from tests.pipelines.kfp_stub import kfp_stub_server


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_the_cluster_provides_what_the_steps_read():
    """kind-addons creates, in the pipeline namespace, the ConfigMap, the Secret keys and the
    data volume the compiled steps refer to."""
    from pipelines.review_pipeline import CONFIG_MAP, DATA_PVC, MINIO_SECRET

    root = MANIFEST.parents[2]
    docs = {d["kind"]: d for d in _docs(root / "manifests" / "kind" / "pipeline.yaml")}
    assert docs["ConfigMap"]["metadata"] == {"name": CONFIG_MAP[0], "namespace": "kubeflow"}
    assert set(docs["ConfigMap"]["data"]) == set(CONFIG_MAP[1])
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == DATA_PVC[0]
    assert docs["PersistentVolumeClaim"]["spec"]["volumeName"] == docs["PersistentVolume"][
        "metadata"]["name"]
    node = docs["PersistentVolume"]["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"]
    kind = yaml.safe_load((root / "kind-config.yaml").read_text())
    assert node == [f"{kind['name']}-worker"]  # the CPU worker (kind names workers in order)
    assert kind["nodes"][1]["labels"]["shopsense.io/pool"] == "cpu"
    make = (root / "Makefile").read_text()
    line = next(ln for ln in make.splitlines() if "-n kubeflow create secret" in ln)
    block = make[make.index(line):make.index("| $(KUBECTL) apply -f -", make.index(line))]
    assert f"generic {MINIO_SECRET[0]} " in block
    for key in MINIO_SECRET[1]:
        assert f"--from-literal={key}=" in block, key
    assert "docker cp $(SHARED_DATA)/. $(KIND_CLUSTER)-worker:/srv/shopsense-data" in make
    assert docs["PersistentVolume"]["spec"]["local"]["path"] == "/srv/shopsense-data"


def test_committed_pipeline_yaml_is_not_stale(tmp_path):
    fresh = compile_pipeline(tmp_path / "review-sentiment.yaml")
    assert MANIFEST.is_file(), "run `shopsense pipeline compile` and commit the YAML"
    assert fresh.read_text() == MANIFEST.read_text(), (
        "manifests/pipelines/review-sentiment.yaml is stale: run `shopsense pipeline compile`")


def test_pipeline_wiring_gpu_pool_secrets_and_retries():
    spec, platform = _docs(MANIFEST)
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    dag = spec["root"]["dag"]["tasks"]
    assert set(dag) == {"import-reviews", "scrape-reviews", "auto-label-reviews",
                        "synthesize-reviews", "validate-reviews", "assemble-training-data",
                        "train-model", "evaluate-model", "register-model"}
    # scrape + auto-label → synthesize → validate → (assemble) → train → evaluate → register
    assert set(dag["synthesize-reviews"]["dependentTasks"]) == {"scrape-reviews",
                                                                "auto-label-reviews"}
    assert set(dag["validate-reviews"]["dependentTasks"]) == {
        "import-reviews", "auto-label-reviews", "synthesize-reviews"}
    assert set(dag["assemble-training-data"]["dependentTasks"]) == {
        "import-reviews", "auto-label-reviews", "validate-reviews"}
    assert dag["auto-label-reviews"]["dependentTasks"] == ["scrape-reviews"]
    assert dag["auto-label-reviews"]["inputs"]["parameters"]["reviews_uri"][
        "componentInputParameter"] == "unlabelled_reviews"
    inputs = dag["assemble-training-data"]["inputs"]["artifacts"]
    assert inputs["synthetic"]["taskOutputArtifact"] == {"outputArtifactKey": "kept",
                                                         "producerTask": "validate-reviews"}
    assert inputs["heldout"]["taskOutputArtifact"]["producerTask"] == "import-reviews"
    assert set(dag["train-model"]["dependentTasks"]) == {"assemble-training-data",
                                                         "auto-label-reviews"}
    assert set(dag["register-model"]["dependentTasks"]) == {
        "evaluate-model", "import-reviews", "train-model"}
    # typed artifacts between the steps
    comps = spec["components"]
    arts = comps["comp-train-model"]["outputDefinitions"]["artifacts"]
    assert arts["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert arts["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert comps["comp-import-reviews"]["outputDefinitions"]["artifacts"]["train_data"][
        "artifactType"]["schemaTitle"] == "system.Dataset"
    # the pipeline UI gets a confusion matrix and a Markdown report; a scrape is never cached
    ev_out = comps["comp-evaluate-model"]["outputDefinitions"]["artifacts"]
    assert ev_out["confusion"]["artifactType"]["schemaTitle"] == "system.ClassificationMetrics"
    assert ev_out["summary"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert not dag["scrape-reviews"].get("cachingOptions", {}).get("enableCache")
    assert dag["train-model"]["cachingOptions"]["enableCache"] is True
    # nothing is pip-installed at run time
    for name, ex in spec["deploymentSpec"]["executors"].items():
        assert "pip install" not in json.dumps(ex), name
    # GPU steps: accelerator, node selector and toleration of the GPU pool
    train_ex = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert train_ex["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train_ex["resources"]["accelerator"]["resourceCount"] == "1"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for ex in ("exec-train-model", "exec-evaluate-model"):
        assert k8s[ex]["nodeSelector"]["labels"] == {"shopsense.io/gpu-pool": "true"}
        assert k8s[ex]["tolerations"][0]["key"] == "nvidia.com/gpu"
    # credentials from Secrets
    secrets = {s["secretName"]: s for s in k8s["exec-register-model"]["secretAsEnv"]}
    assert set(secrets) == {"shopsense-minio", "shopsense-mlflow"}
    assert secrets["shopsense-mlflow"]["optional"] is True  # MLflow without auth needs none
    for ex in k8s.values():  # every step reads the cluster's settings
        assert ex["configMapAsEnv"][0]["configMapName"] == "shopsense-pipeline"
    assert k8s["exec-train-model"]["secretAsEnv"][0]["secretName"] == "shopsense-minio"
    assert k8s["exec-scrape-reviews"]["secretAsEnv"][0]["secretName"] == "shopsense-minio"
    # the shared labelled sets, mounted where the step image looks for them
    for ex in ("exec-import-reviews", "exec-scrape-reviews", "exec-synthesize-reviews"):
        assert k8s[ex]["pvcMount"][0]["mountPath"] == "/data", ex
    assert "SHOPSENSE_DATA_DIR=/data" in (
        MANIFEST.parents[2] / "images" / "pipeline-step.Dockerfile").read_text()
    # retries on the flaky steps
    for task in ("import-reviews", "scrape-reviews", "auto-label-reviews", "synthesize-reviews",
                 "train-model", "register-model"):
        assert dag[task]["retryPolicy"]["maxRetryCount"] >= 2
    # ... the labels of kind's GPU node and the chart's GPU pool
    root = MANIFEST.parents[2]
    kind = yaml.safe_load((root / "kind-config.yaml").read_text())
    assert any(n.get("labels", {}).get("shopsense.io/gpu-pool") == "true"
               for n in kind["nodes"])
    chart = yaml.safe_load((root / "charts" / "shopsense" / "values.yaml").read_text())
    assert chart["gpuPool"]["nodeSelector"] == {"shopsense.io/gpu-pool": "true"}
    assert chart["gpuPool"]["tolerations"][0]["key"] == k8s["exec-train-model"][
        "tolerations"][0]["key"]
    # the step image is the one `make images` builds and loads into kind
    make = (MANIFEST.parents[2] / "Makefile").read_text()
    image = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert image == {"ghcr.io/shopsense/pipeline-step:0.1.0"}
    assert "IMAGE_PREFIX ?= ghcr.io/shopsense" in make and "IMAGE_TAG ?= 0.1.0" in make
    assert "-t $(IMAGE_PREFIX)/pipeline-step:$(IMAGE_TAG)" in make


@pytest.mark.slow
def test_pipeline_runs_end_to_end_locally(data_dir, tmp_path, monkeypatch,
                                         mlflow_uris_restored):
    """kfp.local runs each step as a subprocess of this virtualenv: import real reviews,
    scrape the demo shop with Chromium, synthesize, validate, assemble, Ray Train, evaluate,
    register in a fresh MLflow registry."""
    from pipelines.cli import LOCAL_ARGUMENTS, run_local
    from shopsense import registry
    from shopsense.settings import Settings, get_settings

    monkeypatch.setenv("SHOPSENSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPSENSE_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    args = {**LOCAL_ARGUMENTS, "train_sets": "uci-amazon,huliu", "heldout_sets": "uci-imdb",
            "max_train_per_set": 16, "max_heldout_per_set": 20, "max_length": 32,
            "batch_size": 8, "image_pool": 12, "floor_macro_f1": 0.0, "floor_accuracy": 0.0,
            "scrape_max_pages": 30, "synth_per_label": 6, "validate_features": "style",
            "demo_base_port": 0}
    try:
        out = run_local(args, pipeline_root=tmp_path / "runs")
        assert out == {"model": "shopsense-sentiment", "version": "1", "champion": True,
                       "reason": "no champion yet"}
        s = Settings()
        c = registry.client(s)
        mv = c.get_model_version(s.model_name, "1")
        assert {str(v) for v in c.get_registered_model(s.model_name).aliases.values()} == {"1"}
        assert len(mv.tags["dataset_digest"]) == 64 and mv.tags["git_commit"]
        # the model trained on what the data steps made: imported + scraped (through the
        # auto-label step, which labels what was scraped without a rating) + kept synthetic
        training, = (tmp_path / "runs").glob("*/assemble-training-data/training/manifest.json")
        manifest = json.loads(training.read_text())
        assert manifest["digest"] == mv.tags["dataset_digest"]
        parts = {p["part"]: p for p in manifest["provenance"][0]["parts"]}
        assert parts["imported"]["kept"] > 0 and parts["labelled"]["kept"] > 0
        assert parts["synthetic"]["kept"] > 0 and parts["synthetic"]["name"].endswith(
            "-validated")
        local = c.download_artifacts(mv.run_id, "evaluation_report.json", str(tmp_path))
        report = json.loads(Path(local).read_text())
        assert report["n"] == 20 and "ece" in report and "per_category" in report
        # the Ray Train checkpoints went to the object store
        assert list((tmp_path / "home" / "store" / "checkpoints").glob("*/checkpoint_*"))
    finally:
        get_settings.cache_clear()


def test_submit_creates_an_experiment_and_a_run_on_a_kfp_server(tmp_path):
    from typer.testing import CliRunner

    from shopsense.cli import _load_plugins, app

    _load_plugins()
    with kfp_stub_server() as (url, stub):
        res = CliRunner().invoke(app, ["pipeline", "submit", "--host", url, "--arg",
                                       "num_workers=4", "--arg", "recipe=full",
                                       "--run-name", "nightly"])
        assert res.exit_code == 0, res.output
        calls = [(r["method"], r["path"]) for r in stub.requests]
        assert ("POST", "/apis/v2beta1/experiments") in calls
        run = next(r["body"] for r in stub.requests
                   if (r["method"], r["path"]) == ("POST", "/apis/v2beta1/runs"))
        assert run["display_name"] == "nightly"
        assert run["experiment_id"] == next(iter(stub.experiments))
        assert run["runtime_config"]["parameters"] == {"num_workers": 4, "recipe": "full"}
        spec = run["pipeline_spec"]
        assert spec["pipeline_spec"]["pipelineInfo"]["name"] == PIPELINE_NAME
        assert "kubernetes" in spec["platform_spec"]["platforms"]
        run_id = next(iter(stub.runs))
        assert f"submitted run {run_id}" in res.output
        # a second submission reuses the experiment (found by its display name)
        res = CliRunner().invoke(app, ["pipeline", "submit", "--host", url])
        assert res.exit_code == 0 and len(stub.experiments) == 1 and len(stub.runs) == 2


@pytest.mark.parametrize("arg, message", [
    ("nonsense=1", "unknown pipeline argument 'nonsense'"),
    ("epochs=abc", "epochs wants float, got 'abc'"),
    ("num_workers=2.5", "num_workers wants integer"),
    ("use_gpu=maybe", "use_gpu wants boolean"),
    ("model_kind=bert", "model_kind must be one of compact, llava"),
    ("recipe=huge", "recipe must be one of"),
    ("train_sets=uci-amazon,no-such-set", "train_sets: unknown set no-such-set"),
    ("noequals", "--arg wants KEY=VALUE"),
    ("synth_image_fraction=1.5", "synth_image_fraction must be in [0.0, 1.0], got 1.5"),
    ("scrape_max_pages=0", "scrape_max_pages must be in [1, ∞], got 0"),
])
def test_bad_pipeline_arguments_are_one_clear_error_before_anything_runs(tmp_path, arg,
                                                                        message):
    from typer.testing import CliRunner

    from shopsense.cli import _load_plugins, app

    _load_plugins()
    for command in (["pipeline", "run", "--root", str(tmp_path / "runs")],
                    ["pipeline", "submit", "--host", "http://127.0.0.1:9"]):
        res = CliRunner().invoke(app, [*command, "--arg", arg])
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.replace("│", " ").split()), res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()


def test_arguments_take_the_parameters_types():
    from pipelines.cli import LOCAL_ARGUMENTS, _arguments
    from pipelines.review_pipeline import review_sentiment

    defaults = {k: v.default for k, v in review_sentiment.component_spec.inputs.items()}
    assert _arguments([], defaults) == defaults  # the pipeline's own defaults pass the checks

    out = _arguments(["epochs=3", "use_gpu=true", "train_sets=huliu", "scrape_seeds=",
                      "margin=0"], LOCAL_ARGUMENTS)
    assert out["epochs"] == 3.0 and isinstance(out["epochs"], float)
    assert out["use_gpu"] is True and out["train_sets"] == "huliu" and out["scrape_seeds"] == ""
    assert out["max_train_per_set"] == LOCAL_ARGUMENTS["max_train_per_set"]


@pytest.mark.slow
def test_a_failing_step_ends_the_local_run_with_one_line(data_dir, tmp_path, monkeypatch):
    from pipelines.cli import LOCAL_ARGUMENTS, PipelineFailed, run_local
    from shopsense.settings import get_settings

    monkeypatch.setenv("SHOPSENSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPSENSE_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    # the CLI refuses this value; the validate step (no retries) fails on it
    args = {**LOCAL_ARGUMENTS, "train_sets": "huliu", "heldout_sets": "uci-imdb",
            "max_train_per_set": 10, "max_heldout_per_set": 10, "scrape_max_pages": 10,
            "synth_per_label": 3, "validate_features": "bogus",
            "demo_base_port": 0}
    try:
        with pytest.raises(PipelineFailed) as err:
            run_local(args, pipeline_root=tmp_path / "runs")
    finally:
        get_settings.cache_clear()
    msg = str(err.value)
    assert "FAILURE" in msg and "'validate-reviews'" in msg and "\x1b" not in msg
    assert "\n" not in msg
    # nothing was trained or registered
    assert not list((tmp_path / "runs").glob("*/train-model"))
    assert not (tmp_path / "home" / "mlflow.db").exists()
