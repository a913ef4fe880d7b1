"""Cold start, per held-out category: how much of the gap to an oracle the data loop closes.

For each Blitzer category C (books, dvd, electronics), its 2,000 reviews are split in seeded
halves (:func:`shopsense.data.splits.seeded_half`, per label): half A is the category's
"new" reviews, half B is for evaluation only. Three models, each trained by the pipeline's
own step functions with the same recipe (``coldstart``: the base sets capped at
``--base-per-set`` each, 2 epochs, 128 tokens, distilled from whatever the LLM labelled):

* **without**: the base sets without C (the standard training sets minus C);
* **cold start**: ``shopsense coldstart --category C --reviews A.jsonl --json`` (texts, titles
  and products of A, no labels, no ratings), with **without** as the champion it pools with
  the LLM; auto-label -> synthesize -> validate -> assemble -> train -> register;
* **oracle**: the base sets plus A with its true labels.

All three are scored with ``shopsense evaluate --data B.jsonl --model ... --json`` (two labels).
Printed per category: macro-F1 and accuracy of each, the share of the gap closed
((cold - without) / (oracle - without)), the auto-labels' accuracy on their confident subset
with its coverage (against A's true labels), and the discriminator AUC of the kept synthetic
reviews. Targets (the LLM issue): at least half the gap closed on every category, kept AUC at
most 0.7, confident auto-labels at least 0.9 accurate.

    .venv/bin/python benchmarks/cold_start.py [--categories dvd,books,electronics]
        [--budget-minutes 60] [--teacher-eval 300] [--json] [--from-results FILE]

The LLM's labels go to the teacher-label cache of ``SHOPSENSE_STORE_URI`` (default the
home's store), so a re-run reuses them; the registry and the work files go to a fresh
``SHOPSENSE_HOME`` per run unless ``--home`` is given.
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

CATEGORIES = ("dvd", "books", "electronics")


def _cli(*args: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", "from shopsense.cli import main; main()", *args],
                       check=False, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"shopsense {' '.join(args[:2])} failed: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _train(name: str, work: Path, base_sets: list[str], extra: list | None, heldout: list,
           args) -> tuple[Path, float]:
    """A model of the pipeline's step functions, the coldstart recipe; its bundle dir."""
    from pipelines import steps

    t = time.monotonic()
    d = work / name
    steps.import_reviews(sets=base_sets, out_dir=d / "imported", max_per_set=args.base_per_set,
                         seed=args.seed, name="imported")
    steps.write_local_dataset(d / "heldout", heldout, name="heldout")
    parts = {"imported": d / "imported"}
    if extra:
        steps.write_local_dataset(d / "extra", extra, name="category")
        parts = {"category": d / "extra", **parts}
    steps.assemble_training_data(parts=parts, heldout_dir=d / "heldout", out_dir=d / "training")
    steps.train_model(train_data=d / "training", model_dir=d / "model", recipe="coldstart",
                      num_workers=args.workers, cpus_per_worker=1.0, run_name=f"bench-{name}",
                      overrides={"max_train_per_set": None, "seed": args.seed + 13})
    return d / "model" / "bundle", time.monotonic() - t


def _jsonl(path: Path, reviews, *, labels: bool) -> Path:
    from shopsense.text import review_content

    with path.open("w") as fh:
        for r in reviews:
            if labels:
                row = {"text": review_content(r.title, r.text), "label": r.label,
                       "category": r.product.category if r.product else None}
            else:
                row = {"text": r.text, "title": r.title,
                       "product": r.product.name if r.product else None}
            fh.write(json.dumps(row) + "\n")
    return path


