"""Distillation: the compact model with and without the LLM teacher, beside the teacher, on
held-out real review sets the training never saw.

The training texts are the base sets (``DEFAULT_TRAIN_SETS``: Blitzer books and electronics,
UCI amazon, Hu & Liu), each capped at ``--per-set`` labelled reviews (a seeded sample, imported
by the pipeline's ``import_reviews`` step). The LLM labels every one of them into the
teacher-label cache first (``shopsense.llm.teacher.label_into_cache``: resumable, so a killed
run loses at most one shard; texts are labelled rank by rank across the sets, so a partial
cache still covers a smaller ``--per-set`` whole), and the held-out files too. Then, per seed,
two models of the same recipe (``coldstart``: 2 epochs, 128 tokens) on the same rows:

* **compact**: real labels only (``teacher=None``);
* **distilled**: real labels mixed with the teacher's distributions (``teacher="auto"``,
  ``distill_weight`` 0.5 unless ``--distill-weight``).

All are scored with ``shopsense evaluate --data F --json`` (``--baseline llm`` for the
teacher, ``--model BUNDLE`` for the two) on the first ``--eval-per-set`` reviews of half B of
each held-out set (``seeded_half``: the cold-start split, so the label mix is kept).
Target (the LLM issue): the distilled model within 2 points of the teacher's accuracy.

    .venv/bin/python benchmarks/distill.py [--per-set 500] [--eval-sets blitzer-dvd,uci-imdb]
        [--eval-per-set 300] [--seeds 0] [--home DIR] [--from-results FILE]

The teacher-label cache lives in ``SHOPSENSE_STORE_URI`` (default the home's store) and is
reused by a re-run; the models and work files go to ``--home`` (default a fresh directory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.cold_start import _jsonl, _scores, add_run_args, bench_home


def _by_rank(rows: list[dict]) -> list[str]:
    """Texts ordered rank by rank across sets: the first of each set, then the second, ..."""
    per_set: dict[str, list[str]] = {}
    for r in rows:
        per_set.setdefault(r["set"], []).append(r["text"])
    out: list[str] = []
    for i in range(max((len(v) for v in per_set.values()), default=0)):
        out.extend(v[i] for v in per_set.values() if i < len(v))
    return out


def _train(work: Path, name: str, seed: int, teacher: str | None, args) -> tuple[Path, dict]:
    from pipelines import steps

    d = work / f"{name}-seed{seed}"
    t = time.monotonic()
    info = steps.train_model(
        train_data=work / "training", model_dir=d, recipe="coldstart",
        num_workers=args.workers, cpus_per_worker=1.0, run_name=f"distill-{name}-{seed}",
        overrides={"max_train_per_set": None, "seed": seed + 13, "teacher": teacher,
                   "distill_weight": args.distill_weight})
    metrics = {k: v for k, v in info["metrics"].items() if "teacher" in k}
    return d / "bundle", {"train_s": round(time.monotonic() - t, 1), **metrics}


def run(args, env: dict, work: Path) -> dict:
    from pipelines import steps
    from shopsense.data.loaders import load_set
    from shopsense.data.splits import seeded_half
    from shopsense.llm.teacher import label_into_cache
    from shopsense.model.train import DEFAULT_TRAIN_SETS, review_rows

    work.mkdir(parents=True, exist_ok=True)
    base = [s for s in args.train_sets.split(",") if s] or DEFAULT_TRAIN_SETS
    steps.import_reviews(sets=base, out_dir=work / "imported", max_per_set=args.per_set,
                         seed=args.seed, name="imported")
    evals: dict[str, Path] = {}
    eval_texts: list[str] = []
    heldout = []
    for name in [s for s in args.eval_sets.split(",") if s]:
        rs = [r for r in load_set(name) if r.label and r.text.strip()]
        half_b = seeded_half(rs, "b", 7)[: args.eval_per_set]
        heldout.extend(half_b)
        evals[name] = _jsonl(work / f"{name}-B.jsonl", half_b, labels=True)
        eval_texts.extend(json.loads(line)["text"] for line in evals[name].open())
    # assembled as the pipeline does: no training review repeats a held-out one
    steps.write_local_dataset(work / "heldout", heldout, name="heldout")
    steps.assemble_training_data(parts={"imported": work / "imported"},
                                 heldout_dir=work / "heldout", out_dir=work / "training")
    _, reviews, _, _ = steps._read_local(work / "training")
    train_texts = _by_rank(review_rows(reviews, "training"))

    out: dict = {"train_sets": base, "per_set": args.per_set, "train_texts": len(train_texts),
                 "eval": {k: str(v) for k, v in evals.items()}}
    t = time.monotonic()
    # the held-out files first (the teacher's score needs all of them), then the training texts
    out["labelling"] = {
        "eval": label_into_cache(eval_texts, progress=True),
        "train": label_into_cache(train_texts, progress=True),
    }
    out["labelling_minutes"] = round((time.monotonic() - t) / 60, 1)

    out["seeds"] = []
    for seed in args.seeds:
        compact, c_info = _train(work, "compact", seed, None, args)
        distilled, d_info = _train(work, "distilled", seed, "auto", args)
        systems = {"compact": ["--model", str(compact)], "distilled": ["--model", str(distilled)]}
        out["seeds"].append({"seed": seed, "compact": c_info, "distilled": d_info,
                             "scores": {n: _scores(f, systems, env) for n, f in evals.items()}})
    out["teacher"] = {n: _scores(f, {"llm": ["--baseline", "llm"]}, env)["llm"]
                      for n, f in evals.items()}
    return out


def print_tables(res: dict) -> None:
    lab = res.get("labelling", {})
    print(f"training texts: {res['train_texts']} ({res['per_set']} per set of "
          f"{', '.join(res['train_sets'])}); teacher {lab.get('train', {}).get('teacher')}; "
          f"labelled now {lab.get('train', {}).get('labelled')} + "
          f"{lab.get('eval', {}).get('labelled')} held-out, "
          f"{res.get('labelling_minutes')} min")
    print()
    print("| held-out set | system | n | accuracy (median of seeds) | macro-F1 | "
          "accuracy − teacher | seeds |")
    print("|---|---|---|---|---|---|---|")
    for name, teacher in res["teacher"].items():
        print(f"| {name} | LLM teacher, zero-shot | {teacher['n']} | {teacher['accuracy']:.4f} |"
              f" {teacher['macro_f1']:.4f} | 0 | — |")
        for system in ("compact", "distilled"):
            acc = [s["scores"][name][system]["accuracy"] for s in res["seeds"]]
            f1 = [s["scores"][name][system]["macro_f1"] for s in res["seeds"]]
            ma = statistics.median(acc)
            print(f"| | {system} | {teacher['n']} | {ma:.4f} | {statistics.median(f1):.4f} | "
                  f"{(ma - teacher['accuracy']) * 100:+.1f} points | "
                  f"{', '.join(f'{a:.4f}' for a in acc)} |")
    print()
    for s in res["seeds"]:
        print(f"seed {s['seed']}: compact {s['compact']}, distilled {s['distilled']}")
    print()
    for name, teacher in res["teacher"].items():
        acc = statistics.median(s["scores"][name]["distilled"]["accuracy"] for s in res["seeds"])
        gap = (teacher["accuracy"] - acc) * 100
        where = f"{gap:.1f} points below" if gap > 0 else f"{-gap:.1f} points above"
        print(f"target, {name}: distilled within 2 points of the teacher: {where} it -> "
              f"{'met' if gap <= 2.0 else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-sets", default="", help="comma-separated (default: the base sets)")
    ap.add_argument("--per-set", type=int, default=500)
    ap.add_argument("--eval-sets", default="blitzer-dvd,uci-imdb")
    ap.add_argument("--eval-per-set", type=int, default=300)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the training sample")
    ap.add_argument("--distill-weight", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    add_run_args(ap)
    args = ap.parse_args()
    if args.from_results:
        print_tables(json.loads(args.from_results.read_text()))
        return

    env, work = bench_home(args.home, "distill-home-")
    res = {"load_average_start": os.getloadavg()[0], **run(args, env, work)}
    (work / "results.json").write_text(json.dumps(res, indent=2, default=str))
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return
    print_tables(res)


if __name__ == "__main__":
    main()
