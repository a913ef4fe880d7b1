"""Cold start for one product category: unlabelled reviews in, a registered model out.

``run_coldstart(category, reviews_file)`` runs the data loop through the same step functions
as the Kubeflow pipeline (:mod:`pipelines.steps`):

1. the reviews (JSONL: ``text``, optional ``title``, ``product``, ``rating``) become a dataset;
   the base training sets are imported (capped), and the held-out sets of the registry's gate
   are imported without any review that repeats an input review;
2. **auto-label**: ratings, then the LLM and the champion pooled (confident labels only);
3. **synthesize**: the LLM writes reviews of the category from the spec, imitating the input;
4. **validate**: the discriminator against the input reviews, and the labeller's agreement;
5. **assemble** + **train** (the ``coldstart`` recipe, distilled from the LLM's labels of
   every input review it read, labelled or not) + **evaluate** + **register** (tagged with
   the category; the champion gate applies as usual).

The time budget is shared out: the LLM labels for at most ``label_share`` of it (the
champion's least certain reviews first), synthesis stops at its share, training takes the
rest. The result is one JSON-able dict (see :func:`run_coldstart`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from shopsense.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["read_coldstart_file", "run_coldstart"]


def read_coldstart_file(path: Path, category: str) -> list:
    """Reviews of ``category`` from a JSONL file; errors name the file and line."""
    from shopsense.data.jsonl import iter_json_objects
    from shopsense.schemas import Product, Review, Source

    out = []
    seen: set[str] = set()
    for lineno, rec in iter_json_objects(Path(path)):
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: needs a non-empty text")
        title = rec.get("title")
        if title is not None and not isinstance(title, str):
            raise DataError(f"{path}:{lineno}: title must be a string")
        rating = rec.get("rating")
        if rating is not None and (not isinstance(rating, (int, float)) or not 1 <= rating <= 5):
            raise DataError(f"{path}:{lineno}: rating must be a number from 1 to 5")
        product = rec.get("product")
        if isinstance(product, dict):
            pid, pname = str(product.get("id") or product.get("name") or ""), product.get("name")
        elif isinstance(product, str) and product.strip():
            pid, pname = product.strip(), product.strip()
        elif product is None:
            pid, pname = "", None
        else:
            raise DataError(f"{path}:{lineno}: product must be a string or an object")
        digest = hashlib.sha256(f"{title or ''}\x1f{text}".encode()).hexdigest()[:20]
        if digest in seen:
            continue
        seen.add(digest)
        out.append(Review.make(
            source=Source(kind="imported", name=f"coldstart-{category}",
                          source_id=str(rec.get("id") or digest)),
            text=text, title=title or None, rating=float(rating) if rating else None,
            product=Product(id=f"{category}:{pid or 'unknown'}", name=pname,
                            category=category)))
    if not out:
        raise DataError(f"{path}: no reviews")
    return out


def _heldout_without(eval_sets: list[str], inputs: list, out_dir: Path,
                     per_set: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The gate's held-out sets as a dataset (at most ``per_set`` per set, a seeded sample),
    less every review an input review repeats."""
    import random

    from shopsense.data.loaders import load_set
    from shopsense.text import NearDuplicateIndex

    from pipelines.steps import write_local_dataset

    index = NearDuplicateIndex(threshold=0.6, bands=32, measure="containment")
    for r in inputs:
        index.force_add(r.id, r.text)
    kept, dropped = [], 0
    for name in eval_sets:
        rows = [r for r in load_set(name) if r.label and r.text.strip()]
        if per_set:
            random.Random(seed).shuffle(rows)
        taken = 0
        for r in rows:
            if per_set and taken >= per_set:
                break
            if index.find(r.text) is not None:
                dropped += 1
                continue
            kept.append(r)
            taken += 1
    manifest = write_local_dataset(out_dir, kept, name="heldout",
                            provenance=[{"step": "coldstart_heldout", "sets": eval_sets,
                                         "dropped_as_input_repeats": dropped}])
    return {"count": manifest.count, "dropped": dropped}


