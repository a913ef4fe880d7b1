"""The Kubeflow pipeline ``review-sentiment``: scrape → auto-label → synthesize → validate →
train → evaluate → register.

Steps (components in :mod:`pipelines.components`, logic in :mod:`pipelines.steps`):

1. ``import-reviews`` — real labelled reviews from the shared sets, as two datasets: training
   and held-out (the held-out one is what evaluation and the champion gate score on).
2. ``scrape-reviews`` — the scraping agent (Playwright + Chromium, a bandit over sources that
   learns across runs from its state in the object store); with no seeds, the embedded demo
   shop. Everything scraped so far, as a dataset.
3. ``auto-label-reviews`` — the cold-start category's unlabelled reviews (the dataset URI
   ``unlabelled_reviews``; none by default) labelled by ratings, then by the LLM and the
   champion pooled (confident labels only, each with its source and confidence).
   ``synthesize-reviews`` — a balanced synthetic dataset for one category (the cold-start
   category), naming the products found; with ``synth_generator`` ``llm``/``auto`` the LLM
   writes the text in the style of the category's own reviews.
4. ``validate-reviews`` — adversarial validation of the synthetic reviews against the real
   ones (scraped and imported): kept and rejected datasets, a JSON report, the discriminator AUC.
5. ``assemble-training-data`` — imported + scraped + kept synthetic reviews, minus any review
   that (nearly) repeats a held-out one (the demo shop sells the held-out set's products) or
   an earlier one.
6. ``train-model`` — Ray Train + PEFT LoRA; the GPU step: one accelerator, the GPU node pool's
   node selector and toleration, MinIO credentials for checkpoints in the object store, retries
   (a retried attempt resumes from the run's last checkpoint: the Ray run is named after the
   pipeline job).
7. ``evaluate-model`` — the evaluation report on the held-out data (``Artifact``, JSON) and its
   figures (``Metrics``).
8. ``register-model`` — MLflow run, model version, alias ``challenger``, champion gate.

The steps that read the shared labelled sets (import, scrape's demo shop, synthesize's phrase
mining) find them at ``SHOPSENSE_DATA_DIR`` (``/data`` in the step image): a cluster mounts
the PersistentVolumeClaim ``DATA_PVC`` there.

Compile with ``shopsense pipeline compile`` (writes ``manifests/pipelines/review-sentiment.yaml``),
run locally with ``shopsense pipeline run`` (``kfp.local``), submit with
``shopsense pipeline submit --host URL``.
"""


from pathlib import Path
from typing import NamedTuple

from kfp import dsl, kubernetes

from pipelines import components as c

PIPELINE_NAME = "review-sentiment"
MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "pipelines" / (
    PIPELINE_NAME + ".yaml")

