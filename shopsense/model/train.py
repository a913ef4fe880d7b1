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
from typing import TYPE_CHECKING, Callable, Iterable, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from shopsense import LABELS
from shopsense.evaluate import calibration, evaluation_report  # noqa: F401 (re-export)
from shopsense.model.classifier import ModelConfig, Predictor, SentimentModel, tokenize
from shopsense.model.encoders import IMAGE_DIM, TEXT_DIM, load_tokenizer
from shopsense.text import review_content

if TYPE_CHECKING:
    from shopsense.schemas import Review

log = logging.getLogger(__name__)

DEFAULT_TRAIN_SETS = ["blitzer-books", "blitzer-electronics", "uci-amazon", "huliu"]
DEFAULT_EVAL_SETS = ["blitzer-dvd", "uci-imdb"]


class TrainConfig(BaseModel):
    """A training recipe. ``recipe('full')`` is the best CPU model; ``recipe('demo')`` is fast."""

    data_dir: Path
    output_dir: Path
    train_sets: list[str] = Field(default_factory=lambda: list(DEFAULT_TRAIN_SETS))
    eval_sets: list[str] = Field(default_factory=lambda: list(DEFAULT_EVAL_SETS))
    # Datasets in the object store (URIs of dataset prefixes), read in addition to the sets:
    # what the pipeline's steps hand over.
    train_datasets: list[str] = Field(default_factory=list)
    eval_datasets: list[str] = Field(default_factory=list)
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
    # Knowledge distillation from the LLM (``shopsense.llm``): its label distributions, read
    # from the teacher-label cache (``shopsense llm label`` fills it; nothing is labelled here).
    # ``teacher``: None (off), "auto" (the configured LLM) or a teacher identity.
    teacher: str | None = None
    distill_weight: float = Field(0.5, ge=0, le=1, description="share of the loss that is "
                                  "cross-entropy against the teacher's distribution, for texts "
                                  "it labelled (texts with no human label learn from it alone)")
    teacher_temperature: float = Field(1.0, gt=0, description=">1 softens the teacher's "
                                       "distribution, <1 sharpens it")
    # Texts without labels, learnt from the teacher's labels only (sets and dataset URIs).
    unlabelled_sets: list[str] = Field(default_factory=list)
    unlabelled_datasets: list[str] = Field(default_factory=list)
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
    # `full` distilled from the LLM: its label distributions for every training text the
    # teacher-label cache holds (``shopsense llm label`` fills it).
    "distilled": {"teacher": "auto"},
    # `shopsense coldstart`: the caller hands in capped base sets plus the category's
    # auto-labelled reviews and kept synthetic ones; the teacher covers what the LLM read.
    "coldstart": {"epochs": 2.0, "teacher": "auto", "image_pool": 300},
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
        rows = review_rows(load_set(name, data_dir), name)
        rng.shuffle(rows)
        out.extend(rows[:cap] if cap else rows)
    rng.shuffle(out)
    return out


def review_rows(reviews: Iterable[Review], set_name: str) -> list[dict]:
    """Labelled text records ``{text, label, category, set}`` of reviews, in their order (the
    text is :func:`shopsense.text.review_content`: the title, when there is one, leads);
    ``set``: the review's source name, else ``set_name``."""
    return [
        {
            "text": review_content(r.title, r.text),
            "label": r.label,
            "category": r.product.category if r.product else None,
            "set": r.source.name if r.source else set_name,
        }
        for r in reviews
        if r.label and r.text.strip()
    ]


def text_rows(reviews: Iterable[Review], set_name: str) -> list[dict]:
    """Text records of reviews, labelled or not (``label`` may be ``None``)."""
    return [{"text": review_content(r.title, r.text), "label": r.label,
             "category": r.product.category if r.product else None,
             "set": r.source.name if r.source else set_name}
            for r in reviews if r.text.strip()]