def run_coldstart(category: str, reviews_file: Path, *, budget_minutes: float = 60.0,
                  base_sets: list[str] | None = None, eval_sets: list[str] | None = None,
                  base_per_set: int = 500, synthetic_per_label: int = 30,
                  neutral_share: float = 0.0, champion: str | None = None,
                  min_confidence: float = 0.9, label_share: float = 0.4,
                  synth_share: float = 0.15, num_workers: int = 2, seed: int = 0,
                  work_dir: Path | None = None, recipe: str = "coldstart",
                  overrides: dict | None = None, eval_per_set: int | None = None
                  ) -> dict[str, Any]:
    """Run the loop (module doc) and return ``model`` (a ``models:/`` URI), counts per data
    source, ``discriminator_auc`` before and after validation, the labeller's coverage and
    ``minutes``."""
    from datetime import datetime, timezone

    from pipelines import steps
    from shopsense.model.train import DEFAULT_EVAL_SETS, DEFAULT_TRAIN_SETS
    from shopsense.settings import get_settings

    start = time.monotonic()
    budget_s = budget_minutes * 60
    s = get_settings()
    base_sets = list(DEFAULT_TRAIN_SETS if base_sets is None else base_sets)
    eval_sets = list(DEFAULT_EVAL_SETS if eval_sets is None else eval_sets)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    work = Path(work_dir or s.resolved_home() / "coldstart" / f"{category}-{stamp}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.monotonic() - t0, 1)
        log.info("coldstart %s: %s done in %.0f s (%.1f min so far)", category, name,
                 timings[name], (time.monotonic() - start) / 60)

    t = time.monotonic()
    inputs = read_coldstart_file(reviews_file, category)
    steps.write_local_dataset(work / "input", inputs, name=f"coldstart-{category}",
                       provenance=[{"step": "coldstart_input", "file": Path(reviews_file).name,
                                    "category": category}])
    base = (steps.import_reviews(sets=base_sets, out_dir=work / "imported",
                                 max_per_set=base_per_set or None, seed=seed, name="imported")
            if base_sets else None)
    heldout = _heldout_without(eval_sets, inputs, work / "heldout", eval_per_set, seed)
    lap("import", t)

    t = time.monotonic()
    label_report = steps.auto_label_reviews(
        reviews_dir=work / "input", out_dir=work / "labelled", min_confidence=min_confidence,
        champion=champion, llm_budget_s=max(60.0, label_share * budget_s - (t - start)))
    lap("auto_label", t)

    t = time.monotonic()
    per_label = {"negative": synthetic_per_label, "positive": synthetic_per_label,
                 "neutral": int(round(synthetic_per_label * neutral_share))}
    synth = steps.synthesize_reviews(
        scraped_dir=work / "labelled", style_dir=work / "labelled", out_dir=work / "synthetic",
        category=category, per_label=synthetic_per_label, count_per_label=per_label,
        generator="auto", seed=seed, image_fraction=0.3, budget_s=synth_share * budget_s)
    lap("synthesize", t)

    t = time.monotonic()
    validation = steps.validate_reviews(
        real_dirs=[work / "input"], synthetic_dir=work / "synthetic", kept_dir=work / "kept",
        rejected_dir=work / "rejected", seed=seed, teacher="llm", label_check="agree",
        category=category)
    lap("validate", t)

    t = time.monotonic()
    parts: dict[str, Any] = {"labelled": work / "labelled", "synthetic": work / "kept"}
    if base is not None:
        parts["imported"] = work / "imported"
    assembled = steps.assemble_training_data(parts=parts, heldout_dir=work / "heldout",
                                             out_dir=work / "training")
    train_info = steps.train_model(
        train_data=work / "training", model_dir=work / "model", recipe=recipe,
        num_workers=num_workers, cpus_per_worker=1.0, run_name=f"coldstart-{category}-{stamp}",
        overrides={"unlabelled_datasets": [steps.dataset_uri(work / "labelled")],
                   "max_train_per_set": None, "seed": seed + 13, **(overrides or {})})
    lap("train", t)

    t = time.monotonic()
    report = steps.evaluate_model(model_dir=work / "model", heldout_data=work / "heldout",
                                  report_path=work / "evaluation.json")
    registered = steps.register_model(model_dir=work / "model",
                                      report_path=work / "evaluation.json",
                                      heldout_data=work / "heldout",
                                      tags={"category": category, "coldstart": "true"})
    lap("evaluate_register", t)

    teacher_rows = {k.removeprefix("teacher_"): int(v) for k, v in train_info["metrics"].items()
                    if k.startswith("teacher_")}
    result = {
        "category": category,
        "model": f"models:/{registered['name']}/{registered['version']}",
        "promoted": registered["promote"], "decision": registered["reason"],
        "counts": {
            "input": len(inputs), "from_rating": label_report["from_rating"],
            "auto_labelled": label_report["labelled"],
            "left_unlabelled": label_report["unlabelled"],
            "synthetic_generated": synth["count"], "synthetic_kept": validation["kept"],
            "synthetic_generators": synth["generators"],
            "imported": base["count"] if base else 0,
            "training": assembled["count"], "training_parts": assembled["parts"],
            "teacher": teacher_rows, "heldout": heldout["count"],
            "heldout_dropped_as_input_repeats": heldout["dropped"],
        },
        "discriminator_auc": {"before": validation["auc_before"],
                              "after": validation["auc_after"]},
        "labeller": {"coverage": label_report["coverage"], "llm_read": label_report["llm_read"],
                     "teacher": label_report["teacher"], "champion": label_report["champion"],
                     "min_confidence": min_confidence,
                     "mean_confidence": label_report["mean_confidence"]},
        "eval": {"n": report["n"], "accuracy": report["accuracy"],
                 "macro_f1": report["macro_f1"], "per_set": report.get("per_set", {})},
        "timings_s": timings,
        "minutes": round((time.monotonic() - start) / 60, 2),
        "budget_minutes": budget_minutes,
        "work_dir": str(work),
    }
    (work / "coldstart.json").write_text(json.dumps(result, indent=2, default=str))
    return result
