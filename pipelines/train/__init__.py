"""Ray Train fine-tuning of the compact model or LLaVA: ``train_distributed(DistributedConfig)``."""

from pipelines.train.config import DistributedConfig
from pipelines.train.distributed import DistributedResult, train_distributed

__all__ = ["DistributedConfig", "DistributedResult", "train_distributed"]
