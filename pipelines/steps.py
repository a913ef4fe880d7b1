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


def dataset_count(path: str | Path) -> int:
    """How many reviews the dataset in the artifact folder ``path`` holds."""
    from shopsense.data.dataset import read_manifest
    from shopsense.store import LocalStore

    path = Path(path).resolve()
    return read_manifest(LocalStore(path.parent), path.name).count


def _read_local(path: str | Path):
    """(manifest, reviews, store, prefix) of the dataset in the artifact folder ``path``."""
    from shopsense.data.dataset import read_dataset
    from shopsense.store import LocalStore

    path = Path(path).resolve()
    store = LocalStore(path.parent)
    manifest, reviews = read_dataset(store, path.name)
    return manifest, list(reviews), store, path.name


def write_local_dataset(path: str | Path, reviews, **kwargs):
    from shopsense.data.dataset import write_dataset
    from shopsense.store import LocalStore

    path = Path(path).resolve()
    return write_dataset(LocalStore(path.parent), path.name, reviews, **kwargs)


def _chat(llm_base_url: str | None):
    """The data agents' chat model: ``llm_base_url`` when given, else the environment's."""
    import os

    from shopsense.llm import chat_model_from_env

    return chat_model_from_env({**os.environ, "SHOPSENSE_LLM_BASE_URL": llm_base_url}
                               if llm_base_url else None)


def scrape_reviews(*, out_dir: str | Path, seeds: list[str], max_pages: int,
                   demo_base_port: int = 18701, concurrency: int = 4,
                   dataset: str = "scraped/pipeline",
                   llm_base_url: str | None = None) -> dict[str, Any]:
    """Run the scraping agent (``pipelines/scrape``) and copy what it published to ``out_dir``.

    With no ``seeds`` it scrapes the embedded demo shop (built from the shared data, served
    on 127.0.0.1 from ``demo_base_port`` for this step's lifetime: fixed ports, so the
    per-source statistics learnt by earlier runs apply). The agent's state and its dataset live
    in the settings' object store (MinIO in a cluster), so runs learn from each other and an
    interrupted run resumes."""
    import contextlib

    from pipelines.scrape import ScrapeConfig, run_scrape
    from shopsense.data.dataset import dataset_images, open_dataset_uri, read_dataset
    from shopsense.settings import get_settings

    s = get_settings()
    with contextlib.ExitStack() as stack:
        if not seeds:
            from pipelines.scrape import DemoShop

            shop = stack.enter_context(DemoShop(s.data_dir, base_port=demo_base_port))
            seeds = shop.urls
        cfg = ScrapeConfig(seeds=seeds, dataset=dataset, max_pages=max_pages,
                           concurrency=concurrency)
        res = run_scrape(cfg, chat=_chat(llm_base_url))
    store, prefix = open_dataset_uri(res.dataset_uri, s)
    manifest, reviews = read_dataset(store, prefix)
    reviews = list(reviews)
    out = write_local_dataset(out_dir, reviews, name="scraped",
                       provenance=[*manifest.provenance,
                                   {"step": "scrape_reviews", "from": res.dataset_uri}],
                       images=dataset_images(store, prefix, reviews))
    log.info("scraped %d pages: %d new reviews; dataset of %d reviews", res.pages,
             res.new_reviews, out.count)
    return {"count": out.count, "digest": out.digest, "pages": res.pages,
            "new_reviews": res.new_reviews, "pages_per_second": res.pages_per_second,
            "new_reviews_per_page": res.new_reviews_per_page, "failures": res.failures,
            "resumed": res.resumed}