def load_unlabelled(sets: list[str], datasets: list[str], data_dir: Path, cap: int | None,
                    seed: int) -> list[dict]:
    """Text records of named sets and dataset URIs for distillation (labels dropped)."""
    from shopsense.data.dataset import open_dataset_uri, read_dataset
    from shopsense.data.loaders import load_set
    from shopsense.settings import get_settings

    rows: list[dict] = []
    for name in sets:
        rows.extend(text_rows(load_set(name, data_dir), name))
    for uri in datasets:
        manifest, reviews = read_dataset(*open_dataset_uri(uri, get_settings()))
        rows.extend(text_rows(reviews, manifest.name))
    rng = random.Random(seed)
    rng.shuffle(rows)
    for r in rows:
        r["label"] = None
    return rows[:cap] if cap else rows


def attach_teacher(rows: list[dict], unlabelled: list[dict], config: TrainConfig
                   ) -> tuple[list[dict], dict[str, np.ndarray], dict[str, int]]:
    """The training rows with the teacher's distributions: labelled rows keep their label
    (``hard``), unlabelled rows the teacher labelled take its most likely label as a soft-only
    target; unlabelled rows it never saw are dropped. Returns (rows, {text: target}, counts)."""
    from shopsense.llm.teacher import soft_labels

    texts = list({r["text"] for r in [*rows, *unlabelled]})
    soft = soft_labels(texts, teacher=None if config.teacher == "auto" else config.teacher)
    if config.teacher_temperature != 1.0:
        for t, p in soft.items():
            q = np.power(np.clip(p, 1e-12, None), 1.0 / config.teacher_temperature)
            soft[t] = q / q.sum()
    out = [{**r, "hard": True} for r in rows]
    kept_unlabelled = 0
    for r in unlabelled:
        p = soft.get(r["text"])
        if p is not None:
            out.append({**r, "label": LABELS[int(np.argmax(p))], "hard": False})
            kept_unlabelled += 1
    counts = {"teacher_labelled": sum(r["text"] in soft for r in rows),
              "labelled_rows": len(rows), "teacher_only_rows": kept_unlabelled,
              "unlabelled_without_teacher": len(unlabelled) - kept_unlabelled}
    return out, soft, counts


def load_dataset_rows(uri: str, cap: int | None, seed: int) -> list[dict]:
    """Labelled text records ``{text, label, category, set}`` from a dataset in the object
    store (``file:///dir/prefix`` or ``s3://bucket/prefix``; see :mod:`shopsense.data.dataset`),
    at most ``cap`` per source set."""
    from shopsense.data.dataset import open_dataset_uri, read_dataset
    from shopsense.settings import get_settings

    manifest, reviews = read_dataset(*open_dataset_uri(uri, get_settings()))
    rows = review_rows(reviews, manifest.name)
    rng = random.Random(seed)
    rng.shuffle(rows)
    if not cap:
        return rows
    # ``cap`` is per source set (the reviews' ``source.name``), as for named sets: a dataset
    # assembled from several sources keeps some of each.
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        seen[row["set"]] = seen.get(row["set"], 0) + 1
        if seen[row["set"]] <= cap:
            out.append(row)
    return out


def load_rows(sets: list[str], datasets: list[str], data_dir: Path, cap: int | None,
              seed: int) -> list[dict]:
    """Rows from named shared sets and from dataset URIs (``cap`` applies to each)."""
    rows = load_labelled(sets, data_dir, cap, seed) if sets else []
    if not datasets:
        return rows
    for uri in datasets:
        rows.extend(load_dataset_rows(uri, cap, seed))
    random.Random(seed).shuffle(rows)
    return rows


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


Sample = tuple[str | None, int | None, int]  # (text or None, image-pool index or None, label)


def sample_plan(rows: list[dict], pool_by_label: dict[str, list[int]], n_image_only: int,
                config: TrainConfig, rng: random.Random) -> list[Sample]:
    """One epoch of samples with modality dropout (see :class:`TrainConfig`): each text once,
    alone or with a photo from the pool, plus ``n_image_only`` photo-only samples, shuffled."""
    idx = {lbl: i for i, lbl in enumerate(LABELS)}
    samples: list[Sample] = []
    for row in rows:
        y = idx[row["label"]]
        u = rng.random()
        if u < config.p_text_only / max(1e-9, 1 - config.p_image_only):
            samples.append((row["text"], None, y))
        elif row["label"] == "neutral" and rng.random() < config.p_photo_decides:
            lbl = rng.choice(("negative", "positive"))
            samples.append((row["text"], rng.choice(pool_by_label[lbl]), idx[lbl]))
        else:
            lbl = "neutral" if rng.random() < config.p_uninformative_image else row["label"]
            samples.append((row["text"], rng.choice(pool_by_label[lbl]), y))
    for _ in range(n_image_only):
        lbl = rng.choice(LABELS)
        samples.append((None, rng.choice(pool_by_label[lbl]), idx[lbl]))
    rng.shuffle(samples)
    return samples


