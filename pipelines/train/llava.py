"""LLaVA-v1.6 (``LlavaNextForConditionalGeneration``) fine-tuned with PEFT LoRA as a
generative classifier.

The prompt holds the review text and, when there is one, the photo (``<image>``); the target is
the label word. Training is next-token loss on that one target token; classification reads the
next-token logits of the three label words after the prompt and softmaxes over them (the
output is constrained to a label, as the vLLM serving path constrains it to a JSON label).

Where the weights come from:

* ``LlavaOptions.model_source`` set (a GPU cluster): ``llava-hf/llava-v1.6-mistral-7b-hf`` or a
  local copy, with its own processor.
* unset (here, and in tests): a tiny randomly initialised LlavaNext of the same architecture
  (CLIP vision tower, Mistral language model, anyres image grid) whose tokenizer is the MiniLM
  WordPiece vocabulary shipped offline plus an ``<image>`` token. Nothing is downloaded.

The same :class:`LlavaTask` runs in the Ray Train loop of :mod:`.distributed` either way.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch

from pipelines.train.config import DistributedConfig, LlavaOptions
from shopsense import LABELS
from shopsense.model.pyfunc import SentimentPyfunc
from shopsense.model.train import ResumableState

IMAGE_TOKEN = "<image>"
_BUNDLE_META = "llava_bundle.json"


def prompt(text: str | None, has_image: bool, opts: LlavaOptions) -> str:
    body = (text or "").strip()[: opts.max_text_chars] or "(no text)"
    head = f"{IMAGE_TOKEN}\n" if has_image else ""
    return f"{head}Review: {body}\nSentiment (negative, neutral or positive):"


def build_tiny(opts: LlavaOptions):
    """A tiny LlavaNext model and its processor, built offline (random weights)."""
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    from shopsense.model.encoders import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    size, patch = opts.tiny_image_size, opts.tiny_patch_size
    grid = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_grid_pinpoints=grid)
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    h = opts.tiny_hidden
    vision = CLIPVisionConfig(hidden_size=h // 2, intermediate_size=h, num_hidden_layers=2,
                              num_attention_heads=2, image_size=size, patch_size=patch,
                              projection_dim=h // 2)
    from transformers import MistralConfig

    text = MistralConfig(vocab_size=len(tokenizer), hidden_size=h, intermediate_size=2 * h,
                         num_hidden_layers=opts.tiny_layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id)
    config = LlavaNextConfig(vision_config=vision, text_config=text,
                             image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                             image_grid_pinpoints=grid, vision_feature_layer=-2)
    return LlavaNextForConditionalGeneration(config), processor


def load_base(opts: LlavaOptions):
    if opts.model_source is None:
        return build_tiny(opts)
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = LlavaNextForConditionalGeneration.from_pretrained(opts.model_source, dtype=dtype)
    return model, LlavaNextProcessor.from_pretrained(opts.model_source)


def label_token_ids(tokenizer) -> list[int]:
    """The first token of each label word (they must differ)."""
    ids = [tokenizer(f" {lbl}", add_special_tokens=False)["input_ids"][0] for lbl in LABELS]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words share their first token: {ids}")
    return ids


def encode(processor, items: list[tuple[str | None, object | None]], opts: LlavaOptions,
           device: torch.device) -> dict[str, torch.Tensor]:
    """Left-padded prompts (and pixel values for the items that have a photo)."""
    prompts = [prompt(t, im is not None, opts) for t, im in items]
    images = [im for _, im in items if im is not None]
    tok = processor.tokenizer
    tok.padding_side = "left"
    enc = processor(images=images or None, text=prompts, padding=True, return_tensors="pt",
                    return_token_type_ids=False)
    return {k: v.to(device) for k, v in enc.items()}


def label_logits(model, enc: dict[str, torch.Tensor], label_ids: list[int]) -> torch.Tensor:
    """Next-token logits of the label words after each prompt: (batch, len(LABELS))."""
    out = model(**enc)
    return out.logits[:, -1, :][:, label_ids].float()


class LlavaTask(ResumableState):
    """LLaVA in the distributed loop: the core recipe's data, photo pool and sample plan
    (:func:`shopsense.model.train.sample_plan`), LoRA on the language model's attention."""

    def __init__(self, config: DistributedConfig) -> None:
        from peft import LoraConfig, get_peft_model

        from shopsense.images.render import render_dataset
        from shopsense.model.train import load_rows

        tc, self.opts = config.train, config.llava
        self.config = tc
        if tc.threads:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        self.rng = random.Random(tc.seed)
        self.device = torch.device("cuda" if config.use_gpu and torch.cuda.is_available()
                                   else "cpu")
        self.train_rows = load_rows(tc.train_sets, tc.train_datasets, tc.data_dir,
                                    tc.max_train_per_set, tc.seed)
        if not self.train_rows:
            raise ValueError("no labelled training data")
        base, self.processor = load_base(self.opts)
        self.label_ids = label_token_ids(self.processor.tokenizer)
        targets = "|".join(self.opts.lora_targets)
        lora = LoraConfig(
            r=self.opts.lora_r, lora_alpha=self.opts.lora_alpha, lora_dropout=0.05,
            target_modules=rf".*language_model.*\.({targets})",
            modules_to_save=["multi_modal_projector"] if self.opts.train_projector else None)
        self.model = get_peft_model(base, lora).to(self.device)
        self.model.train()
        rendered = render_dataset(tc.image_pool, seed=tc.seed)
        self.pool = [im for im, _, _ in rendered]
        self.pool_by_label = {lbl: [i for i, (_, _, x) in enumerate(rendered) if x == lbl]
                              for lbl in LABELS}
        n_text = len(self.train_rows)
        self.n_image_only = int(n_text * tc.p_image_only / max(1e-9, 1 - tc.p_image_only))
        self.total_steps = max(1, int(round(
            math.ceil((n_text + self.n_image_only) / tc.batch_size) * tc.epochs)))
        self.optim = torch.optim.AdamW(self.trainable_parameters(), lr=tc.lr_lora,
                                       weight_decay=tc.weight_decay)
        self.base_lr = tc.lr_lora
        self.warmup = int(self.total_steps * tc.warmup_fraction)
        self.step, self.seen = 0, 0
        self.losses: list[float] = []
        self.samples: list = []

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def next_batch(self) -> list:
        from shopsense.model.train import sample_plan

        if not self.samples:
            self.samples = sample_plan(self.train_rows, self.pool_by_label, self.n_image_only,
                                       self.config, self.rng)
        size = self.config.batch_size
        batch, self.samples = self.samples[:size], self.samples[size:]
        return batch

    def loss(self, batch: list) -> torch.Tensor:
        items = [(t, self.pool[i] if i is not None else None) for t, i, _ in batch]
        enc = encode(self.processor, items, self.opts, self.device)
        logits = label_logits(self.model, enc, self.label_ids)
        # Next-token cross-entropy restricted to the label words = the generative target.
        y = torch.tensor([lbl for _, _, lbl in batch], device=self.device)
        return torch.nn.functional.cross_entropy(logits, y)

    def zero_grad(self) -> None:
        self.optim.zero_grad(set_to_none=True)

    def apply(self) -> None:
        from shopsense.model.train import _schedule

        torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), 1.0)
        for group in self.optim.param_groups:
            group["lr"] = self.base_lr * _schedule(self.step, self.total_steps, self.warmup)
        self.optim.step()
        self.step += 1

    def save_bundle(self, out_dir: Path) -> Path:
        """``adapter/`` (LoRA + projector) and ``processor/``; a tiny model also stores its
        random base weights (``base/``), which exist nowhere else."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out_dir / "adapter"))
        self.processor.save_pretrained(str(out_dir / "processor"))
        if self.opts.model_source is None:
            import copy

            # the random base weights without the LoRA layers (unload() does not merge)
            copy.deepcopy(self.model).unload().save_pretrained(str(out_dir / "base"))
        meta = {"format": "shopsense-llava/1", "labels": list(LABELS),
                "model_source": self.opts.model_source, "options": self.opts.model_dump()}
        (out_dir / _BUNDLE_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return out_dir


def load_bundle(bundle_dir: Path):
    """The fine-tuned model (LoRA merged) and processor of a bundle, in eval mode."""
    from peft import PeftModel
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    bundle_dir = Path(bundle_dir)
    meta = json.loads((bundle_dir / _BUNDLE_META).read_text())
    source = meta["model_source"] or str(bundle_dir / "base")
    base = LlavaNextForConditionalGeneration.from_pretrained(source)
    model = PeftModel.from_pretrained(base, str(bundle_dir / "adapter")).merge_and_unload()
    processor = LlavaNextProcessor.from_pretrained(str(bundle_dir / "processor"))
    return model.eval(), processor, LlavaOptions(**meta["options"])


@torch.inference_mode()
def predict_proba(model, processor, opts: LlavaOptions, texts: list[str | None],
                  images: list | None = None, *, batch_size: int = 16) -> np.ndarray:
    images = images or [None] * len(texts)
    label_ids = label_token_ids(processor.tokenizer)
    device = next(model.parameters()).device
    rows = []
    for s in range(0, len(texts), batch_size):
        items = list(zip(texts[s:s + batch_size], images[s:s + batch_size]))
        logits = label_logits(model, encode(processor, items, opts, device), label_ids)
        rows.append(torch.softmax(logits, dim=-1).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, len(LABELS)))


def evaluate_llava_bundle(config: DistributedConfig, bundle_dir: Path) -> tuple[dict, list[dict]]:
    """The held-out evaluation report of a LLaVA bundle, and the rows it was made on."""
    from shopsense.evaluate import evaluation_report
    from shopsense.model.train import load_rows

    tc = config.train
    rows = load_rows(tc.eval_sets, tc.eval_datasets, tc.data_dir, tc.max_eval_per_set,
                     tc.seed + 1)
    model, processor, opts = load_bundle(bundle_dir)
    proba = predict_proba(model, processor, opts, [r["text"] for r in rows])
    return evaluation_report(rows, proba), rows


def bundle_predictor(bundle_dir: Path):
    """``predict_proba(texts, images)`` of a LLaVA bundle (the compact Predictor's shape)."""
    model, processor, opts = load_bundle(bundle_dir)
    return lambda texts, images=None: predict_proba(model, processor, opts, list(texts), images)


class LlavaPyfunc(SentimentPyfunc):
    """The MLflow pyfunc of a LLaVA bundle: the same input and output as the compact model's."""

    def load_context(self, context) -> None:
        self.labels = list(LABELS)
        self.predict_proba = bundle_predictor(Path(context.artifacts["bundle"]))
