"""Data-parallel fine-tuning on Ray Train, checkpointed to the object store.

``train_distributed(config)`` runs a :class:`ray.train.torch.TorchTrainer` whose workers each
build the same task (:mod:`.tasks`: the compact multimodal model or LLaVA-v1.6), draw the same
seeded global batch, train on their shard of it and average gradients (gloo on CPU, NCCL on
GPU). Gradients are averaged by one all-reduce of a flat buffer per step instead of
``DistributedDataParallel``: a batch may hold no text or no photo, which leaves parameters
without gradients, and the fused buffer also carries the step's loss.

Every ``checkpoint_every`` steps rank 0 reports a checkpoint (model, optimiser, step, the rest
of the sample plan, RNG states) to Ray Train, which writes it under
``<checkpoint_uri>/<run_name>/`` in the object store (``file://`` directly, ``s3://`` through a
pyarrow S3 filesystem on the same MinIO endpoint and keys as :class:`~shopsense.store.S3Store`).
When a worker dies, Ray Train restarts the worker group (``FailureConfig(max_failures)``) and
each worker resumes from :func:`ray.train.get_checkpoint`. The last checkpoint also holds the
bundle (``bundle/``), which the driver copies out, evaluates and returns.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from pydantic import BaseModel

from pipelines.train.config import DistributedConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BUNDLE_DIR = "bundle"
_ENV_PREFIXES = ("SHOPSENSE_", "HF_", "TRANSFORMERS_", "MLFLOW_")


class DistributedResult(BaseModel):
    """What a run produced. ``train_result`` is set for the compact model (the core
    :class:`~shopsense.model.train.TrainResult`, ready for the registry)."""

    model: str
    bundle_dir: Path
    params: dict
    evaluation: dict
    metrics: dict
    eval_records: list[dict]
    checkpoint_path: str
    run_name: str
    num_workers: int
    resumed_from_step: int
    samples_per_second: float
    train_result: Any = None


# ------------------------------------------------------------------------------------ storage


def ray_storage(uri: str, settings=None) -> tuple[str, Any]:
    """Ray Train's ``(storage_path, storage_filesystem)`` for an object-store URI.

    ``file:///abs/dir`` is a local path (no filesystem object); ``s3://bucket/prefix`` is a
    pyarrow ``S3FileSystem`` on the settings' MinIO endpoint and keys."""
    from shopsense.settings import get_settings

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path), None
    if parsed.scheme == "s3":
        import pyarrow.fs

        s = settings or get_settings()
        fs = pyarrow.fs.S3FileSystem(
            access_key=s.s3_access_key, secret_key=s.s3_secret_key,
            endpoint_override=s.s3_endpoint, scheme="https" if s.s3_secure else "http",
            region="us-east-1", allow_bucket_creation=False)
        return f"{parsed.netloc}/{unquote(parsed.path).strip('/')}".rstrip("/"), fs
    raise ValueError(f"checkpoint URI must be file:///… or s3://bucket/prefix, got {uri!r}")


# ------------------------------------------------------------------------------------ workers


