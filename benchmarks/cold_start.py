"""Cold start: what synthetic data adds for a product category the model never saw.

Held-out category: Blitzer ``dvd``. Three small, fast training runs of the real training
code (``shopsense.model.train.train``, the ``demo`` recipe shrunk further: 300 texts per set,
1 epoch, 64 tokens, 120 rendered photos) on books + electronics + UCI amazon + Hu & Liu:

  A. without synthetic data;
  B. plus a synthetic ``dvd`` set (grounded generator; phrases mined from books, electronics
     and Hu & Liu reviews only, never from dvd reviews; dvd product names from the catalogue);
  C. plus the synthetic set after adversarial validation (kept part only).

Each model is scored with ``shopsense evaluate --data dvd.jsonl --model BUNDLE --json`` on
real dvd reviews (a seeded sample, two labels). Until ``TrainConfig.train_sets`` accepts
dataset URIs (a core change proposed in the README), the synthetic set is handed to
``train()`` by registering it under a set name for this process.

    .venv/bin/python benchmarks/cold_start.py [--per-label 150] [--eval 600] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-label", type=int, default=150)
    ap.add_argument("--eval", type=int, default=600)
    ap.add_argument("--cap", type=int, default=300, help="texts per training set")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from pipelines.synthesize.run import run_synthesize
    from pipelines.synthesize.spec import GenerationSpec
    from pipelines.validate.run import ValidateConfig, run_validate
    from shopsense.data import loaders
    from shopsense.data.dataset import read_dataset
    from shopsense.model.train import load_labelled, recipe, train
    from shopsense.settings import get_settings
    from shopsense.store import LocalStore

    s = get_settings()
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    out: dict = {"held_out": "blitzer-dvd", "load_average_start": os.getloadavg()[0]}

    # evaluation file: real dvd reviews (never used for training or for mining phrases)
    rows = load_labelled(["blitzer-dvd"], s.data_dir, args.eval, 7)
    eval_file = work / "dvd.jsonl"
    eval_file.write_text("".join(json.dumps({"text": r["text"], "label": r["label"],
                                             "category": "dvd"}) + "\n" for r in rows))
    names = sorted({r.product.name.split(":")[0] for r in loaders.load_blitzer(s.data_dir, "dvd")
                    if r.product and r.product.name})[:200]
    t = time.perf_counter()
    spec = GenerationSpec(category="dvd", products=names, seed=args.seed, image_fraction=0.3,
                          count_per_label={"negative": args.per_label,
                                           "neutral": args.per_label,
                                           "positive": args.per_label})
    run_synthesize(spec, (work / "syn").as_uri(), data_dir=s.data_dir)
    out["synthesize_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    report = run_validate("blitzer-books,blitzer-electronics", (work / "syn").as_uri(),
                          (work / "kept").as_uri(), ValidateConfig(max_real=1000),
                          data_dir=s.data_dir)
    out["validate_seconds"] = round(time.perf_counter() - t, 1)
    out["validation"] = report.model_dump(include={"synthetic", "kept", "rejected",
                                                  "rejected_by_reason", "auc_before",
                                                  "auc_after"})
    store = LocalStore(work)
    synthetic = {"syn": list(read_dataset(store, "syn")[1]),
                 "kept": list(read_dataset(store, "kept")[1])}

    base_sets = ["blitzer-books", "blitzer-electronics", "uci-amazon", "huliu"]
    variants = [("A: without synthetic", base_sets),
                ("B: + synthetic dvd", base_sets + ["synthetic-dvd"]),
                ("C: + validated synthetic dvd", base_sets + ["synthetic-dvd-kept"])]
    # register the synthetic sets under names train() can load (see the module docstring)
    loaders._LOADERS["synthetic-dvd"] = lambda d: synthetic["syn"]
    loaders._LOADERS["synthetic-dvd-kept"] = lambda d: synthetic["kept"]
    results = []
    for name, sets in variants:
        cfg = recipe("demo", data_dir=s.data_dir, output_dir=work / name[0], train_sets=sets,
                     eval_sets=["uci-imdb"], max_train_per_set=args.cap, max_eval_per_set=50,
                     image_pool=120, progress=False, seed=args.seed)
        t = time.perf_counter()
        res = train(cfg)
        secs = time.perf_counter() - t
        proc = subprocess.run(
            [sys.executable, "-m", "shopsense.cli", "evaluate", "--data", str(eval_file),
             "--model", str(res.bundle_dir), "--json"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "SHOPSENSE_HOME": str(work / "home")})
        ev = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append({"variant": name, "train_texts": res.train_samples,
                        "train_seconds": round(secs, 1), "n": ev["n"],
                        "accuracy": round(ev["accuracy"], 4), "macro_f1": round(ev["macro_f1"], 4)})
    out["results"] = results
    if args.json:
        print(json.dumps(out, indent=2))
        return
    v = out["validation"]
    print(f"held-out category: dvd; synthetic {args.per_label}/label in "
          f"{out['synthesize_seconds']} s; validation kept {v['kept']}/{v['synthetic']} "
          f"(AUC {v['auc_before']} -> {v['auc_after']}; rejected {v['rejected_by_reason']}) "
          f"in {out['validate_seconds']} s; load average at start "
          f"{out['load_average_start']:.1f}")
    print(f"{'variant':32s} {'train samples':>13s} {'train s':>8s} {'n':>5s} {'accuracy':>8s} "
          f"{'macro-F1':>8s}")
    for r in results:
        print(f"{r['variant']:32s} {r['train_texts']:13d} {r['train_seconds']:8.1f} {r['n']:5d} "
              f"{r['accuracy']:8.4f} {r['macro_f1']:8.4f}")


if __name__ == "__main__":
    main()