# The GPU node pool: the label kind-config.yaml puts on the GPU node and the chart's
# gpuPool.nodeSelector uses (a test keeps the three in step).
GPU_ACCELERATOR = "nvidia.com/gpu"
GPU_NODE_SELECTOR = ("shopsense.io/gpu-pool", "true")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Kubernetes Secrets (name -> {secret key: environment variable}), as `make kind-addons`
# creates them in the pipeline namespace (the same keys the chart's Secrets hold). MLflow's is
# optional: an MLflow without authentication needs none.
MINIO_SECRET = ("shopsense-minio", {k: k for k in (
    "SHOPSENSE_S3_ACCESS_KEY", "SHOPSENSE_S3_SECRET_KEY",  # the store (datasets, checkpoints)
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})  # MLflow's artifact uploads (boto3)
MLFLOW_SECRET = ("shopsense-mlflow", {k: k for k in (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
# Non-secret settings of every step in a cluster (store, MLflow, MinIO endpoints), from a
# ConfigMap (manifests/kind/pipeline.yaml). kfp.local ignores it: local runs keep local defaults.
CONFIG_MAP = ("shopsense-pipeline", ("SHOPSENSE_S3_ENDPOINT", "SHOPSENSE_STORE_URI",
                                     "SHOPSENSE_MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"))
# The shared labelled sets, read-only, where the step image looks for them (SHOPSENSE_DATA_DIR).
DATA_PVC = ("shopsense-data", "/data")


def _secret(task, secret: tuple[str, dict[str, str]], optional: bool = False):
    name, keys = secret
    return kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=keys,
                                        optional=optional)


def _settings(task):
    """Every step: the cluster's settings from the ConfigMap (kfp-kubernetes)."""
    name, keys = CONFIG_MAP
    return kubernetes.use_config_map_as_env(task, config_map_name=name,
                                            config_map_key_to_env={k: k for k in keys})


def _with_data(task):
    kubernetes.mount_pvc(task, pvc_name=DATA_PVC[0], mount_path=DATA_PVC[1])
    return task


def _on_gpu_pool(task, gpus: int = 1):
    task.set_accelerator_type(GPU_ACCELERATOR).set_accelerator_limit(gpus)
    kubernetes.add_node_selector(task, label_key=GPU_NODE_SELECTOR[0],
                                 label_value=GPU_NODE_SELECTOR[1])
    kubernetes.add_toleration(task, **GPU_TOLERATION)
    return task


@dsl.pipeline(name=PIPELINE_NAME,
              description="Review sentiment: scrape, synthesize and validate data, Ray Train "
                          "fine-tuning, evaluation on held-out real reviews, MLflow "
                          "registration with a champion gate")
def review_sentiment(
    train_sets: str = "blitzer-books,blitzer-electronics,uci-amazon,huliu",
    heldout_sets: str = "blitzer-dvd,uci-imdb",
    max_train_per_set: int = 0,
    max_heldout_per_set: int = 0,
    seed: int = 13,
    model_kind: str = "compact",
    recipe: str = "full",
    epochs: float = 2.0,
    max_length: int = 128,
    batch_size: int = 32,
    image_pool: int = 600,
    num_workers: int = 2,
    use_gpu: bool = True,
    checkpoint_uri: str = "",
    margin: float = 0.005,
    floor_macro_f1: float = 0.80,
    floor_accuracy: float = 0.80,
    max_ece: float = 0.15,
    scrape_seeds: str = "",
    scrape_max_pages: int = 200,
    demo_base_port: int = 18701,
    synth_category: str = "dvd",
    synth_per_label: int = 150,
    synth_image_fraction: float = 0.5,
    validate_target_auc: float = 0.6,
    validate_min_keep: float = 0.5,
    validate_features: str = "embedding",
    llm_base_url: str = "",
    unlabelled_reviews: str = "",
    label_champion: str = "",
    label_min_confidence: float = 0.9,
    synth_generator: str = "grounded",
    validate_teacher: str = "",
    teacher: str = "",
) -> NamedTuple("Outputs", model=str, version=str, champion=bool, reason=str):
    data = c.import_reviews(train_sets=train_sets, heldout_sets=heldout_sets,
                            max_train_per_set=max_train_per_set,
                            max_heldout_per_set=max_heldout_per_set, seed=seed)
    data.set_retry(num_retries=2, backoff_duration="30s")
    data.set_cpu_limit("2").set_memory_limit("4G")
    _with_data(data)

    scrape = c.scrape_reviews(seeds=scrape_seeds, max_pages=scrape_max_pages,
                              demo_base_port=demo_base_port, llm_base_url=llm_base_url)
    scrape.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)  # shops blip
    scrape.set_caching_options(False)  # a cached scrape would never learn or see new reviews
    scrape.set_cpu_limit("2").set_memory_limit("4G")  # Chromium
    _with_data(_secret(scrape, MINIO_SECRET))  # the agent's state and datasets live in MinIO

    label = c.auto_label_reviews(scraped=scrape.outputs["scraped"],
                                 reviews_uri=unlabelled_reviews, champion=label_champion,
                                 min_confidence=label_min_confidence,
                                 llm_base_url=llm_base_url)
    label.set_retry(num_retries=2, backoff_duration="30s")  # the LLM server may blip
    label.set_cpu_limit("2").set_memory_limit("4G")
    _secret(_secret(label, MLFLOW_SECRET, optional=True), MINIO_SECRET)  # champion, cache

    synth = c.synthesize_reviews(scraped=scrape.outputs["scraped"],
                                 style=label.outputs["labelled"], category=synth_category,
                                 per_label=synth_per_label,
                                 image_fraction=synth_image_fraction, seed=seed,
                                 llm_base_url=llm_base_url, generator=synth_generator)
    synth.set_retry(num_retries=2, backoff_duration="30s")  # the LLM server may blip
    synth.set_cpu_limit("2").set_memory_limit("4G")
    _with_data(synth)

    validate = c.validate_reviews(imported=data.outputs["train_data"],
                                  category_reviews=label.outputs["labelled"],
                                  synthetic=synth.outputs["synthetic"],
                                  category=synth_category,
                                  target_auc=validate_target_auc,
                                  min_keep_fraction=validate_min_keep,
                                  text_features=validate_features, seed=seed,
                                  teacher=validate_teacher)
    validate.set_cpu_limit("2").set_memory_limit("6G")

    assemble = c.assemble_training_data(imported=data.outputs["train_data"],
                                        labelled=label.outputs["labelled"],
                                        synthetic=validate.outputs["kept"],
                                        heldout=data.outputs["heldout_data"])
    assemble.set_cpu_limit("1").set_memory_limit("4G")
    train_data = assemble.outputs["training"]

    train = c.train_model(train_data=train_data, unlabelled=label.outputs["labelled"],
                          teacher=teacher, model_kind=model_kind, recipe=recipe,
                          epochs=epochs, max_length=max_length, batch_size=batch_size,
                          image_pool=image_pool, num_workers=num_workers, use_gpu=use_gpu,
                          checkpoint_uri=checkpoint_uri,
                          run_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    train.set_cpu_limit("8").set_memory_limit("32G")
    train.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)
    _on_gpu_pool(_secret(train, MINIO_SECRET))

    evaluate = c.evaluate_model(model=train.outputs["model"],
                                heldout_data=data.outputs["heldout_data"])
    evaluate.set_cpu_limit("4").set_memory_limit("8G")
    _on_gpu_pool(evaluate)

    register = c.register_model(model=train.outputs["model"], report=evaluate.outputs["report"],
                                heldout_data=data.outputs["heldout_data"], margin=margin,
                                floor_macro_f1=floor_macro_f1, floor_accuracy=floor_accuracy,
                                max_ece=max_ece)
    register.set_retry(num_retries=3, backoff_duration="15s")  # the MLflow server may blip
    _secret(_secret(register, MLFLOW_SECRET, optional=True), MINIO_SECRET)
    for task in (data, scrape, label, synth, validate, assemble, train, evaluate, register):
        _settings(task)
    outputs = NamedTuple("Outputs", model=str, version=str, champion=bool, reason=str)
    return outputs(register.outputs["model"], register.outputs["version"],
                   register.outputs["champion"], register.outputs["reason"])


def compile_pipeline(path: Path = MANIFEST) -> Path:
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(review_sentiment, package_path=str(path))
    return path