def synthesize_reviews(*, scraped_dir: str | Path, out_dir: str | Path, category: str,
                       per_label: int, image_fraction: float = 0.5, seed: int = 0,
                       max_products: int = 20, llm_base_url: str | None = None,
                       generator: str = "grounded", style_dir: str | Path | None = None,
                       max_style_examples: int = 200,
                       count_per_label: dict[str, int] | None = None,
                       budget_s: float | None = None) -> dict[str, Any]:
    """Synthesize a balanced dataset for ``category`` (``pipelines/synthesize``), naming the
    products found in that category (the most reviewed first) in ``scraped_dir`` and, when
    given, ``style_dir``, whose reviews of the category are also the LLM's style examples.

    ``generator``: ``grounded`` (the template generator), ``llm`` (the LLM at
    ``llm_base_url``, else the configured one: the embedded server is started when none is
    set) or ``auto`` (the LLM when one can be reached or started, else the template generator,
    which the records' provenance then names)."""
    import contextlib
    from collections import Counter

    from pipelines.synthesize import GenerationSpec, run_synthesize
    from shopsense.errors import LLMUnavailable
    from shopsense.settings import get_settings
    from shopsense.text import review_content

    _, scraped, _, _ = _read_local(scraped_dir)
    pool = list(scraped)
    style: list[str] = []
    if style_dir is not None:
        _, own, _, _ = _read_local(style_dir)
        pool.extend(own)
        rng = random.Random(seed)
        style = [review_content(r.title, r.text) for r in own
                 if r.text.strip() and (not r.product or r.product.category in (None, category))]
        rng.shuffle(style)
        style = style[:max_style_examples]
    names = Counter(r.product.name for r in pool
                    if r.product and r.product.name and r.product.category == category)
    counts = count_per_label or {"negative": per_label, "neutral": per_label,
                                 "positive": per_label}
    s = get_settings()
    with contextlib.ExitStack() as stack:
        chat, fallback_reason = None, None
        if llm_base_url:
            chat = _chat(llm_base_url)
        elif generator in ("llm", "auto"):
            from shopsense.llm import chat_model_for
            from shopsense.llm.server import llm_endpoint

            try:
                ep = stack.enter_context(llm_endpoint(s))
                chat = chat_model_for(ep, timeout_s=max(300.0, s.llm_timeout_s))
            except LLMUnavailable as exc:
                if generator == "llm":
                    raise
                fallback_reason = str(exc)
                log.warning("no LLM for synthesis (%s): the template generator writes", exc)
        spec = GenerationSpec(category=category, seed=seed, image_fraction=image_fraction,
                              products=[n for n, _ in names.most_common(max_products)],
                              count_per_label=counts,  # type: ignore[arg-type]
                              generator="llm" if chat is not None else "grounded",
                              style_examples=style)
        res = run_synthesize(spec, dataset_uri(out_dir), chat=chat, data_dir=s.data_dir,
                             budget_s=budget_s)
    return {"count": res.manifest.count, "digest": res.manifest.digest,
            "stopped_early": res.stopped_early,
            "products": len(spec.products), "images": res.images,
            "generators": res.generators, "llm_fallbacks": res.llm_fallbacks,
            "style_examples": len(style), "llm_unavailable": fallback_reason}


def auto_label_reviews(*, reviews_dir: str | Path | None, out_dir: str | Path,
                       also: list[str | Path] | None = None,
                       min_confidence: float = 0.9, llm_weight: float = 0.75,
                       champion: str | None = None, use_llm: bool = True,
                       llm_budget_s: float | None = None,
                       llm_base_url: str | None = None) -> dict[str, Any]:
    """Labels for the reviews that have none (``pipelines/label``): ratings, then the LLM and
    the champion pooled; confident labels only, each with its source and confidence.
    ``reviews_dir``: an artifact folder or a dataset URI (``s3://…``); ``None`` or ``""``:
    none. ``also``: more datasets (folders or URIs) labelled into the same output, e.g. the
    scrape's (reviews scraped without a rating). Nothing at all: an empty dataset."""
    from pipelines.label import AutoLabelConfig, run_auto_label
    from shopsense.settings import get_settings

    sources = [str(x) if "://" in str(x) else dataset_uri(x)
               for x in [reviews_dir, *(also or [])] if x]
    if not sources:
        out = write_local_dataset(out_dir, [], name="unlabelled-none",
                           provenance=[{"step": "auto_label", "input": None}])
        return {"total": 0, "to_label": 0, "labelled": {}, "unlabelled": 0, "coverage": 1.0,
                "from_rating": 0, "llm_read": 0, "count": out.count}
    s = get_settings()
    if llm_base_url:
        s = s.model_copy(update={"llm_base_url": llm_base_url})
    cfg = AutoLabelConfig(min_confidence=min_confidence, llm_weight=llm_weight,
                          champion=champion or None, use_llm=use_llm,
                          llm_budget_s=llm_budget_s or None)
    report = run_auto_label(sources, dataset_uri(out_dir), cfg, settings=s)
    return report.model_dump(mode="json")


