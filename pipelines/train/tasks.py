"""The seam between the distributed loop and a model: one class per model.

A task owns its model, optimiser and seeded sample plan. The loop in :mod:`.distributed`
calls, on every worker: ``next_batch()`` (the same global batch on each worker),
``loss(shard)``, ``zero_grad()``, gradient averaging over ``trainable_parameters()``,
``apply()`` and ``record()``; ``state_dict()``/``load_state_dict()`` are the checkpoint and
``save_bundle(dir)`` writes what evaluation and the registry load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from pipelines.train.config import DistributedConfig


class TrainTask(Protocol):
    step: int
    total_steps: int
    seen: int
    losses: list[float]

    def next_batch(self) -> list[Any]: ...
    def loss(self, batch: list[Any]) -> torch.Tensor: ...
    def zero_grad(self) -> None: ...
    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...
    def apply(self) -> None: ...
    def record(self, loss: float, samples: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def save_bundle(self, out_dir: Path) -> Path: ...


def build_task(config: DistributedConfig) -> TrainTask:
    """The compact model is the core :class:`~shopsense.model.train.TrainSession` itself
    (one training code path; the bundle it saves is what the registry and serving load)."""
    if config.model == "compact":
        from shopsense.model.train import TrainSession

        return TrainSession(config.train)
    from pipelines.train.llava import LlavaTask

    return LlavaTask(config)
