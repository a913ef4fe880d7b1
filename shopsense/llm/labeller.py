"""Zero-shot sentiment from the LLM, read from label-word log-probabilities (no free text
parsed), and the teacher labels it leaves in the object store.

:class:`ZeroShotLabeller` asks, after a one-line instruction, for one word and reads the
first answer token's ``top_logprobs``: every token that spells the start of a label word
("neg", "Negative", " positive", ...) adds its probability to that label. A label missing from
the top tokens gets the lowest listed log-probability (an upper bound). The three label
log-probabilities are normalised into a distribution over ``negative, neutral, positive``
(``LABELS`` order); a two-label file then chooses the likelier of its two labels, as the
evaluation contract says for any model.

:class:`TeacherLabels` keeps those distributions as a dataset keyed by the text's digest,
under ``teacher-labels/<teacher>/<prompt version>/`` in the object store: finished labels go
out in small shards (``parts/``) as they are made, so a killed run loses at most one shard,
and a later run labels only what is missing. :meth:`TeacherLabels.compact` folds the shards
into ``labels.jsonl`` with a ``manifest.json`` (teacher identity, prompt, count, digest).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from shopsense import LABELS
from shopsense.errors import DataError
from shopsense.data.shards import ShardedRows
from shopsense.store import ObjectStore, join_key

log = logging.getLogger(__name__)

__all__ = ["PROMPT_VERSION", "TeacherLabels", "ZeroShotLabeller", "clip_review",
           "label_distribution", "teacher_key"]

#: changes whenever the prompt or the clipping changes (it keys the teacher-label cache)
PROMPT_VERSION = "zs1"
SYSTEM = "You are a careful annotator of customer reviews."
INSTRUCTION = ("What sentiment does the customer express in this review: positive, negative "
               "or neutral? Answer with one word.")


def clip_review(text: str, max_chars: int) -> str:
    """``text`` with at most ``max_chars`` characters: its head and its tail (the verdict is
    often at the end), cut at word boundaries."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    head_n = int(max_chars * 0.6)
    tail_n = max_chars - head_n - 5
    head = text[:head_n].rsplit(" ", 1)[0]
    tail = text[-tail_n:].split(" ", 1)[-1]
    return f"{head} ... {tail}"


def teacher_key(text: str, max_chars: int) -> str:
    """The cache key of ``text``: what the LLM is shown of it, under this prompt version."""
    shown = clip_review(text, max_chars)
    return hashlib.sha256(f"{PROMPT_VERSION}\x1f{shown}".encode()).hexdigest()[:32]


def label_distribution(top: dict[str, float]) -> tuple[np.ndarray, float]:
    """(probabilities over ``LABELS``, the share of the first token's mass on label words)."""
    per_label: dict[str, list[float]] = {lbl: [] for lbl in LABELS}
    for token, lp in top.items():
        word = token.strip().lower()
        if len(word) < 3:
            continue
        for lbl in LABELS:
            if lbl.startswith(word):
                per_label[lbl].append(lp)
    floor = min(top.values()) if top else -30.0
    lps = np.array([np.logaddexp.reduce(v) if v else floor for v in per_label.values()],
                   dtype=np.float64)
    mass = float(sum(math.exp(x) for v in per_label.values() for x in v))
    p = np.exp(lps - lps.max())
    return p / p.sum(), min(1.0, mass)


class ZeroShotLabeller:
    """Label distributions for review texts from an :class:`~shopsense.llm.client.LLMClient`."""

    def __init__(self, client: Any, *, max_chars: int = 700) -> None:
        self.client = client
        self.max_chars = max_chars

    @property
    def identity(self) -> str:
        return self.client.endpoint.identity

    def messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user",
                 "content": f"{INSTRUCTION}\n\nReview: {clip_review(text, self.max_chars)}"}]

    def key(self, text: str) -> str:
        return teacher_key(text, self.max_chars)

    def label_one(self, text: str) -> tuple[np.ndarray, float]:
        return label_distribution(self.client.first_token_logprobs(self.messages(text)))

    def proba(self, texts: Sequence[str | None], *, cache: TeacherLabels | None = None,
              progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """``(n, 3)`` label probabilities; empty texts get a uniform row. With ``cache``,
        known texts are read from it and new ones written to it as they are labelled."""
        out = np.full((len(texts), len(LABELS)), 1.0 / len(LABELS))
        known = cache.lookup() if cache is not None else {}
        todo = []
        for i, t in enumerate(texts):
            if not t or not t.strip():
                continue
            row = known.get(self.key(t))
            if row is not None:
                out[i] = row
            else:
                todo.append(i)
        done = 0
        start = time.monotonic()
        try:
            for i in todo:
                text = texts[i] or ""
                p, mass = self.label_one(text)
                out[i] = p
                if cache is not None:
                    cache.add(self.key(text), p, mass=mass, text=clip_review(text, self.max_chars))
                done += 1
                if progress is not None:
                    progress(done, len(todo))
                if done % 50 == 0:
                    rate = done / max(1e-9, time.monotonic() - start)
                    log.info("labelled %d/%d new texts (%.2f/s)", done, len(todo), rate)
        finally:
            if cache is not None:
                cache.flush()
        return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class TeacherLabels:
    """The teacher-label dataset of one teacher and prompt version in an object store
    (shards of ``shard_size`` labels, folded into ``labels.jsonl`` by :meth:`compact`)."""

    def __init__(self, store: ObjectStore, teacher: str, *, root: str = "teacher-labels",
                 prompt_version: str = PROMPT_VERSION, shard_size: int = 16) -> None:
        self.store = store
        self.teacher = teacher
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in teacher)
        self.prefix = join_key(root, safe, prompt_version)
        self.prompt_version = prompt_version
        self._rows = ShardedRows(store, self.prefix, main="labels.jsonl",
                                 key=lambda row: row["key"], shard_size=shard_size,
                                 check=self._check)
        self._known: dict[str, np.ndarray] | None = None

    def _check(self, object_key: str, row: dict[str, Any]) -> None:
        if row.get("teacher") != self.teacher:
            raise DataError(f"{object_key}: teacher {row.get('teacher')!r} is not "
                            f"{self.teacher!r}")

    # -- reading --------------------------------------------------------------------------
    def lookup(self) -> dict[str, np.ndarray]:
        """``{text key: probabilities}`` of every label made so far (cached in memory)."""
        if self._known is None:
            self._known = {k: np.asarray(row["p"], dtype=np.float64)
                           for k, row in self._rows.read().items()}
        return self._known

    def __len__(self) -> int:
        return len(self.lookup())

    # -- writing --------------------------------------------------------------------------
    def add(self, key: str, p: np.ndarray, *, mass: float, text: str) -> None:
        self.lookup()[key] = np.asarray(p, dtype=np.float64)
        self._rows.append({"key": key, "p": [round(float(x), 6) for x in p],
                           "label": LABELS[int(np.argmax(p))],
                           "mass": round(mass, 4), "teacher": self.teacher,
                           "prompt": self.prompt_version, "text": text, "at": _now()})

    def flush(self) -> None:
        self._rows.flush()

    def compact(self) -> dict[str, Any]:
        """Fold the shards into ``labels.jsonl`` and write ``manifest.json``."""

        def manifest(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
            counts = {lbl: 0 for lbl in LABELS}
            for r in rows.values():
                counts[r["label"]] += 1
            return {"name": "teacher-labels", "teacher": self.teacher,
                    "prompt_version": self.prompt_version, "count": len(rows),
                    "labels": counts, "created_at": _now()}

        return self._rows.compact(manifest)[1]