def validate_reviews(*, real_dirs: list[str | Path], synthetic_dir: str | Path,
                     kept_dir: str | Path, rejected_dir: str | Path, target_auc: float = 0.6,
                     min_keep_fraction: float = 0.5, text_features: str = "embedding",
                     seed: int = 0, teacher: str | None = None,
                     label_check: str = "opposite",
                     category: str | None = None) -> dict[str, Any]:
    """Adversarial validation (``pipelines/validate``) of the synthetic reviews against the
    real ones (the scraped and the imported datasets); pushes the quality figures to the
    Pushgateway when one is set."""
    from pipelines.validate import ValidateConfig, run_validate
    from shopsense.data.dataset import category_of as _category
    from pipelines.metrics import PipelineMetrics
    from shopsense.settings import get_settings

    s = get_settings()
    cfg = ValidateConfig(target_auc=target_auc, min_keep_fraction=min_keep_fraction,
                         text_features=text_features, seed=seed, teacher=teacher or None,
                         label_check=label_check,  # type: ignore[arg-type]
                         real_category=category or None)
    report = run_validate(",".join(dataset_uri(d) for d in real_dirs),
                          dataset_uri(synthetic_dir),
                          dataset_uri(kept_dir), cfg, data_dir=s.data_dir,
                          rejected_out=dataset_uri(rejected_dir))
    kept_manifest, kept, _, _ = _read_local(kept_dir)
    _, rejected, _, _ = _read_local(rejected_dir)
    metrics = PipelineMetrics(dataset=kept_manifest.name)
    categories = sorted({_category(r) for r in [*kept, *rejected]})
    for category in categories:
        metrics.record_samples(category,
                               kept=sum(_category(r) == category for r in kept),
                               rejected=sum(_category(r) == category for r in rejected))
    # one discriminator for the whole synthetic set: its category when it has one, else "all"
    if report.auc_after is not None and report.auc_after == report.auc_after:  # not NaN
        metrics.record_discriminator_auc(categories[0] if len(categories) == 1 else "all",
                                         report.auc_after)
    metrics.finish()
    out = report.model_dump(mode="json")
    out["pushed_to"] = None
    if s.pushgateway_url:
        try:
            metrics.push(s.pushgateway_url)
            out["pushed_to"] = s.pushgateway_url
            log.info("pushed the validation figures to %s", s.pushgateway_url)
        except OSError as exc:  # the data is good; only the dashboard misses this run
            log.warning("could not push the validation figures to %s: %s",
                        s.pushgateway_url, exc)
    return out


