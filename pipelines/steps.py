"""The review-sentiment pipeline's steps as plain functions (paths in, JSON-able dicts out).

The Kubeflow components in :mod:`pipelines.components` are thin wrappers that call these with
their artifacts' local paths, so each step also runs, and is tested, without Kubeflow. A
dataset artifact is a dataset prefix (``manifest.json`` + reviews, see
:mod:`shopsense.data.dataset`) whose folder is the artifact's path; a model artifact is a
folder holding the bundle and ``train.json``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRAIN_JSON = "train.json"


def dataset_uri(path: str | Path) -> str:
    """The dataset URI of an artifact folder (``file:///…/<prefix>``)."""
    return Path(path).resolve().as_uri()


def import_reviews(*, sets: list[str], out_dir: str | Path, max_per_set: int | None,
                   seed: int, name: str) -> dict[str, Any]:
    """Import labelled shared sets (real reviews) as a dataset at ``out_dir``; a seeded sample
    of at most ``max_per_set`` labelled reviews per set (``None``: all)."""
    from shopsense.data.dataset import write_dataset
    from shopsense.data.loaders import load_set
    from shopsense.settings import get_settings
    from shopsense.store import LocalStore

    s = get_settings()
    rng = random.Random(seed)
    reviews = []
    for set_name in sets:
        rows = [r for r in load_set(set_name, s.data_dir) if r.label and r.text.strip()]
        rng.shuffle(rows)
        reviews.extend(rows[:max_per_set] if max_per_set else rows)
    out = Path(out_dir).resolve()
    manifest = write_dataset(LocalStore(out.parent), out.name, reviews, name=name,
                             provenance=[{"step": "import_reviews", "sets": sets,
                                          "max_per_set": max_per_set, "seed": seed}])
    return {"count": manifest.count, "digest": manifest.digest, "uri": dataset_uri(out)}


def train_model(*, train_data: str | Path, model_dir: str | Path,
                model_kind: str = "compact", recipe: str = "demo", overrides: dict | None = None,
                num_workers: int = 1, use_gpu: bool = False, cpus_per_worker: float = 1.0,
                checkpoint_uri: str | None = None, run_name: str | None = None,
                checkpoint_every: int = 20) -> dict[str, Any]:
    """Fine-tune on the train dataset with Ray Train; write the bundle to ``model_dir``."""
    from pipelines.train.config import DistributedConfig
    from pipelines.train.distributed import train_distributed
    from shopsense.data.dataset import read_manifest
    from shopsense.model.train import recipe as make_recipe
    from shopsense.settings import get_settings
    from shopsense.store import LocalStore

    s = get_settings()
    model_dir = Path(model_dir)
    cfg = make_recipe(recipe, **{
        "data_dir": s.data_dir, "output_dir": model_dir / "bundle", "train_sets": [],
        "eval_sets": [], "train_datasets": [dataset_uri(train_data)], "progress": False,
        "threads": max(1, int(cpus_per_worker)), **(overrides or {})})
    dcfg = DistributedConfig(model=model_kind, train=cfg, num_workers=num_workers,
                             use_gpu=use_gpu, cpus_per_worker=cpus_per_worker,
                             checkpoint_uri=checkpoint_uri or None, run_name=run_name or None,
                             checkpoint_every=checkpoint_every)
    result = train_distributed(dcfg, s, evaluate=False)
    train_path = Path(train_data).resolve()
    manifest = read_manifest(LocalStore(train_path.parent), train_path.name)
    info = {
        "model_kind": model_kind, "recipe": recipe, "bundle": "bundle",
        "params": {**result.params, "recipe": recipe, "model_kind": model_kind},
        "metrics": result.metrics, "dataset_digest": manifest.digest,
        "dataset_name": manifest.name, "run_name": result.run_name,
        "checkpoint": result.checkpoint_path, "resumed_from_step": result.resumed_from_step,
        "num_workers": num_workers,
    }
    (model_dir / TRAIN_JSON).write_text(json.dumps(info, indent=2, default=str))
    return info


def heldout_rows(heldout_data: str | Path) -> list[dict]:
    """The held-out rows in the dataset's order (no cap, no shuffle: a stable digest)."""
    from shopsense.data.dataset import read_dataset
    from shopsense.store import LocalStore

    path = Path(heldout_data).resolve()
    manifest, reviews = read_dataset(LocalStore(path.parent), path.name)
    return [{"text": r.text if not r.title else f"{r.title}. {r.text}", "label": r.label,
             "category": r.product.category if r.product else None,
             "set": r.source.name if r.source else manifest.name}
            for r in reviews if r.label and r.text.strip()]


def evaluate_model(*, model_dir: str | Path, heldout_data: str | Path,
                   report_path: str | Path) -> dict[str, Any]:
    """The evaluation report (accuracy, macro-F1, per label, per category, ECE) of the model
    on the held-out dataset, written as JSON to ``report_path``."""
    from shopsense.model.classifier import Predictor
    from shopsense.model.train import evaluate_held_out
    from shopsense.registry import eval_digest

    model_dir = Path(model_dir)
    info = json.loads((model_dir / TRAIN_JSON).read_text())
    rows = heldout_rows(heldout_data)
    if info["model_kind"] == "llava":
        from pipelines.train.llava import load_bundle, predict_proba
        from shopsense.model.train import evaluation_report

        model, processor, opts = load_bundle(model_dir / info["bundle"])
        report = evaluation_report(rows, predict_proba(model, processor, opts,
                                                       [r["text"] for r in rows]))
    else:
        report = evaluate_held_out(Predictor.from_bundle(model_dir / info["bundle"]), rows)
    report["eval_digest"] = eval_digest(rows)
    report["model_kind"] = info["model_kind"]
    Path(report_path).write_text(json.dumps(report, indent=2))
    return report


def register_model(*, model_dir: str | Path, report_path: str | Path,
                   heldout_data: str | Path, margin: float = 0.0,
                   floors: dict[str, float] | None = None,
                   ceilings: dict[str, float] | None = None) -> dict[str, Any]:
    """Log the run to MLflow, register a version (alias ``challenger``) and move ``champion``
    when the promotion policy allows it; the decision is tagged on the version."""
    from shopsense import registry
    from shopsense.model.classifier import Predictor
    from shopsense.model.train import evaluate_held_out
    from shopsense.settings import get_settings

    model_dir = Path(model_dir)
    info = json.loads((model_dir / TRAIN_JSON).read_text())
    if info["model_kind"] != "compact":
        raise ValueError(
            f"{info['model_kind']} models are not registered as shopsense-sentiment (its "
            "pyfunc serves the compact model); LLaVA adapters are served by the vLLM backend")
    report = json.loads(Path(report_path).read_text())
    rows = heldout_rows(heldout_data)

    def rescore(bundle: Path) -> dict:
        return evaluate_held_out(Predictor.from_bundle(bundle), rows)

    metrics = {**{k: float(v) for k, v in info["metrics"].items()
                  if isinstance(v, (int, float)) and not k.startswith("eval_")},
               "eval_accuracy": report["accuracy"], "eval_macro_f1": report["macro_f1"],
               "eval_ece": report["ece"]}
    for name, sub in report.get("per_category", {}).items():
        metrics[f"eval_cat_{name}_macro_f1"] = sub["macro_f1"]
    policy = registry.PromotionPolicy(margin=margin, floors=floors or {},
                                      ceilings=ceilings or {})
    out = registry.log_and_register(
        get_settings(), bundle_dir=model_dir / info["bundle"], params=info["params"],
        metrics=metrics, evaluation=report, eval_records=rows, champion_scorer=rescore,
        experiment="shopsense-pipeline", tags={"recipe": info["recipe"], "pipeline":
                                               "review-sentiment", "ray_run": info["run_name"]},
        policy=policy, challenger=True, dataset_digest=info["dataset_digest"],
        artifacts={"evaluation_report.json": report})
    return {k: out[k] for k in ("name", "version", "promote", "reason", "previous",
                                "eval_digest", "git_commit")}
