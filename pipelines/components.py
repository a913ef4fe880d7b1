"""Kubeflow components of the review-sentiment pipeline: thin, typed wrappers around
:mod:`pipelines.steps`.

They are lightweight Python components that install nothing at run time
(``packages_to_install=[]``): the code they run is the ``shopsense`` package already in the
step image (``PIPELINE_IMAGE``, built from ``images/``), or in the current virtualenv under
``kfp.local``. Each body only imports and calls a step function, so the logic stays testable
without Kubeflow.
"""


from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

# What `make images` builds from images/pipeline-step.Dockerfile and loads into kind (a test
# keeps the two in step).
PIPELINE_IMAGE = "ghcr.io/shopsense/pipeline-step:0.1.0"

# No pip at run time: not the step's packages, not even kfp (the image has it).
component = dsl.component(base_image=PIPELINE_IMAGE, packages_to_install=[],
                          install_kfp_package=False)


@component
def import_reviews(
    train_sets: str,
    heldout_sets: str,
    max_train_per_set: int,
    max_heldout_per_set: int,
    seed: int,
    train_data: Output[Dataset],
    heldout_data: Output[Dataset],
):
    """Real labelled reviews from the shared sets: a training dataset and a held-out one."""
    from pipelines.steps import import_reviews as run

    for sets, cap, out, name in ((train_sets, max_train_per_set, train_data, "train"),
                                 (heldout_sets, max_heldout_per_set, heldout_data, "heldout")):
        info = run(sets=[x for x in sets.split(",") if x], out_dir=out.path,
                   max_per_set=cap or None, seed=seed, name=name)
        out.metadata.update({"count": info["count"], "digest": info["digest"]})


@component
def scrape_reviews(
    seeds: str,
    max_pages: int,
    demo_base_port: int,
    llm_base_url: str,
    scraped: Output[Dataset],
    metrics: Output[Metrics],
):
    """The scraping agent (Playwright + Chromium): every review scraped so far, as a dataset.
    No seeds: the embedded demo shop, built from the shared data."""
    from pipelines.steps import scrape_reviews as run

    info = run(out_dir=scraped.path, seeds=[x for x in seeds.split(",") if x],
               max_pages=max_pages, demo_base_port=demo_base_port,
               llm_base_url=llm_base_url or None)
    scraped.metadata.update({"count": info["count"], "digest": info["digest"]})
    for key in ("pages", "new_reviews", "pages_per_second", "new_reviews_per_page",
                "failures"):
        metrics.log_metric(key, float(info[key]))


@component
def auto_label_reviews(
    scraped: Input[Dataset],
    reviews_uri: str,
    champion: str,
    min_confidence: float,
    llm_base_url: str,
    labelled: Output[Dataset],
    metrics: Output[Metrics],
):
    """The scraped reviews and the category's unlabelled ones (a dataset URI; empty: none)
    with labels for those that had none: ratings, then the LLM and the champion pooled,
    confident labels only."""
    from pipelines.steps import auto_label_reviews as run

    info = run(reviews_dir=reviews_uri or None, also=[scraped.path], out_dir=labelled.path,
               min_confidence=min_confidence, champion=champion or None,
               llm_base_url=llm_base_url or None)
    labelled.metadata.update({"to_label": info["to_label"], "coverage": info["coverage"]})
    for key in ("to_label", "coverage", "from_rating", "llm_read", "unlabelled"):
        metrics.log_metric(key, float(info[key]))


@component
def synthesize_reviews(
    scraped: Input[Dataset],
    style: Input[Dataset],
    category: str,
    per_label: int,
    image_fraction: float,
    seed: int,
    llm_base_url: str,
    generator: str,
    synthetic: Output[Dataset],
):
    """A balanced synthetic dataset (text + photos) for the category, naming scraped products;
    with an LLM, in the style of the category's own reviews (``style``)."""
    from pipelines.steps import synthesize_reviews as run

    info = run(scraped_dir=scraped.path, out_dir=synthetic.path, category=category,
               per_label=per_label, image_fraction=image_fraction, seed=seed,
               llm_base_url=llm_base_url or None, generator=generator, style_dir=style.path)
    synthetic.metadata.update({k: info[k] for k in ("count", "digest", "products", "images")})