def run_category(cat: str, args, env: dict, work: Path) -> dict:
    from shopsense.data.loaders import load_set
    from shopsense.data.splits import seeded_half
    from shopsense.model.train import DEFAULT_TRAIN_SETS

    reviews = [r for r in load_set(f"blitzer-{cat}") if r.label and r.text.strip()]
    half_a, half_b = seeded_half(reviews, "a", 7), seeded_half(reviews, "b", 7)
    if args.max_input:
        half_a = half_a[: args.max_input]
    base = [s for s in DEFAULT_TRAIN_SETS if s != f"blitzer-{cat}"]
    w = work / cat
    w.mkdir(parents=True, exist_ok=True)
    eval_file = _jsonl(w / "B.jsonl", half_b, labels=True)
    input_file = _jsonl(w / "A.jsonl", half_a, labels=False)
    out: dict = {"category": cat, "input": len(half_a), "eval": len(half_b), "base_sets": base}

    without, secs = _train("without", w, base, None, half_b, args)
    out["without_train_s"] = round(secs, 1)
    t = time.monotonic()
    cold = _cli("coldstart", "--category", cat, "--reviews", str(input_file), "--json",
                "--budget-minutes", str(args.budget_minutes), "--base-sets", ",".join(base),
                "--base-per-set", str(args.base_per_set), "--champion", str(without),
                "--workers", str(args.workers), "--seed", str(args.seed), env=env)
    out["run"] = cold  # the coldstart command's own JSON
    out["coldstart_wall_minutes"] = round((time.monotonic() - t) / 60, 2)
    oracle, secs = _train("oracle", w, base, half_a, half_b, args)
    out["oracle_train_s"] = round(secs, 1)

    systems = {"without": ["--model", str(without)], "coldstart": ["--model", cold["model"]],
               "oracle": ["--model", str(oracle)]}
    out["scores"] = _scores(eval_file, systems, env)
    if args.teacher_eval:
        # the teacher beside the three on the same first N of half B (the seeded order keeps
        # the label mix): is the distilled cold-start model within 2 points of its teacher?
        sub = _jsonl(w / "B-teacher.jsonl", half_b[: args.teacher_eval], labels=True)
        out["teacher_subset"] = _scores(sub, {"llm": ["--baseline", "llm"], **systems}, env)
    sc = out["scores"]
    gap = sc["oracle"]["macro_f1"] - sc["without"]["macro_f1"]
    out["gap_closed"] = ((sc["coldstart"]["macro_f1"] - sc["without"]["macro_f1"]) / gap
                         if gap > 1e-9 else None)
    out["auto_labels"] = _auto_label_accuracy(Path(cold["work_dir"]) / "labelled", half_a)
    return out


def _scores(data: Path, systems: dict[str, list[str]], env: dict) -> dict[str, dict]:
    """``shopsense evaluate --data DATA`` for each system (its ``--model``/``--baseline``)."""
    out = {}
    for name, how in systems.items():
        ev = _cli("evaluate", "--data", str(data), *how, "--json", env=env)
        out[name] = {"accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"], "n": ev["n"]}
    return out


def _auto_label_accuracy(labelled_dir: Path, truth) -> dict:
    """The automatic labels against the true ones, on the subset that got one."""
    from shopsense.data.dataset import read_dataset
    from shopsense.store import LocalStore
    from shopsense.text import review_content

    true = {review_content(r.title, r.text): r.label for r in truth}
    _, reviews = read_dataset(LocalStore(labelled_dir.parent), labelled_dir.name)
    got = [(r.label, true.get(review_content(r.title, r.text)), r.label_source)
           for r in reviews]
    labelled = [(p, t) for p, t, _ in got if p is not None and t is not None]
    by_source: dict[str, list[bool]] = {}
    for p, t, src in got:
        if p is not None and t is not None:
            by_source.setdefault(src or "?", []).append(p == t)
    return {"coverage": round(len(labelled) / max(1, len(got)), 4),
            "accuracy": round(sum(p == t for p, t in labelled) / max(1, len(labelled)), 4),
            "labelled": len(labelled), "of": len(got),
            "by_source": {k: {"n": len(v), "accuracy": round(sum(v) / len(v), 4)}
                          for k, v in by_source.items()}}


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """--home, --json and --from-results, as the LLM benchmarks share them."""
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--from-results", type=Path, default=None,
                    help="print the tables of a saved run's results.json and exit")


