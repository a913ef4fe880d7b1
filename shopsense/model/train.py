"""Fine-tuning the multimodal classifier: one function of one config, no global state.

``train(config)`` loads the labelled sets it names, renders a pool of procedural product
photos (no real labelled review photos exist offline), fine-tunes the MiniLM text encoder with
PEFT LoRA and the fusion head with modality dropout, evaluates on the held-out sets and writes
a bundle. Everything it needs comes in through ``config``; everything it makes goes out in the
returned ``TrainResult``, so a Ray Train worker can call it unchanged.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from shopsense import LABELS
from shopsense.model.classifier import ModelConfig, Predictor, SentimentModel, tokenize
from shopsense.model.encoders import IMAGE_DIM, TEXT_DIM, load_tokenizer

log = logging.getLogger(__name__)

DEFAULT_TRAIN_SETS = ["blitzer-books", "blitzer-electronics", "uci-amazon", "huliu"]
DEFAULT_EVAL_SETS = ["blitzer-dvd", "uci-imdb"]


class TrainConfig(BaseModel):
    """A training recipe. ``recipe('full')`` is the best CPU model; ``recipe('demo')`` is fast."""

    data_dir: Path
    output_dir: Path
    train_sets: list[str] = Field(default_factory=lambda: list(DEFAULT_TRAIN_SETS))
    eval_sets: list[str] = Field(default_factory=lambda: list(DEFAULT_EVAL_SETS))
    max_train_per_set: int | None = None
    max_eval_per_set: int | None = None
    epochs: float = 2.0
    batch_size: int = 32
    lr_lora: float = 5e-4
    lr_head: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_length: int = 128
    truncation: Literal["head", "head_tail"] = "head_tail"
    lora_r: int = 16
    lora_alpha: int = 32
    image_pool: int = 600
    p_text_only: float = 0.45
    p_image_only: float = 0.2  # remainder: text and image together
    p_uninformative_image: float = 0.3  # of text+image samples: a neutral photo, text's label
    # Of text+image samples whose text is neutral: a damaged or pristine photo, whose label
    # wins ("arrived like this" + a cracked screen is negative). Teaches the head to use the
    # photo when the words carry no sentiment, instead of leaning on text alone.
    p_photo_decides: float = 0.6
    seed: int = 13
    threads: int = 0
    random_init: bool = False  # tests: untrained encoders of the same architecture
    progress: bool = True


RECIPES: dict[str, dict] = {
    # About 25 minutes on 2 CPU cores: every training review, 2 epochs, 128 tokens.
    "full": {},
    # About 2-3 minutes: a subsample, shorter sequences, one epoch. For `make demo`.
    "demo": {
        "max_train_per_set": 500,
        "max_eval_per_set": 300,
        "epochs": 1.0,
        "max_length": 64,
        "lr_lora": 1e-3,
        "image_pool": 240,
    },
}


def recipe(name: str, **overrides) -> TrainConfig:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], **overrides})


class TrainResult(BaseModel):
    bundle_dir: Path
    params: dict
    metrics: dict  # flat, for MLflow
    evaluation: dict  # the evaluation contract's object on the held-out sets
    eval_records: list[dict] = Field(repr=False)
    train_samples: int
    seconds: float
    samples_per_second: float


def load_labelled(sets: list[str], data_dir: Path, cap: int | None, seed: int) -> list[dict]:
    """Labelled text records ``{text, label, category, set}`` from named shared sets."""
    from shopsense.data.loaders import load_set

    rng = random.Random(seed)
    out: list[dict] = []
    for name in sets:
        rows = [
            {
                "text": r.text if not r.title else f"{r.title}. {r.text}",
                "label": r.label,
                "category": r.product.category if r.product else None,
                "set": name,
            }
            for r in load_set(name, data_dir)
            if r.label and r.text.strip()
        ]
        rng.shuffle(rows)
        out.extend(rows[:cap] if cap else rows)
    rng.shuffle(out)
    return out


def render_image_pool(n: int, seed: int, model: SentimentModel) -> tuple[torch.Tensor, list[str]]:
    """Render ``n`` procedural photos (balanced labels) and embed them once (encoder frozen)."""
    from shopsense.images.render import render_dataset
    from shopsense.model.encoders import preprocess_image

    items = render_dataset(n, seed=seed)
    feats = []
    for start in range(0, len(items), 32):
        chunk = items[start : start + 32]
        pixels = torch.from_numpy(np.stack([preprocess_image(im) for im, _, _ in chunk]))
        feats.append(model.image_encoder(pixels))
    return torch.cat(feats), [lbl for _, _, lbl in items]


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def train(
    config: TrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune and evaluate; write the bundle to ``config.output_dir``."""
    start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    train_rows = load_labelled(config.train_sets, config.data_dir, config.max_train_per_set,
                               config.seed)
    eval_rows = load_labelled(config.eval_sets, config.data_dir, config.max_eval_per_set,
                              config.seed + 1)
    if not train_rows:
        raise ValueError("no labelled training data in " + ", ".join(config.train_sets))
    log.info("training on %d texts from %s", len(train_rows), ", ".join(config.train_sets))

    mcfg = ModelConfig(
        max_length=config.max_length,
        truncation=config.truncation,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        random_init=config.random_init,
    )
    model = SentimentModel(mcfg)
    tokenizer = load_tokenizer()
    pool_feats, pool_labels = render_image_pool(config.image_pool, config.seed, model)
    pool_by_label = {lbl: [i for i, x in enumerate(pool_labels) if x == lbl] for lbl in LABELS}

    # Sample plan: each text appears once per epoch with a drawn modality; image-only samples
    # (label = the photo's label) are added so the image branch learns to stand alone.
    n_text = len(train_rows)
    n_image_only = int(n_text * config.p_image_only / max(1e-9, 1 - config.p_image_only))
    steps_per_epoch = math.ceil((n_text + n_image_only) / config.batch_size)
    total_steps = max(1, int(round(steps_per_epoch * config.epochs)))

    counts = np.array([sum(r["label"] == lbl for r in train_rows) for lbl in LABELS], float)
    weights = torch.tensor(np.sqrt(counts.sum() / np.maximum(counts, 1) / 3.0), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    lora_params = [p for n, p in model.text_encoder.named_parameters() if p.requires_grad]
    optim = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": config.lr_lora},
            {"params": list(model.head.parameters()), "lr": config.lr_head},
        ],
        weight_decay=config.weight_decay,
    )
    base_lrs = [g["lr"] for g in optim.param_groups]
    warmup = int(total_steps * config.warmup_fraction)
    label_idx = {lbl: i for i, lbl in enumerate(LABELS)}

    def epoch_samples() -> list[tuple[str | None, int | None, int]]:
        samples: list[tuple[str | None, int | None, int]] = []
        for row in train_rows:
            y = label_idx[row["label"]]
            u = rng.random()
            if u < config.p_text_only / max(1e-9, 1 - config.p_image_only):
                samples.append((row["text"], None, y))
            elif row["label"] == "neutral" and rng.random() < config.p_photo_decides:
                lbl = rng.choice(("negative", "positive"))
                samples.append((row["text"], rng.choice(pool_by_label[lbl]), label_idx[lbl]))
            else:
                lbl = "neutral" if rng.random() < config.p_uninformative_image else row["label"]
                samples.append((row["text"], rng.choice(pool_by_label[lbl]), y))
        for _ in range(n_image_only):
            lbl = rng.choice(LABELS)
            samples.append((None, rng.choice(pool_by_label[lbl]), label_idx[lbl]))
        rng.shuffle(samples)
        return samples

    model.train()
    model.image_encoder.eval()
    step, seen, losses = 0, 0, []
    bar = tqdm(total=total_steps, desc="train", disable=not config.progress, unit="step")
    samples: list = []
    while step < total_steps:
        if not samples:
            samples = epoch_samples()
        batch, samples = samples[: config.batch_size], samples[config.batch_size :]
        texts = [t for t, _, _ in batch]
        mt = torch.tensor([t is not None for t in texts], dtype=torch.float32)
        mi = torch.tensor([i is not None for _, i, _ in batch], dtype=torch.float32)
        text_feats = torch.zeros((len(batch), TEXT_DIM))
        t_idx = [i for i, t in enumerate(texts) if t is not None]
        if t_idx:
            enc = tokenize(tokenizer, [texts[i] for i in t_idx], mcfg)
            text_feats = text_feats.index_put(
                (torch.tensor(t_idx),),
                model.encode_text(enc["input_ids"], enc["attention_mask"]),
            )
        image_feats = torch.zeros((len(batch), IMAGE_DIM))
        for row, (_, pool_i, _) in enumerate(batch):
            if pool_i is not None:
                image_feats[row] = pool_feats[pool_i]
        y = torch.tensor([lbl for _, _, lbl in batch])
        loss = loss_fn(model.head(text_feats, image_feats, mt, mi), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        scale = _schedule(step, total_steps, warmup)
        for group, base in zip(optim.param_groups, base_lrs):
            group["lr"] = base * scale
        optim.step()
        step += 1
        seen += len(batch)
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if on_step:
            on_step(step, float(loss))
    bar.close()
    train_seconds = time.perf_counter() - start

    out_dir = Path(config.output_dir)
    model.save_bundle(out_dir, extra={"train": config.model_dump(mode="json")})
    log.info("bundle written to %s", out_dir)

    # Evaluate the saved bundle exactly as serving will load it (LoRA merged).
    predictor = Predictor(SentimentModel.load_bundle(out_dir))
    evaluation = evaluate_held_out(predictor, eval_rows, progress=config.progress)
    skip = ("data_dir", "output_dir", "progress")
    params = {k: v for k, v in config.model_dump(mode="json").items() if k not in skip}
    params.update({f"model.{k}": v for k, v in asdict(mcfg).items() if k not in ("labels",)})
    flat = {
        "eval_accuracy": evaluation["accuracy"],
        "eval_macro_f1": evaluation["macro_f1"],
        "train_loss_last": float(np.mean(losses[-20:])),
        "train_samples_per_second": seen / max(train_seconds, 1e-9),
    }
    for name, sub in evaluation.get("per_set", {}).items():
        flat[f"eval_{name}_accuracy"] = sub["accuracy"]
        flat[f"eval_{name}_macro_f1"] = sub["macro_f1"]
    return TrainResult(
        bundle_dir=out_dir,
        params=params,
        metrics=flat,
        evaluation=evaluation,
        eval_records=eval_rows,
        train_samples=seen,
        seconds=time.perf_counter() - start,
        samples_per_second=seen / max(train_seconds, 1e-9),
    )


def predict_in_batches(predictor: Predictor, texts: list[str | None], images=None, *,
                       batch_size: int = 64, progress: bool = False) -> np.ndarray:
    images = images if images is not None else [None] * len(texts)
    rows = []
    for s in tqdm(range(0, len(texts), batch_size), desc="evaluate", disable=not progress,
                  unit="batch"):
        rows.append(predictor.predict_proba(texts[s : s + batch_size], images[s : s + batch_size]))
    return np.concatenate(rows) if rows else np.zeros((0, len(LABELS)))


def evaluate_held_out(predictor: Predictor, rows: list[dict], *, progress: bool = False) -> dict:
    """The contract's evaluation on the held-out sets, overall and per set.

    Each set is scored with the labels it holds (two-label sets choose between those two)."""
    from shopsense.evaluate import evaluate_records

    proba = predict_in_batches(predictor, [r["text"] for r in rows], progress=progress)
    by_set: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_set.setdefault(r["set"], []).append(i)
    per_set = {}
    for name, idx in by_set.items():
        sub = proba[idx]
        per_set[name] = evaluate_records([rows[i] for i in idx], lambda t, im, sub=sub: sub,
                                         model={})
    overall = evaluate_records(rows, lambda t, im: proba, model={})
    overall["per_set"] = {
        k: {m: v[m] for m in ("n", "accuracy", "macro_f1")} for k, v in per_set.items()
    }
    return overall