def assemble_training_data(*, parts: dict[str, str | Path], heldout_dir: str | Path,
                           out_dir: str | Path, near_duplicate_threshold: float = 0.7,
                           heldout_containment: float = 0.6) -> dict[str, Any]:
    """One training dataset from the labelled reviews of ``parts`` (name -> dataset folder, in
    order of precedence), without any review that repeats a held-out one (the demo shop sells
    the Blitzer products the held-out set comes from, some as near-copies with words dropped
    and a sign-off added: a review containing ``heldout_containment`` of a held-out review's
    word 3-grams counts as a repeat) or that near-duplicates an earlier kept one (Jaccard
    ``near_duplicate_threshold``, as the scrape and validate steps judge it; the shop and the
    imported sets share reviews)."""
    from shopsense.text import NearDuplicateIndex
    from shopsense.data.dataset import dataset_images

    _, heldout, _, _ = _read_local(heldout_dir)
    held = NearDuplicateIndex(threshold=heldout_containment, bands=32, measure="containment")
    for r in heldout:
        held.force_add(r.id, r.text)
    index = NearDuplicateIndex(threshold=near_duplicate_threshold)
    kept, blobs, counts, provenance = [], {}, {}, []
    seen_ids: set[str] = set()
    for name, path in parts.items():
        manifest, reviews, store, prefix = _read_local(path)
        c = counts[name] = {"read": len(reviews), "kept": 0, "unlabelled": 0,
                            "heldout_overlap": 0, "duplicate": 0}
        part = []
        for r in reviews:
            if not r.label or not r.text.strip():
                c["unlabelled"] += 1
                continue
            if r.id in seen_ids:
                c["duplicate"] += 1
                continue
            if held.find(r.text) is not None:
                c["heldout_overlap"] += 1
                continue
            if index.add(r.id, r.text) is not None:
                c["duplicate"] += 1
                continue
            seen_ids.add(r.id)
            part.append(r)
        c["kept"] = len(part)
        kept.extend(part)
        blobs.update(dataset_images(store, prefix, part))
        provenance.append({"part": name, "name": manifest.name, "digest": manifest.digest,
                           **c})
    out = write_local_dataset(out_dir, kept, name="training",
                       provenance=[{"step": "assemble_training_data", "parts": provenance}],
                       images=blobs)
    log.info("training data: %d reviews from %s", out.count,
             ", ".join(f"{k} {v['kept']}/{v['read']}" for k, v in counts.items()))
    return {"count": out.count, "digest": out.digest, "parts": counts}


def train_model(*, train_data: str | Path, model_dir: str | Path,
                model_kind: str = "compact", recipe: str = "demo", overrides: dict | None = None,
                num_workers: int = 1, use_gpu: bool = False, cpus_per_worker: float = 1.0,
                checkpoint_uri: str | None = None, run_name: str | None = None,
                checkpoint_every: int = 20) -> dict[str, Any]:
    """Fine-tune on the train dataset with Ray Train; write the bundle to ``model_dir``."""
    from pipelines.train import DistributedConfig, train_distributed
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
    from shopsense.model.train import review_rows

    manifest, reviews, _, _ = _read_local(heldout_data)
    return review_rows(reviews, manifest.name)


def _score(model_kind: str, bundle: Path, rows: list[dict]) -> dict[str, Any]:
    """The evaluation report of a compact or LLaVA bundle on held-out rows."""
    from shopsense.model.train import evaluate_held_out, evaluation_report

    if model_kind == "llava":
        from pipelines.train.llava import bundle_predictor

        return evaluation_report(rows, bundle_predictor(bundle)([r["text"] for r in rows]))
    from shopsense.model.classifier import Predictor

    return evaluate_held_out(Predictor.from_bundle(bundle), rows)


def evaluate_model(*, model_dir: str | Path, heldout_data: str | Path,
                   report_path: str | Path) -> dict[str, Any]:
    """The evaluation report (accuracy, macro-F1, per label, per category, ECE) of the model
    on the held-out dataset, written as JSON to ``report_path``."""
    from shopsense.registry import eval_digest

    model_dir = Path(model_dir)
    info = json.loads((model_dir / TRAIN_JSON).read_text())
    rows = heldout_rows(heldout_data)
    report = _score(info["model_kind"], model_dir / info["bundle"], rows)
    report["eval_digest"] = eval_digest(rows)
    report["model_kind"] = info["model_kind"]
    Path(report_path).write_text(json.dumps(report, indent=2))
    return report


