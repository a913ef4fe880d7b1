"""The evaluation contract (stable; outside checks call it).

``shopsense evaluate --data FILE.jsonl [--model URI] [--baseline keyword|vader] --json`` prints
one JSON object: ``n``, ``accuracy``, ``macro_f1``, ``per_class``, ``confusion``, ``model``
(plus ``labels``, ``per_category`` and ``seconds``). Each line has ``text`` and ``label``
and optionally ``image`` (a path relative to the file, or a URI) and ``category``. When the
file holds only two labels, the prediction is the more likely of those two.
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
