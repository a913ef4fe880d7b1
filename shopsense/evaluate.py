"""The evaluation contract (stable; outside checks call it).

``shopsense evaluate --data FILE.jsonl [--model URI] [--baseline keyword|vader] --json`` prints
one JSON object: ``n``, ``accuracy``, ``macro_f1``, ``per_class``, ``confusion``, ``model``
(plus ``labels``, ``per_category`` and ``seconds``). Each line has ``text`` and ``label``
and optionally ``image`` (a path relative to the file, or a URI) and ``category``. When the
file holds only two labels, the prediction is the more likely of those two.

The held-out report of a training run (:func:`evaluation_report`: the contract's figures
overall, per set and per category, with the expected calibration error of
:func:`calibration`) is made here too, from the probabilities a model gave; scoring a model
(``shopsense.model.train.evaluate_held_out``) stays with the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from shopsense import LABELS
from shopsense.data.jsonl import iter_json_objects
from shopsense.errors import DataError

ProbaFn = Callable[[Sequence[str | None], Sequence[Any]], np.ndarray]


def read_eval_file(path: Path) -> list[dict[str, Any]]:
    """Read and check an evaluation JSONL file; errors name the file and line."""
    records = []
    for lineno, rec in iter_json_objects(Path(path)):
        if rec.get("label") not in LABELS:
            raise DataError(
                f"{path}:{lineno}: label must be one of {', '.join(LABELS)}, "
                f"got {rec.get('label')!r}"
            )
        text = rec.get("text")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: text must be a string")
        if not (text and text.strip()) and not rec.get("image"):
            raise DataError(f"{path}:{lineno}: needs text or image")
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def choose(proba: np.ndarray, allowed: Sequence[str]) -> list[str]:
    """Argmax restricted to the allowed labels (ties go to the first allowed label)."""
    idx = [LABELS.index(lbl) for lbl in LABELS if lbl in allowed]
    sub = proba[:, idx]
    return [LABELS[idx[int(j)]] for j in sub.argmax(axis=1)]


def metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f)),
        "per_class": {
            lbl: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, lbl in enumerate(labels)
        },
        "confusion": {
            "labels": labels,
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }


def evaluate_records(
    records: Sequence[dict[str, Any]],
    proba_fn: ProbaFn,
    *,
    model: dict[str, Any],
    images: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Score ``records`` with ``proba_fn(texts, images) -> (n, 3)`` probabilities."""
    start = time.perf_counter()
    texts = [r.get("text") or None for r in records]
    imgs = list(images) if images is not None else [None] * len(records)
    proba = proba_fn(texts, imgs)
    y_true = [r["label"] for r in records]
    allowed = sorted(set(y_true), key=LABELS.index)
    # Two labels in the file: choose the more likely of those two. Otherwise all three.
    labels = allowed if len(allowed) == 2 else list(LABELS)
    y_pred = choose(proba, labels)
    out = metrics(y_true, y_pred, labels)
    out["labels"] = labels
    out["model"] = model
    cats = sorted({r["category"] for r in records if r.get("category")})
    if cats:
        out["per_category"] = {}
        for cat in cats:
            sel = [i for i, r in enumerate(records) if r.get("category") == cat]
            m = metrics([y_true[i] for i in sel], [y_pred[i] for i in sel], labels)
            out["per_category"][cat] = {k: m[k] for k in ("n", "accuracy", "macro_f1")}
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def calibration(proba: np.ndarray, y_true: list[str], labels: list[str], *,
                bins: int = 15) -> dict:
    """Expected calibration error of the predicted label's probability.

    The probabilities are renormalised over ``labels`` (the labels a set holds, as the
    prediction is), the confidence is the largest of them, and ECE is the sample-weighted mean
    over ``bins`` equal-width confidence bins of |accuracy - mean confidence|."""
    if len(y_true) == 0:
        return {"ece": float("nan"), "bins": []}
    idx = [LABELS.index(lbl) for lbl in labels]
    sub = proba[:, idx]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    conf = sub.max(axis=1)
    pred = [labels[j] for j in sub.argmax(axis=1)]
    correct = np.array([p == t for p, t in zip(pred, y_true)], dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        acc, mean_conf = float(correct[sel].mean()), float(conf[sel].mean())
        ece += sel.sum() / len(conf) * abs(acc - mean_conf)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(sel.sum()),
                      "accuracy": acc, "confidence": mean_conf})
    return {"ece": float(ece), "bins": table}


def evaluation_report(rows: list[dict], proba: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-label (``per_class``), per-category and per-set figures and the
    expected calibration error of held-out ``rows`` ({text, label, set, category}) scored
    with ``proba`` (one row of label probabilities per record, in ``LABELS`` order)."""
    by_set: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_set.setdefault(r.get("set") or "all", []).append(i)
    per_set = {}
    for name, idx in by_set.items():
        sub = proba[idx]
        per_set[name] = evaluate_records([rows[i] for i in idx], lambda t, im, sub=sub: sub,
                                         model={})
        per_set[name]["ece"] = calibration(sub, [rows[i]["label"] for i in idx],
                                           per_set[name]["labels"])["ece"]
    overall = evaluate_records(rows, lambda t, im: proba, model={})
    y_true = [r["label"] for r in rows]
    cal = calibration(proba, y_true, overall["labels"])
    overall["ece"] = cal["ece"]
    overall["calibration_bins"] = cal["bins"]
    for cat, figures in overall.get("per_category", {}).items():
        idx = [i for i, r in enumerate(rows) if r.get("category") == cat]
        figures["ece"] = calibration(proba[idx], [y_true[i] for i in idx],
                                     overall["labels"])["ece"]
    overall["per_set"] = {
        k: {m: v[m] for m in ("n", "accuracy", "macro_f1", "ece")} for k, v in per_set.items()
    }
    return overall
