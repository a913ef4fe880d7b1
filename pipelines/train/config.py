"""The distributed training run's configuration: which model, how many workers, where the
checkpoints go, and how failures are handled. The recipe itself (data, epochs, learning rates,
LoRA) is the core :class:`~shopsense.model.train.TrainConfig`, shared by both models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from shopsense.model.train import TrainConfig


class LlavaOptions(BaseModel):
    """LLaVA-v1.6 as a generative classifier (the prompt holds the review and the photo; the
    target is the label word)."""

    model_source: str | None = Field(
        None, description="a local path or hub id of LlavaNext weights and processor (a GPU "
        "cluster: llava-hf/llava-v1.6-mistral-7b-hf); None builds a tiny randomly initialised "
        "LlavaNext of the same architecture with a tokenizer made offline (CPU, tests)")
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    train_projector: bool = Field(True, description="also train the multimodal projector")
    max_text_chars: int = Field(600, description="review text is cut to this many characters")
    # tiny architecture (ignored when model_source is set)
    tiny_hidden: int = 64
    tiny_layers: int = 2
    tiny_image_size: int = 32
    tiny_patch_size: int = 8


class FaultInjection(BaseModel):
    """Kill one worker process once (``os._exit``), after a checkpoint exists: shows that the
    run resumes from its last checkpoint. ``marker`` (a file) makes it happen only once."""

    after_step: int
    marker: str
    rank: int = -1  # -1: the last worker


class DistributedConfig(BaseModel):
    """A Ray Train run of one of the two models."""

    model: Literal["compact", "llava"] = "compact"
    train: TrainConfig
    llava: LlavaOptions = Field(default_factory=LlavaOptions)
    num_workers: int = Field(1, ge=1, description="data-parallel Ray Train workers")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); CPU uses gloo")
    cpus_per_worker: float = Field(1.0, description="CPUs per worker; also its torch threads")
    checkpoint_uri: str | None = Field(
        None, description="object store root for checkpoints (file:///… or s3://bucket/prefix);"
        " default: the settings' store + /checkpoints")
    run_name: str | None = Field(
        None, description="checkpoints live under <checkpoint_uri>/<run_name>; a run started "
        "again with the same name resumes from its last checkpoint")
    checkpoint_every: int = Field(20, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = 2
    max_failures: int = Field(1, description="worker failures to recover from (-1: no limit)")
    ray_address: str | None = Field(None, description="None: start a local Ray instance")
    fault: FaultInjection | None = None