def evaluation_markdown(report: dict[str, Any]) -> str:
    """The evaluation report as Markdown for the pipeline UI: overall, per label, per set and
    category, the confusion matrix."""
    lines = [f"## Held-out evaluation ({report['model_kind'] if 'model_kind' in report else 'model'})",
             "", f"n = {report['n']}, accuracy **{report['accuracy']:.4f}**, macro-F1 "
             f"**{report['macro_f1']:.4f}**, ECE {report.get('ece', float('nan')):.4f}", "",
             "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for lbl, m in report["per_class"].items():
        lines.append(f"| {lbl} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                     f"{m['support']} |")
    for title, key in (("set", "per_set"), ("category", "per_category")):
        rows = report.get(key) or {}
        if rows:
            lines += ["", f"| {title} | n | accuracy | macro-F1 |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['n']} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} |"
                      for k, v in rows.items()]
    labels, matrix = report["confusion"]["labels"], report["confusion"]["matrix"]
    lines += ["", "| true \\ predicted | " + " | ".join(labels) + " |",
              "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {lbl} | " + " | ".join(str(v) for v in row) + " |"
              for lbl, row in zip(labels, matrix)]
    return "\n".join(lines) + "\n"


def register_model(*, model_dir: str | Path, report_path: str | Path,
                   heldout_data: str | Path, margin: float = 0.0,
                   floors: dict[str, float] | None = None,
                   ceilings: dict[str, float] | None = None,
                   tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Log the run to MLflow, register a version (alias ``challenger``) and move ``champion``
    when the promotion policy allows it; the decision is tagged on the version.

    A compact model becomes a version of ``shopsense-sentiment`` (what the torch backend
    serves); a LLaVA model a version of ``shopsense-sentiment-llava`` (its LoRA adapter and
    processor, with a pyfunc of the same input and output), under the same gate against that
    model's own champion."""
    from shopsense import registry
    from shopsense.settings import get_settings

    model_dir = Path(model_dir)
    info = json.loads((model_dir / TRAIN_JSON).read_text())
    settings, python_model = get_settings(), None
    if info["model_kind"] == "llava":
        from pipelines.train.llava import LlavaPyfunc

        settings = settings.model_copy(update={"model_name": settings.model_name + "-llava"})
        python_model = LlavaPyfunc()
    report = json.loads(Path(report_path).read_text())
    rows = heldout_rows(heldout_data)

    def rescore(bundle: Path) -> dict:
        return _score(info["model_kind"], bundle, rows)

    metrics = {**{k: float(v) for k, v in info["metrics"].items()
                  if isinstance(v, (int, float)) and not k.startswith("eval_")},
               "eval_accuracy": report["accuracy"], "eval_macro_f1": report["macro_f1"],
               "eval_ece": report["ece"]}
    for name, sub in report.get("per_category", {}).items():
        metrics[f"eval_cat_{name}_macro_f1"] = sub["macro_f1"]
    policy = registry.PromotionPolicy(margin=margin, floors=floors or {},
                                      ceilings=ceilings or {})
    out = registry.log_and_register(
        settings, bundle_dir=model_dir / info["bundle"], params=info["params"],
        metrics=metrics, evaluation=report, eval_records=rows, champion_scorer=rescore,
        experiment="shopsense-pipeline", tags={"recipe": info["recipe"], "pipeline":
                                               "review-sentiment", "ray_run": info["run_name"],
                                               **(tags or {})},
        policy=policy, challenger=True, dataset_digest=info["dataset_digest"],
        artifacts={"evaluation_report.json": report}, python_model=python_model)
    return {k: out[k] for k in ("name", "version", "promote", "reason", "previous",
                                "eval_digest", "git_commit")}