def bench_home(home: Path | None, prefix: str) -> tuple[dict, Path]:
    """A fresh ``SHOPSENSE_HOME`` (or ``home``) for the run's registry and work files, with the
    object store of the caller's settings kept, so the teacher-label cache is shared and
    reused. Returns (environment for ``shopsense`` subprocesses, work folder)."""
    from shopsense.settings import get_settings

    store = get_settings().default_store_uri()
    home = (home or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    os.environ.update({"SHOPSENSE_HOME": str(home), "SHOPSENSE_STORE_URI": store})
    get_settings.cache_clear()
    return dict(os.environ), home / "bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--budget-minutes", type=float, default=60.0)
    ap.add_argument("--base-per-set", type=int, default=500)
    ap.add_argument("--max-input", type=int, default=None, help="at most N reviews of half A")
    ap.add_argument("--teacher-eval", type=int, default=300,
                    help="score the LLM teacher and the three models on the first N reviews "
                         "of half B (0: skip; the LLM reads about 2 s per review)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_run_args(ap)
    args = ap.parse_args()
    if args.from_results:
        print_tables(json.loads(args.from_results.read_text()))
        return

    env, work = bench_home(args.home, "cold-start-home-")
    results = {"load_average_start": os.getloadavg()[0], "budget_minutes": args.budget_minutes,
               "base_per_set": args.base_per_set, "categories": []}
    for cat in [c for c in args.categories.split(",") if c]:
        results["categories"].append(run_category(cat, args, env, work))
        (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return
    print_tables(results)


def print_tables(results: dict) -> None:
    """The two tables of a run (also from a saved ``results.json``: ``--from-results``)."""
    print(f"# cold start per held-out Blitzer category (budget {results['budget_minutes']:g} "
          f"min, base sets capped at {results['base_per_set']}; load average at start "
          f"{results['load_average_start']:.1f})")
    print(f"{'category':12s} {'without':>8s} {'cold':>8s} {'oracle':>8s} {'gap closed':>10s} "
          f"{'auto-label acc (cov.)':>22s} {'AUC before':>10s} {'kept AUC':>9s} "
          f"{'synth kept':>10s} {'minutes':>8s}")
    nan = float("nan")
    for r in results["categories"]:
        c, a, sc = r["run"], r["auto_labels"], r["scores"]
        auc = {k: nan if v is None else v for k, v in c["discriminator_auc"].items()}
        gap = "n/a" if r["gap_closed"] is None else f"{r['gap_closed']:.2f}"
        print(f"{r['category']:12s} {sc['without']['macro_f1']:8.4f} "
              f"{sc['coldstart']['macro_f1']:8.4f} {sc['oracle']['macro_f1']:8.4f} {gap:>10s} "
              f"{a['accuracy']:13.4f} ({a['coverage']:.2f}) "
              f"{auc['before']:10.3f} {auc['after']:9.3f} "
              f"{c['counts']['synthetic_kept']:4d}/{c['counts']['synthetic_generated']:<5d} "
              f"{c['minutes']:8.1f}")
    print("(macro-F1 on half B of each category; cold = `shopsense coldstart` on half A "
          "without labels; gap closed = (cold - without) / (oracle - without); minutes = "
          "the coldstart command's own)")
    rows = [r for r in results["categories"] if r.get("teacher_subset")]
    if rows:
        print()
        print("# the LLM teacher beside the three models, accuracy on the first "
              f"{rows[0]['teacher_subset']['llm']['n']} reviews of half B")
        print(f"{'category':12s} {'n':>5s} {'teacher':>8s} {'without':>8s} {'cold':>8s} "
              f"{'oracle':>8s} {'cold - teacher':>15s}")
        for r in rows:
            t = r["teacher_subset"]
            print(f"{r['category']:12s} {t['llm']['n']:5d} {t['llm']['accuracy']:8.4f} "
                  f"{t['without']['accuracy']:8.4f} {t['coldstart']['accuracy']:8.4f} "
                  f"{t['oracle']['accuracy']:8.4f} "
                  f"{100 * (t['coldstart']['accuracy'] - t['llm']['accuracy']):+12.1f} pt")


if __name__ == "__main__":
    main()
