"""Quality on real reviews held out from training: models beside both baselines.

    .venv/bin/python benchmarks/quality.py                 # every registered version
    .venv/bin/python benchmarks/quality.py --model champion=models:/shopsense-sentiment@champion
    .venv/bin/python benchmarks/quality.py --llm --half b --limit 500   # + the LLM teacher

``--llm`` adds the LLM's zero-shot judgement (the teacher; labels it made before come from the
teacher-label cache, the rest are made now: slow, about 2-5 s per review on 2 cores).
``--half``/``--limit`` pick the same seeded records the teacher queue labels
(:func:`shopsense.llm.teacher.texts_for`), so every system is scored on the same reviews.
``--labelled-only`` keeps, of those, only the reviews the LLM has already labelled (the
teacher-label cache), for every system alike: a figure without the hours of labelling the
rest would cost (the printed ``n`` says how many; the cache's order is not the seeded one, so
the subset is an arbitrary, not a chosen, part of the selection).

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


def held_out_rows(sets: list[str], limit: int | None, half: str | None) -> list[dict]:
    """Labelled records of the sets: all, or a seeded half, at most ``limit`` per set (the
    selection :func:`shopsense.llm.teacher.texts_for` makes for the teacher)."""
    import random

    from shopsense.data.loaders import load_set
    from shopsense.data.splits import seeded_half
    from shopsense.model.train import review_rows

    if half is None:
        return load_labelled(sets, get_settings().data_dir, limit, seed=7)
    rows = []
    for name in sets:
        reviews = seeded_half([r for r in load_set(name) if r.text.strip()], half, 7)
        if limit:
            random.Random(7).shuffle(reviews)
            reviews = reviews[:limit]
        rows.extend(review_rows(reviews, name))
    return rows


class _LLM:
    """The LLM's zero-shot judgement as a system (through the teacher-label cache)."""

    def __call__(self, texts):
        from shopsense.llm.server import llm_endpoint
        from shopsense.llm.teacher import teacher_labeller, teacher_labels

        with llm_endpoint() as ep:
            cache = teacher_labels(ep)
            try:
                return teacher_labeller(ep).proba(texts, cache=cache)
            finally:
                cache.compact()


def already_labelled(rows: list[dict]) -> list[dict]:
    """The rows whose text the configured LLM has labelled before (nothing is labelled now)."""
    from shopsense.llm.labeller import TeacherLabels, teacher_key
    from shopsense.llm.server import configured_identity
    from shopsense.store import open_store

    s = get_settings()
    known = TeacherLabels(open_store(s.default_store_uri(), s), configured_identity(s)).lookup()
    return [r for r in rows if teacher_key(r["text"], s.llm.label_max_chars) in known]


def run(models: dict[str, str], sets: list[str], limit: int | None, *, llm: bool = False,
        half: str | None = None, labelled_only: bool = False) -> list[dict]:
    from shopsense import registry
    from shopsense.model.classifier import Predictor

    s = get_settings()
    rows = held_out_rows(sets, limit, half)
    if labelled_only:
        rows = already_labelled(rows)
    by_set = {name: [r for r in rows if r["set"] == name] for name in sets}
    systems: list[tuple[str, object]] = [(f"baseline:{b}", fn) for b, fn in BASELINES.items()]
    if llm:
        systems.append(("LLM teacher (zero-shot)", _LLM()))
    for label, uri in models.items():
        pred = Predictor.from_bundle(registry.resolve(s, uri).bundle_dir)
        systems.append((label, pred))
    results = []
    for name, recs in [*by_set.items(), ("all held-out", rows)]:
        for label, sysobj in systems:
            start = time.perf_counter()
            texts = [r["text"] for r in recs]
            if not isinstance(sysobj, Predictor):
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
    llm = {r["set"]: r["accuracy"] for r in results if r["system"].startswith("LLM")}
    print(f"{'set':14s} {'system':26s} {'n':>5s} {'accuracy':>9s} {'macro-F1':>9s} "
          f"{'vs keyword':>10s}" + (f" {'acc. - LLM':>10s}" if llm else ""))
    for r in results:
        ratio = r["macro_f1"] / base[r["set"]] if base.get(r["set"]) else float("nan")
        gap = f" {r['accuracy'] - llm[r['set']]:+10.4f}" if r["set"] in llm else ""
        print(f"{r['set']:14s} {r['system']:26s} {r['n']:5d} {r['accuracy']:9.4f} "
              f"{r['macro_f1']:9.4f} {ratio:9.2f}x{gap}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="LABEL=URI (repeatable); default: every registered version")
    ap.add_argument("--sets", default=",".join(DEFAULT_EVAL_SETS))
    ap.add_argument("--limit", type=int, default=None, help="at most N reviews per set")
    ap.add_argument("--json", type=Path, default=None, help="also write raw results here")
    ap.add_argument("--llm", action="store_true", help="also the LLM teacher, zero-shot")
    ap.add_argument("--half", choices=("a", "b"), default=None,
                    help="only the seeded half a or b of each set")
    ap.add_argument("--labelled-only", action="store_true",
                    help="only the reviews the LLM has labelled before (every system alike)")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.model) if args.model else default_models()
    if not models and not args.llm:
        sys.exit("error: no model registered; run `make demo` or `shopsense train` first")
    print(f"# quality on held-out real reviews, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.machine()}")
    results = run(models, [x for x in args.sets.split(",") if x], args.limit, llm=args.llm,
                  half=args.half, labelled_only=args.labelled_only)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
