"""Distributed training speed and the pipeline model's quality; prints markdown tables.

1. Training samples/s with 1 and 2 Ray Train workers (the pipeline's train code,
   ``pipelines.train.distributed``), small config, median of ``--runs`` runs. The figure is
   measured inside the workers over the training steps only (model loading excluded). Two
   workers on a 2-core machine get one core each; one worker gets both.
2. Quality on held-out real reviews (Blitzer dvd + UCI imdb, sets no recipe trains on) of the
   models the pipeline's own steps make (demo recipe, ``--workers`` Ray workers): trained on
   the imported sets only (deterministic), and ``--data-runs`` times (seeds 13, 14, …) on
   imported + scraped (demo shop) + validated synthetic ``--synth-category`` reviews (the data
   steps, which vary from run to run; held-out repeats removed), against the core
   path's default model (``--core-model``, default ``models:/shopsense-sentiment@champion``)
   on the same records, through the evaluation contract's code (``shopsense.evaluate``).

The load average is printed with each table: figures taken while other jobs load the CPU are
labelled so.

    SHOPSENSE_HOME=$PWD/.shopsense .venv/bin/python benchmarks/train_speed.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load_label() -> str:
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = one > cores * 0.75
    tag = "**shared: other jobs were loading the CPU**" if busy else "machine otherwise idle"
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {cores} cores — {tag}"


def speed(args, data_dir: Path, tmp: Path) -> None:
    import ray

    from pipelines.train.config import DistributedConfig
    from pipelines.train.distributed import train_distributed
    from shopsense.model.train import TrainConfig

    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    rows = []
    start_load = _load_label()
    try:
        for workers in (1, 2):
            cpus = max(1, (os.cpu_count() or 2) // workers)
            values = []
            for run in range(args.runs):
                tc = TrainConfig(data_dir=data_dir, output_dir=tmp / f"s{workers}-{run}",
                                 train_sets=["uci-amazon"], eval_sets=[],
                                 max_train_per_set=args.speed_texts, epochs=1, batch_size=16,
                                 max_length=64, image_pool=24, threads=cpus, progress=False)
                cfg = DistributedConfig(train=tc, num_workers=workers, cpus_per_worker=cpus,
                                        checkpoint_uri=(tmp / "ckpt").as_uri(),
                                        checkpoint_every=1000)
                r = train_distributed(cfg, evaluate=False)
                values.append(r.samples_per_second)
                print(f"  {workers} worker(s), run {run + 1}: {r.samples_per_second:.1f} "
                      "samples/s", file=sys.stderr)
            rows.append((workers, cpus, values))
    finally:
        ray.shutdown()
    print(f"\n### Training speed (Ray Train, compact model)\n\n{start_load} at the start; "
          f"{_load_label()} at the end.\n")
    print("| workers | CPUs per worker | samples/s (median) | runs |")
    print("|---|---|---|---|")
    for workers, cpus, values in rows:
        print(f"| {workers} | {cpus} | {statistics.median(values):.1f} | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")


def _pipeline_model(args, tmp: Path, *, data_steps: bool, seed: int = 13) -> tuple[Path, str]:
    """A model made by the pipeline's own steps (``pipelines.steps``, what the Kubeflow
    components call): import → [scrape → synthesize → validate → assemble] → train."""
    from pipelines import steps

    art = tmp / (f"with-data-steps-{seed}" if data_steps else "imported-only")
    t0 = time.perf_counter()
    steps.import_reviews(sets=args.train_sets.split(","), out_dir=art / "imported",
                         max_per_set=None, seed=13, name="train")
    train_data, note = art / "imported", "imported sets only"
    if data_steps:
        steps.import_reviews(sets=["blitzer-dvd", "uci-imdb"], out_dir=art / "heldout",
                             max_per_set=None, seed=13, name="heldout")
        scraped = steps.scrape_reviews(out_dir=art / "scraped", seeds=[],
                                       max_pages=args.scrape_pages)
        synth = steps.synthesize_reviews(scraped_dir=art / "scraped", out_dir=art / "synthetic",
                                         category=args.synth_category,
                                         per_label=args.synth_per_label, seed=seed)
        report = steps.validate_reviews(real_dirs=[art / "scraped", art / "imported"],
                                        synthetic_dir=art / "synthetic", kept_dir=art / "kept",
                                        rejected_dir=art / "rejected", seed=seed)
        parts = steps.assemble_training_data(
            parts={"imported": art / "imported", "scraped": art / "scraped",
                   "synthetic": art / "kept"},
            heldout_dir=art / "heldout", out_dir=art / "training")["parts"]
        train_data = art / "training"
        note = (f"seed {seed}: + scraped {parts['scraped']['kept']} (of {scraped['count']}; "
                f"{parts['scraped']['heldout_overlap']} held-out repeats dropped) + synthetic "
                f"{args.synth_category} {parts['synthetic']['kept']} (of {synth['count']}; "
                f"AUC {report['auc_before']} → {report['auc_after']})")
    info = steps.train_model(train_data=train_data, model_dir=art / "model", recipe="demo",
                             num_workers=args.workers,
                             cpus_per_worker=max(1, (os.cpu_count() or 2) // args.workers),
                             checkpoint_uri=(tmp / f"ckpt-{data_steps}-{seed}").as_uri())
    name = (f"pipeline, demo recipe, {args.workers} Ray workers, {note} "
            f"({time.perf_counter() - t0:.0f} s)")
    return art / "model" / info["bundle"], name


def quality(args, data_dir: Path, tmp: Path) -> None:
    from shopsense import registry
    from shopsense.evaluate import evaluate_records
    from shopsense.model.classifier import Predictor
    from shopsense.model.train import load_labelled, predict_in_batches
    from shopsense.settings import get_settings

    start_load = _load_label()
    records = load_labelled(["blitzer-dvd", "uci-imdb"], data_dir, args.heldout_per_set, 7)
    core = registry.resolve(get_settings(), args.core_model)
    systems = [(f"core default `{args.core_model}` (v{core.version})", core.bundle_dir)]
    if args.pipeline_model:
        resolved = registry.resolve(get_settings(), args.pipeline_model)
        systems.append((args.pipeline_model, resolved.bundle_dir))
    else:
        systems.append(_pipeline_model(args, tmp, data_steps=False)[::-1])
        for seed in range(13, 13 + args.data_runs):  # the data steps vary from run to run
            systems.append(_pipeline_model(args, tmp, data_steps=True, seed=seed)[::-1])
    print(f"\n### Quality on held-out real reviews\n\n{start_load} at the start.\n")
    print("| held-out set | system | n | accuracy | macro-F1 |")
    print("|---|---|---|---|---|")
    data_runs: dict[str, list[float]] = {}
    for label, bundle in systems:
        pred = Predictor.from_bundle(bundle)
        proba = predict_in_batches(pred, [r["text"] for r in records])
        for set_name in ("blitzer-dvd", "uci-imdb", None):
            idx = [i for i, r in enumerate(records) if set_name in (None, r["set"])]
            ev = evaluate_records([records[i] for i in idx], lambda t, im, p=proba[idx]: p,
                                  model={})
            print(f"| {set_name or 'both'} | {label} | {ev['n']} | {ev['accuracy']:.4f} | "
                  f"{ev['macro_f1']:.4f} |")
            if "seed " in label:
                data_runs.setdefault(set_name or "both", []).append(ev["macro_f1"])
    for set_name, values in data_runs.items():
        print(f"| {set_name} | pipeline with the data steps, median of {len(values)} runs | | | "
              f"{statistics.median(values):.4f} (min {min(values):.4f}, max {max(values):.4f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per worker count (median)")
    ap.add_argument("--speed-texts", type=int, default=96, help="training texts per run")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers for the quality model")
    ap.add_argument("--heldout-per-set", type=int, default=1000,
                    help="held-out reviews per set (blitzer-dvd, uci-imdb)")
    ap.add_argument("--core-model", default="models:/shopsense-sentiment@champion")
    ap.add_argument("--pipeline-model", default=None,
                    help="a registered pipeline model (models:/…); default: train one")
    ap.add_argument("--train-sets", default="blitzer-books,blitzer-electronics,uci-amazon,huliu")
    ap.add_argument("--scrape-pages", type=int, default=200)
    ap.add_argument("--synth-category", default="dvd")
    ap.add_argument("--synth-per-label", type=int, default=150)
    ap.add_argument("--data-runs", type=int, default=3,
                    help="runs (seeds) of the model trained with the data steps")
    ap.add_argument("--skip", choices=("speed", "quality"), default=None)
    args = ap.parse_args()
    # the scraping agent's state and datasets go to a throw-away store, not the user's
    store_dir = Path(tempfile.mkdtemp(prefix="shopsense-train-speed-store-"))
    os.environ.setdefault("SHOPSENSE_STORE_URI", store_dir.as_uri())
    from shopsense.settings import get_settings

    data_dir = get_settings().data_dir
    with tempfile.TemporaryDirectory(prefix="shopsense-train-speed-") as tmp:
        if args.skip != "speed":
            speed(args, data_dir, Path(tmp))
        if args.skip != "quality":
            quality(args, data_dir, Path(tmp))


if __name__ == "__main__":
    main()