@component
def validate_reviews(
    imported: Input[Dataset],
    category_reviews: Input[Dataset],
    synthetic: Input[Dataset],
    category: str,
    target_auc: float,
    min_keep_fraction: float,
    text_features: str,
    seed: int,
    teacher: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
):
    """Adversarial validation: keep the synthetic reviews a discriminator cannot tell from the
    real ones (the category's, scraped or handed in, else all scraped and imported) and that pass the label, duplicate, length and language
    gates."""
    import json

    from pipelines.steps import validate_reviews as run

    # the category's own reviews are what synthetic ones must pass for, when there are some
    # (``category_reviews``: the scrape's reviews and the handed-in ones, labelled)
    out = run(real_dirs=[category_reviews.path, imported.path], synthetic_dir=synthetic.path,
              kept_dir=kept.path, category=category,
              rejected_dir=rejected.path, target_auc=target_auc,
              min_keep_fraction=min_keep_fraction, text_features=text_features, seed=seed,
              teacher=teacher or None, label_check="agree" if teacher == "llm" else "opposite")
    with open(report.path, "w") as fh:
        json.dump(out, fh, indent=2)
    kept.metadata.update({"count": out["kept"]})
    rejected.metadata.update({"count": out["rejected"], **out["rejected_by_reason"]})
    for key in ("synthetic", "real", "kept", "rejected", "auc_before", "auc_after"):
        if out[key] is not None:
            metrics.log_metric(key, float(out[key]))


@component
def assemble_training_data(
    imported: Input[Dataset],
    labelled: Input[Dataset],
    synthetic: Input[Dataset],
    heldout: Input[Dataset],
    training: Output[Dataset],
):
    """Imported, scraped-and-category (labelled by the auto-label step) and validated synthetic
    reviews as one training dataset, without any review that (nearly) repeats a held-out one
    or an earlier one."""
    from pipelines.steps import assemble_training_data as run

    info = run(parts={"imported": imported.path, "labelled": labelled.path,
                      "synthetic": synthetic.path},
               heldout_dir=heldout.path, out_dir=training.path)
    training.metadata.update({"count": info["count"], "digest": info["digest"],
                              **{f"{k}_kept": v["kept"] for k, v in info["parts"].items()},
                              **{f"{k}_heldout_overlap": v["heldout_overlap"]
                                 for k, v in info["parts"].items()}})


@component
def train_model(
    train_data: Input[Dataset],
    unlabelled: Input[Dataset],
    teacher: str,
    model_kind: str,
    recipe: str,
    epochs: float,
    max_length: int,
    batch_size: int,
    image_pool: int,
    num_workers: int,
    use_gpu: bool,
    checkpoint_uri: str,
    run_name: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Ray Train fine-tuning (LoRA) with checkpoints in the object store."""
    import os

    from pipelines.steps import train_model as run

    os.makedirs(model.path, exist_ok=True)
    from pipelines.steps import dataset_count, dataset_uri

    overrides = {"epochs": epochs, "max_length": max_length, "batch_size": batch_size,
                 "image_pool": image_pool, "teacher": teacher or None}
    if teacher and dataset_count(unlabelled.path):  # distilled on every category review
        overrides["unlabelled_datasets"] = [dataset_uri(unlabelled.path)]
    info = run(train_data=train_data.path, model_dir=model.path, model_kind=model_kind,
               recipe=recipe, overrides=overrides, num_workers=num_workers, use_gpu=use_gpu,
               checkpoint_uri=checkpoint_uri or None, run_name=run_name or None)
    model.metadata.update({"model_kind": model_kind, "dataset_digest": info["dataset_digest"],
                           "ray_run": info["run_name"]})
    for key, value in info["metrics"].items():
        metrics.log_metric(key, float(value))


@component
def evaluate_model(
    model: Input[Model],
    heldout_data: Input[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    summary: Output[Markdown],
):
    """Accuracy, macro-F1, per-label and per-category figures and ECE on held-out real data;
    the confusion matrix and a Markdown report for the pipeline UI."""
    from pipelines.steps import evaluate_model as run
    from pipelines.steps import evaluation_markdown

    result = run(model_dir=model.path, heldout_data=heldout_data.path, report_path=report.path)
    for key in ("accuracy", "macro_f1", "ece", "n"):
        metrics.log_metric(key, float(result[key]))
    confusion.log_confusion_matrix(result["confusion"]["labels"], result["confusion"]["matrix"])
    with open(summary.path, "w") as fh:
        fh.write(evaluation_markdown(result))


@component
def register_model(
    model: Input[Model],
    report: Input[Artifact],
    heldout_data: Input[Dataset],
    margin: float,
    floor_macro_f1: float,
    floor_accuracy: float,
    max_ece: float,
) -> NamedTuple("Registration", model=str, version=str, champion=bool, reason=str):
    """Register a version (alias challenger); move champion only past margin and floors."""
    from collections import namedtuple

    from pipelines.steps import register_model as run

    out = run(model_dir=model.path, report_path=report.path, heldout_data=heldout_data.path,
              margin=margin,
              floors={"eval_macro_f1": floor_macro_f1, "eval_accuracy": floor_accuracy},
              ceilings={"eval_ece": max_ece} if max_ece > 0 else {})
    print(f"registered {out['name']} v{out['version']}: "
          f"{'champion' if out['promote'] else 'not champion'} ({out['reason']})")
    return namedtuple("Registration", ["model", "version", "champion", "reason"])(
        out["name"], out["version"], bool(out["promote"]), out["reason"])