class ResumableState:
    """A training session's progress (:meth:`record`), what a checkpoint holds of it and how
    it is restored: the trainable parameters, the optimiser, the counters, the loss history
    and the random generators. The session provides ``model``, ``optim``, ``step``, ``seen``, ``losses``, ``rng`` and
    ``samples``."""

    model: torch.nn.Module
    optim: torch.optim.Optimizer

    def record(self, loss: float, samples: int) -> None:
        """Count a finished step's samples and keep its loss."""
        self.seen += samples
        self.losses.append(loss)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters()
                if p.requires_grad}

    def state_dict(self) -> dict:
        return {
            "trainable": self.trainable_state(),
            "optim": self.optim.state_dict(),
            "step": self.step,
            "seen": self.seen,
            "losses": list(self.losses),
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "samples": list(self.samples),
        }

    def load_state_dict(self, state: dict) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value.to(params[name].device))
        self.optim.load_state_dict(state["optim"])
        self.step, self.seen = int(state["step"]), int(state["seen"])
        self.losses = list(state["losses"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.samples = list(state["samples"])


class TrainSession(ResumableState):
    """One training process: data, model, optimiser, schedule and the sample plan.

    :func:`train` drives it in one process. ``pipelines/train`` drives the same object in each
    Ray Train worker: every worker draws the same global batch from :meth:`next_batch` (the
    plan is seeded), computes :meth:`loss` on its shard, averages gradients with the others and
    calls :meth:`apply`; :meth:`state_dict` is what a checkpoint holds, so a restarted worker
    continues the same plan at the same step.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = random.Random(config.seed)

        self.train_rows = load_rows(config.train_sets, config.train_datasets, config.data_dir,
                                    config.max_train_per_set, config.seed)
        self.eval_rows = load_rows(config.eval_sets, config.eval_datasets, config.data_dir,
                                   config.max_eval_per_set, config.seed + 1)
        self.soft: dict[str, np.ndarray] = {}
        self.teacher_counts: dict[str, int] = {}
        if config.teacher:
            unlabelled = load_unlabelled(config.unlabelled_sets, config.unlabelled_datasets,
                                         config.data_dir, None, config.seed)
            self.train_rows, self.soft, self.teacher_counts = attach_teacher(
                self.train_rows, unlabelled, config)
            random.Random(config.seed).shuffle(self.train_rows)
            log.info("teacher labels: %s", self.teacher_counts)
        if not self.train_rows:
            raise ValueError("no labelled training data in " +
                             ", ".join([*config.train_sets, *config.train_datasets]))
        # the label each text's own words give it (a photo can overrule it in a sample), and
        # whether that label is a human one (else only the teacher's distribution counts)
        self.text_label = {r["text"]: (r["label"], r.get("hard", True)) for r in self.train_rows}
        log.info("training on %d texts from %s", len(self.train_rows),
                 ", ".join([*config.train_sets, *config.train_datasets]))

        self.mcfg = mcfg = ModelConfig(
            max_length=config.max_length,
            truncation=config.truncation,
            lora_r=config.lora_r,
            lora_alpha=config.lora_alpha,
            random_init=config.random_init,
        )
        self.model = SentimentModel(mcfg)
        self.tokenizer = load_tokenizer()
        self.pool_feats, pool_labels = render_image_pool(config.image_pool, config.seed,
                                                         self.model)
        self.pool_by_label = {lbl: [i for i, x in enumerate(pool_labels) if x == lbl]
                              for lbl in LABELS}

        # Sample plan: each text appears once per epoch with a drawn modality; image-only
        # samples (label = the photo's label) are added so the image branch learns to stand alone.
        n_text = len(self.train_rows)
        p_img = config.p_image_only
        self.n_image_only = int(n_text * p_img / max(1e-9, 1 - p_img))
        self.steps_per_epoch = math.ceil((n_text + self.n_image_only) / config.batch_size)
        self.total_steps = max(1, int(round(self.steps_per_epoch * config.epochs)))

        counts = np.array([sum(r["label"] == lbl for r in self.train_rows) for lbl in LABELS],
                          float)
        weights = torch.tensor(np.sqrt(counts.sum() / np.maximum(counts, 1) / 3.0),
                               dtype=torch.float32)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

        lora_params = [p for n, p in self.model.text_encoder.named_parameters()
                       if p.requires_grad]
        self.optim = torch.optim.AdamW(
            [
                {"params": lora_params, "lr": config.lr_lora},
                {"params": list(self.model.head.parameters()), "lr": config.lr_head},
            ],
            weight_decay=config.weight_decay,
        )
        self.base_lrs = [g["lr"] for g in self.optim.param_groups]
        self.warmup = int(self.total_steps * config.warmup_fraction)
        self.label_idx = {lbl: i for i, lbl in enumerate(LABELS)}
        self.step = 0
        self.seen = 0
        self.losses: list[float] = []
        self.samples: list[tuple[str | None, int | None, int]] = []
        self.model.train()
        self.model.image_encoder.eval()

    # -- the plan -----------------------------------------------------------------------------
    def epoch_samples(self) -> list[tuple[str | None, int | None, int]]:
        return sample_plan(self.train_rows, self.pool_by_label, self.n_image_only, self.config,
                           self.rng)

    def next_batch(self) -> list[tuple[str | None, int | None, int]]:
        """The next global batch of the plan (``config.batch_size`` samples)."""
        if not self.samples:
            self.samples = self.epoch_samples()
        size = self.config.batch_size
        batch, self.samples = self.samples[:size], self.samples[size:]
        return batch

    # -- one step -----------------------------------------------------------------------------
    def loss(self, batch: list[tuple[str | None, int | None, int]]) -> torch.Tensor:
        model = self.model
        texts = [t for t, _, _ in batch]
        mt = torch.tensor([t is not None for t in texts], dtype=torch.float32)
        mi = torch.tensor([i is not None for _, i, _ in batch], dtype=torch.float32)
        text_feats = torch.zeros((len(batch), TEXT_DIM))
        t_idx = [i for i, t in enumerate(texts) if t is not None]
        if t_idx:
            enc = tokenize(self.tokenizer, [texts[i] for i in t_idx], self.mcfg)
            text_feats = text_feats.index_put(
                (torch.tensor(t_idx),),
                model.encode_text(enc["input_ids"], enc["attention_mask"]),
            )
        image_feats = torch.zeros((len(batch), IMAGE_DIM))
        for row, (_, pool_i, _) in enumerate(batch):
            if pool_i is not None:
                image_feats[row] = self.pool_feats[pool_i]
        y = torch.tensor([lbl for _, _, lbl in batch])
        logits = model.head(text_feats, image_feats, mt, mi)
        targets = [self._soft_target(t, lbl) for t, _, lbl in batch]
        if all(t is None for t in targets):
            return self.loss_fn(logits, y)
        return self._distill_loss(logits, y, targets, batch)

    def _soft_target(self, text: str | None, label: int) -> np.ndarray | None:
        """The teacher's distribution for a sample whose label its text decides."""
        if text is None or text not in self.soft:
            return None
        own, _ = self.text_label.get(text, (None, True))
        return self.soft[text] if own is not None and LABELS.index(own) == label else None

    def _distill_loss(self, logits: torch.Tensor, y: torch.Tensor,
                      targets: list[np.ndarray | None], batch: list) -> torch.Tensor:
        """Per sample: (1 - a) * weighted cross-entropy on the label + a * cross-entropy
        against the teacher's distribution; samples the teacher did not label keep the plain
        weighted cross-entropy, teacher-only texts the teacher's term alone. Normalised by
        the sum of the weights, as :class:`torch.nn.CrossEntropyLoss` is."""
        a = self.config.distill_weight
        logp = torch.log_softmax(logits, dim=-1)
        w = self.loss_fn.weight[y]
        hard_ce = -logp.gather(1, y[:, None]).squeeze(1) * w
        total = torch.zeros(())
        norm = torch.zeros(())
        for i, (target, (text, _, _)) in enumerate(zip(targets, batch)):
            if target is None:
                total = total + hard_ce[i]
                norm = norm + w[i]
                continue
            soft_ce = -(torch.as_tensor(target, dtype=logp.dtype) * logp[i]).sum()
            hard = self.text_label.get(text, (None, True))[1]
            if hard:
                total = total + (1 - a) * hard_ce[i] + a * soft_ce * w[i]
                norm = norm + w[i]
            else:
                total = total + soft_ce
                norm = norm + 1.0
        return total / norm.clamp_min(1e-9)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.model.trainable_parameters()

    def zero_grad(self) -> None:
        self.optim.zero_grad(set_to_none=True)

    def apply(self) -> None:
        """Clip, set the scheduled learning rates, step the optimiser, advance the step."""
        torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), 1.0)
        scale = _schedule(self.step, self.total_steps, self.warmup)
        for group, base in zip(self.optim.param_groups, self.base_lrs):
            group["lr"] = base * scale
        self.optim.step()
        self.step += 1

    # -- checkpoints --------------------------------------------------------------------------
    def save_bundle(self, out_dir: Path) -> Path:
        self.model.save_bundle(Path(out_dir),
                               extra={"train": self.config.model_dump(mode="json")})
        return Path(out_dir)


