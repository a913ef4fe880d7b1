"""The compact multimodal sentiment classifier and its on-disk bundle.

Text (MiniLM + LoRA, mean-pooled) and image (frozen EfficientNet-Lite0) features meet in a
fusion head that takes a mask per modality, so one model answers for text only, image only or
both. A bundle directory holds ``shopsense_model.json`` (config + label order), ``adapter/``
(the PEFT LoRA weights of the text encoder) and ``head.pt``; the base weights come from the
offline packages, so a bundle is a few MB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from shopsense import LABELS
from shopsense.model.encoders import (
    IMAGE_DIM,
    IMAGE_ENCODER_ID,
    TEXT_DIM,
    ImageEncoder,
    load_text_encoder,
    load_tokenizer,
    mean_pool,
    preprocess_image,
)

BUNDLE_FILE = "shopsense_model.json"


@dataclass
class ModelConfig:
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    hidden: int = 256
    dropout: float = 0.1
    max_length: int = 128
    truncation: str = "head_tail"  # or "head"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(
        default_factory=lambda: ["query", "key", "value", "dense"]
    )
    random_init: bool = False  # tests: same architecture, untrained weights


class FusionHead(nn.Module):
    """[text*mt, image*mi, mt, mi] -> MLP -> logits. A missing modality is a zero mask."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.text_norm = nn.LayerNorm(TEXT_DIM)
        self.image_norm = nn.LayerNorm(IMAGE_DIM)
        self.text_proj = nn.Linear(TEXT_DIM, cfg.hidden)
        self.image_proj = nn.Linear(IMAGE_DIM, cfg.hidden)
        self.mlp = nn.Sequential(
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * cfg.hidden + 2, cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, len(cfg.labels)),
        )

    def forward(
        self, text: torch.Tensor, image: torch.Tensor, mt: torch.Tensor, mi: torch.Tensor
    ) -> torch.Tensor:
        t = self.text_proj(self.text_norm(text)) * mt[:, None]
        i = self.image_proj(self.image_norm(image)) * mi[:, None]
        return self.mlp(torch.cat([t, i, mt[:, None], mi[:, None]], dim=1))


def add_lora(encoder: nn.Module, cfg: ModelConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        # Only the encoder layers: the BERT pooler's dense layer is unused (we mean-pool).
        target_modules=r".*encoder\.layer\.\d+\..*\.(" + "|".join(cfg.lora_targets) + ")",
        bias="none",
    )
    return get_peft_model(encoder, lora)


