"""Quality on real reviews held out from training: models beside both baselines.

    .venv/bin/python benchmarks/quality.py                 # every registered version
    .venv/bin/python benchmarks/quality.py --model champion=models:/shopsense-sentiment@champion

Held-out sets (never trained on by either recipe): Blitzer ``dvd`` (Amazon DVD reviews, a
product category the model never saw) and UCI ``imdb`` (movie-review sentences, another
source). Both hold two labels, so every system chooses the more likely of negative/positive,
as the evaluation contract says. Quality is deterministic: one run per system.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shopsense.baselines import BASELINES  # noqa: E402
from shopsense.evaluate import evaluate_records  # noqa: E402
from shopsense.model.train import DEFAULT_EVAL_SETS, load_labelled, predict_in_batches  # noqa: E402
from shopsense.settings import get_settings  # noqa: E402


def default_models() -> dict[str, str]:
    """Every registered version, labelled by the recipe that trained it."""
    from shopsense import registry

    s = get_settings()
    models: dict[str, str] = {}
    for row in registry.list_versions(s):
        if row["recipe"]:
            models[f"{row['recipe']} (v{row['version']})"] = f"models:/{s.model_name}/{row['version']}"
    return models


def run(models: dict[str, str], sets: list[str], limit: int | None) -> list[dict]:
    from shopsense import registry
    from shopsense.model.classifier import Predictor

    s = get_settings()
    rows = load_labelled(sets, s.data_dir, limit, seed=7)
    by_set = {name: [r for r in rows if r["set"] == name] for name in sets}
    systems: list[tuple[str, object]] = [(f"baseline:{b}", fn) for b, fn in BASELINES.items()]
    for label, uri in models.items():
        pred = Predictor.from_bundle(registry.resolve(s, uri).bundle_dir)
        systems.append((label, pred))
    results = []
    for name, recs in [*by_set.items(), ("all held-out", rows)]:
        for label, sysobj in systems:
            start = time.perf_counter()
            texts = [r["text"] for r in recs]
            if label.startswith("baseline:"):
                proba = sysobj(texts)
            else:
                proba = predict_in_batches(sysobj, texts, batch_size=64)
            out = evaluate_records(recs, lambda t, i, p=proba: p, model={"name": label})
            results.append({"set": name, "system": label, "n": out["n"],
                            "accuracy": out["accuracy"], "macro_f1": out["macro_f1"],
                            "seconds": round(time.perf_counter() - start, 2)})
    return results


def print_table(results: list[dict]) -> None:
    base = {(r["set"]): r["macro_f1"] for r in results if r["system"] == "baseline:keyword"}
    print(f"{'set':14s} {'system':22s} {'n':>5s} {'accuracy':>9s} {'macro-F1':>9s} {'vs keyword':>10s}")
    for r in results:
        ratio = r["macro_f1"] / base[r["set"]] if base.get(r["set"]) else float("nan")
        print(f"{r['set']:14s} {r['system']:22s} {r['n']:5d} {r['accuracy']:9.4f} "
              f"{r['macro_f1']:9.4f} {ratio:9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="LABEL=URI (repeatable); default: every registered version")
    ap.add_argument("--sets", default=",".join(DEFAULT_EVAL_SETS))
    ap.add_argument("--limit", type=int, default=None, help="at most N reviews per set")
    ap.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.model) if args.model else default_models()
    if not models:
        sys.exit("error: no model registered; run `make demo` or `shopsense train` first")
    print(f"# quality on held-out real reviews, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.machine()}")
    results = run(models, [x for x in args.sets.split(",") if x], args.limit)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