def train(
    config: TrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune and evaluate; write the bundle to ``config.output_dir``."""
    start = time.perf_counter()
    session = TrainSession(config)
    bar = tqdm(total=session.total_steps, desc="train", disable=not config.progress,
               unit="step")
    while session.step < session.total_steps:
        batch = session.next_batch()
        loss = session.loss(batch)
        session.zero_grad()
        loss.backward()
        session.apply()
        session.record(float(loss.detach()), len(batch))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(session.losses[-20:]):.3f}")
        if on_step:
            on_step(session.step, float(loss))
    bar.close()
    train_seconds = time.perf_counter() - start

    out_dir = session.save_bundle(Path(config.output_dir))
    log.info("bundle written to %s", out_dir)
    return finish_training(config, out_dir, session.eval_rows, losses=session.losses,
                           seen=session.seen, train_seconds=train_seconds, start=start,
                           teacher_counts=session.teacher_counts)


def finish_training(
    config: TrainConfig,
    bundle_dir: Path,
    eval_rows: list[dict],
    *,
    losses: list[float],
    seen: int,
    train_seconds: float,
    start: float,
    teacher_counts: dict[str, int] | None = None,
) -> TrainResult:
    """Evaluate a written bundle on the held-out rows and assemble the :class:`TrainResult`."""
    # Evaluate the saved bundle exactly as serving will load it (LoRA merged).
    predictor = Predictor(SentimentModel.load_bundle(bundle_dir))
    evaluation = evaluate_held_out(predictor, eval_rows, progress=config.progress)
    mcfg = predictor.cfg
    skip = ("data_dir", "output_dir", "progress")
    params = {k: v for k, v in config.model_dump(mode="json").items() if k not in skip}
    params.update({f"model.{k}": v for k, v in asdict(mcfg).items() if k not in ("labels",)})
    flat = {
        **{f"teacher_{k}": float(v) for k, v in (teacher_counts or {}).items()},
        "eval_accuracy": evaluation["accuracy"],
        "eval_macro_f1": evaluation["macro_f1"],
        "eval_ece": evaluation["ece"],
        "train_loss_last": float(np.mean(losses[-20:])) if losses else float("nan"),
        "train_samples_per_second": seen / max(train_seconds, 1e-9),
    }
    for name, sub in evaluation.get("per_set", {}).items():
        flat[f"eval_{name}_accuracy"] = sub["accuracy"]
        flat[f"eval_{name}_macro_f1"] = sub["macro_f1"]
    return TrainResult(
        bundle_dir=Path(bundle_dir),
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
    """The contract's evaluation on the held-out sets, overall and per set, with calibration.

    Each set is scored with the labels it holds (two-label sets choose between those two)."""
    proba = predict_in_batches(predictor, [r["text"] for r in rows], progress=progress)
    return evaluation_report(rows, proba)