def tokenize(tokenizer, texts: Sequence[str], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Tokenize; ``head_tail`` keeps the first and last tokens of long reviews (the verdict
    is often at the end), instead of cutting the tail off."""
    if cfg.truncation != "head_tail":
        return tokenizer(
            list(texts), padding=True, truncation=True, max_length=cfg.max_length,
            return_tensors="pt",
        )
    budget = cfg.max_length - 2
    head = budget // 2
    ids_list = []
    for ids in tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]:
        if len(ids) > budget:
            ids = ids[:head] + ids[len(ids) - (budget - head):]
        ids_list.append([tokenizer.cls_token_id, *ids, tokenizer.sep_token_id])
    width = max(len(x) for x in ids_list)
    input_ids = torch.full((len(ids_list), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids_list), width), dtype=torch.long)
    for row, ids in enumerate(ids_list):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


class SentimentModel(nn.Module):
    """Text encoder (optionally LoRA-wrapped) + frozen image encoder + fusion head."""

    def __init__(self, cfg: ModelConfig, *, with_lora: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        encoder = load_text_encoder(random_init=cfg.random_init)
        self.text_encoder = add_lora(encoder, cfg) if with_lora else encoder
        self.image_encoder = ImageEncoder(pretrained=not cfg.random_init)
        self.head = FusionHead(cfg)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- bundle -----------------------------------------------------------------------------
    def save_bundle(self, path: Path, *, extra: dict | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.text_encoder.save_pretrained(str(path / "adapter"))
        torch.save(self.head.state_dict(), path / "head.pt")
        meta = {"format": "shopsense-multimodal/1", "config": asdict(self.cfg), **(extra or {})}
        (path / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load_bundle(cls, path: Path) -> SentimentModel:
        """Load a bundle for inference: LoRA merged into the encoder weights, eval mode."""
        from peft import PeftModel

        path = Path(path)
        meta = json.loads((path / BUNDLE_FILE).read_text())
        cfg = ModelConfig(**meta["config"])
        model = cls(cfg, with_lora=False)
        peft = PeftModel.from_pretrained(model.text_encoder, str(path / "adapter"))
        model.text_encoder = peft.merge_and_unload()
        # weights only: a bundle from the registry or a store must not run code when loaded
        model.head.load_state_dict(torch.load(path / "head.pt", map_location="cpu",
                                              weights_only=True))
        model.eval()
        return model


def read_bundle_meta(path: Path) -> dict:
    return json.loads((Path(path) / BUNDLE_FILE).read_text())


class Predictor:
    """Batched inference over a loaded bundle: lists in, one probability row per item out."""

    def __init__(self, model: SentimentModel, *, threads: int = 0, text_engine: str = "torch",
                 engine_cache_dir: Path | None = None) -> None:
        from shopsense.model.text_engines import build_text_engine

        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.cfg = model.cfg
        self.labels = list(model.cfg.labels)
        self.tokenizer = load_tokenizer()
        self.text_engine = build_text_engine(text_engine, self.model.text_encoder,
                                             threads=threads, cache_dir=engine_cache_dir)
        # The image features are the retrieval index's image vectors (before L2 norm) when the
        # pretrained EfficientNet-Lite0 is used, so callers may reuse them for a lookup.
        self.image_encoder_id = None if self.cfg.random_init else IMAGE_ENCODER_ID

    @classmethod
    def from_bundle(cls, path: Path, *, threads: int = 0, text_engine: str = "torch",
                    engine_cache_dir: Path | None = None) -> Predictor:
        return cls(SentimentModel.load_bundle(path), threads=threads, text_engine=text_engine,
                   engine_cache_dir=engine_cache_dir)

    @torch.inference_mode()
    def image_features(self, images: Sequence[Image.Image], *, chunk: int = 4) -> torch.Tensor:
        """EfficientNet features in chunks of 4: its depthwise convolutions get slower per
        image on CPU as the batch grows (measured: 104 img/s in chunks of 4, 29 img/s as one
        batch of 32, 2 threads)."""
        feats = []
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            pixels = torch.from_numpy(np.stack([preprocess_image(im) for im in part]))
            feats.append(self.model.image_encoder(pixels))
        return torch.cat(feats)

    def predict_proba(
        self,
        texts: Sequence[str | None],
        images: Sequence[Image.Image | None] | None = None,
    ) -> np.ndarray:
        """One row of label probabilities per item (text, image or both)."""
        return self.predict_with_features(texts, images)[0]

    @torch.inference_mode()
    def predict_with_features(
        self,
        texts: Sequence[str | None],
        images: Sequence[Image.Image | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``predict_proba`` and the image features it computed: ``(n, 1280)`` float32, zero
        rows for items without an image (see ``image_encoder_id``)."""
        n = len(texts)
        images = list(images) if images is not None else [None] * n
        if len(images) != n:
            raise ValueError("texts and images must have the same length")
        text_feats = torch.zeros((n, TEXT_DIM))
        image_feats = torch.zeros((n, IMAGE_DIM))
        mt = torch.tensor([t is not None and t.strip() != "" for t in texts], dtype=torch.float32)
        mi = torch.tensor([im is not None for im in images], dtype=torch.float32)
        if not bool((mt + mi).all()):
            raise ValueError("every item needs text or an image")
        t_idx = [i for i in range(n) if mt[i]]
        if t_idx:
            enc = tokenize(self.tokenizer, [texts[i] for i in t_idx], self.cfg)
            text_feats[t_idx] = self.text_engine.encode(enc["input_ids"], enc["attention_mask"])
        i_idx = [i for i in range(n) if mi[i]]
        if i_idx:
            image_feats[i_idx] = self.image_features([images[i] for i in i_idx])
        logits = self.model.head(text_feats, image_feats, mt, mi)
        return torch.softmax(logits, dim=-1).numpy(), image_feats.numpy()