def _sync_gradients(params: list[torch.nn.Parameter], loss: torch.Tensor, world: int) -> float:
    """Sum every worker's (already shard-weighted) gradients and loss in one all-reduce;
    returns the global loss. Parameters without a gradient on this worker count as zeros."""
    if world == 1:
        return float(loss)
    import torch.distributed as dist

    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params] + [loss.detach().reshape(1).to(params[0].device)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
    return float(flat[-1])


def load_state(path: Path) -> dict:
    """A training state written by :func:`_report`, loaded with ``weights_only=True``: the
    checkpoint store is writable by other pods, and a full unpickler would run whatever code a
    tampered ``state.pt`` names. The state holds only tensors, dicts, lists, tuples, numbers
    and strings, which is all this loader accepts (anything else is an
    ``UnpicklingError``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _report(task, metrics: dict, rank: int, *, final: bool) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="shopsense-ckpt-") as tmp:
        torch.save(task.state_dict(), Path(tmp) / STATE_FILE)
        if final:
            task.save_bundle(Path(tmp) / BUNDLE_DIR)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _maybe_die(config: DistributedConfig, rank: int, world: int, step: int) -> None:
    fault = config.fault
    if fault is None or step < fault.after_step:
        return
    if rank != (fault.rank if fault.rank >= 0 else world - 1):
        return
    marker = Path(fault.marker)
    if marker.exists():
        return
    import ray.train

    # Wait until Ray Train has registered the checkpoint just reported: the failure then
    # happens "after a checkpoint", deterministically.
    ray.train.get_all_reported_checkpoints(timeout_s=120)
    marker.write_text(f"{step}\n")
    log.warning("fault injection: worker %d exits after step %d", rank, step)
    os._exit(1)  # a dead process, not an exception: no cleanup, no report


def worker_loop(raw: dict) -> None:
    """The function every Ray Train worker runs (``train_loop_per_worker``)."""
    import ray.train

    from pipelines.train.tasks import build_task

    config = DistributedConfig.model_validate(raw)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    setup_start = time.perf_counter()
    task = build_task(config)
    params = task.trainable_parameters()
    if world > 1:  # the same starting weights everywhere (what DDP's constructor does)
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    resumed_from = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            task.load_state_dict(load_state(Path(folder) / STATE_FILE))
        resumed_from = task.step
        log.info("worker %d resumed from step %d", rank, resumed_from)
    setup_seconds = time.perf_counter() - setup_start

    start, samples = time.perf_counter(), 0
    while task.step < task.total_steps:
        batch = task.next_batch()
        shard = batch[rank::world]
        task.zero_grad()
        loss = torch.zeros(())
        if shard:
            # weight by the shard's share of the batch, so the summed gradient is the mean
            part = task.loss(shard) * (len(shard) / len(batch))
            part.backward()
            loss = part.detach()
        global_loss = _sync_gradients(params, loss, world)
        task.apply()
        task.record(global_loss, len(batch))
        samples += len(batch)
        final = task.step >= task.total_steps
        if final or task.step % config.checkpoint_every == 0:
            elapsed = time.perf_counter() - start
            _report(task, {
                "step": task.step,
                "total_steps": task.total_steps,
                "loss": float(np.mean(task.losses[-20:])),
                "seen": task.seen,
                "resumed_from_step": resumed_from,
                "steps_this_attempt": task.step - resumed_from,
                "samples_per_second": samples / max(elapsed, 1e-9),
                "train_seconds": elapsed,
                "setup_seconds": setup_seconds,
                "world_size": world,
                **{f"teacher_{k}": v for k, v in getattr(task, "teacher_counts", {}).items()},
            }, rank, final=final)
            if not final:
                _maybe_die(config, rank, world, task.step)


# ------------------------------------------------------------------------------------- driver


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _ensure_ray(config: DistributedConfig) -> bool:
    """Start (or join) Ray; True when this call started it (and should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if config.ray_address:
        ray.init(address=config.ray_address, log_to_driver=False)
    else:
        need = config.num_workers * config.cpus_per_worker
        ray.init(address="local", num_cpus=max(int(np.ceil(need)), os.cpu_count() or 1),
                 include_dashboard=False, configure_logging=False, log_to_driver=False)
    return True


def train_distributed(config: DistributedConfig, settings=None, *,
                      evaluate: bool = True) -> DistributedResult:
    """Run the Ray Train job, then (``evaluate``) score the final bundle on the held-out rows
    (the pipeline leaves that to its evaluate step)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from shopsense.settings import get_settings

    s = settings or get_settings()
    wall = time.perf_counter()
    run_name = config.run_name or "train-" + datetime.now(UTC).strftime(
        "%Y%m%dT%H%M%S%f")
    root = config.checkpoint_uri or s.default_store_uri().rstrip("/") + "/checkpoints"
    storage_path, filesystem = ray_storage(root, s)
    raw = config.model_copy(update={"run_name": run_name}).model_dump(mode="json")
    started = _ensure_ray(config)
    try:
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config=raw,
            torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=config.num_workers, use_gpu=config.use_gpu,
                resources_per_worker={"CPU": config.cpus_per_worker,
                                      **({"GPU": 1} if config.use_gpu else {})}),
            run_config=RunConfig(
                name=run_name, storage_path=storage_path, storage_filesystem=filesystem,
                failure_config=FailureConfig(max_failures=config.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                worker_runtime_env={"env_vars": _worker_env()}),
        )
        result = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} ended without a checkpoint")

    out_dir = Path(config.train.output_dir)
    with result.checkpoint.as_directory() as folder:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(Path(folder) / BUNDLE_DIR, out_dir)
        state = load_state(Path(folder) / STATE_FILE)
    metrics = dict(result.metrics)
    log.info("run %s: %d steps on %d workers, %.1f samples/s, resumed from step %d",
             run_name, metrics["step"], config.num_workers, metrics["samples_per_second"],
             metrics["resumed_from_step"])
    skip = ("data_dir", "output_dir", "progress")
    params = {k: v for k, v in config.train.model_dump(mode="json").items() if k not in skip}
    params.update({"ray.num_workers": config.num_workers, "ray.use_gpu": config.use_gpu,
                   "ray.run_name": run_name, "model_kind": config.model})
    train_metrics = {"train_loss_last": float(metrics["loss"]),
                     "train_samples_per_second": float(metrics["samples_per_second"]),
                     "train_workers": config.num_workers,
                     "train_resumed_from_step": int(metrics["resumed_from_step"]),
                     **{k: float(v) for k, v in metrics.items() if k.startswith("teacher_")}}
    common = dict(model=config.model, bundle_dir=out_dir, checkpoint_path=result.checkpoint.path,
                  run_name=run_name, num_workers=config.num_workers,
                  resumed_from_step=int(metrics["resumed_from_step"]),
                  samples_per_second=float(metrics["samples_per_second"]))
    if not evaluate:
        return DistributedResult(params=params, evaluation={}, metrics=train_metrics,
                                 eval_records=[], **common)
    if config.model == "compact":
        from shopsense.model.train import finish_training, load_rows

        tc = config.train
        eval_rows = load_rows(tc.eval_sets, tc.eval_datasets, tc.data_dir, tc.max_eval_per_set,
                              tc.seed + 1)
        tr = finish_training(tc, out_dir, eval_rows, losses=state["losses"], seen=state["seen"],
                             train_seconds=float(metrics["train_seconds"]), start=wall)
        tr.metrics.update(train_metrics)
        tr.params.update(params)
        return DistributedResult(params=tr.params, evaluation=tr.evaluation, metrics=tr.metrics,
                                 eval_records=eval_rows, train_result=tr, **common)
    from pipelines.train.llava import evaluate_llava_bundle

    evaluation, eval_rows = evaluate_llava_bundle(config, out_dir)
    flat = {"eval_accuracy": evaluation["accuracy"], "eval_macro_f1": evaluation["macro_f1"],
            "eval_ece": evaluation["ece"], **train_metrics}
    return DistributedResult(params=params, evaluation=evaluation, metrics=flat,
                             eval_records=eval_rows,
                             **common)
