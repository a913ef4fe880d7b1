"""Checkpoints load without unpickling code: a real training state round-trips through
``load_state`` (weights only), and a tampered ``state.pt`` that would run a command under the
old ``weights_only=False`` load is refused."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from pipelines.train.distributed import STATE_FILE, load_state
from shopsense.model.train import TrainConfig, TrainSession


class _RunsCode:
    """What an attacker with write access to the checkpoint store would put in state.pt."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / STATE_FILE
    torch.save({"step": 3, "trainable": {}, "hook": _RunsCode(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_state(path)
    assert not marker.exists()
    # what the previous loader did with the same file
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_a_real_training_state_round_trips(data_dir, tmp_path):
    cfg = TrainConfig(data_dir=data_dir, output_dir=tmp_path / "out", train_sets=["uci-amazon"],
                      eval_sets=["uci-imdb"], max_train_per_set=16, max_eval_per_set=8,
                      epochs=1, batch_size=8, max_length=16, image_pool=4, progress=False)
    session = TrainSession(cfg)
    batch = session.next_batch()
    session.zero_grad()
    session.loss(batch).backward()
    session.apply()
    session.record(0.5, len(batch))
    state = session.state_dict()
    torch.save(state, tmp_path / STATE_FILE)
    loaded = load_state(tmp_path / STATE_FILE)
    assert loaded["step"] == state["step"] and loaded["rng"] == state["rng"]
    assert loaded["samples"] == state["samples"]
    fresh = TrainSession(cfg)
    fresh.load_state_dict(loaded)
    assert fresh.step == session.step and fresh.seen == session.seen
    for name, value in session.trainable_state().items():
        assert torch.equal(fresh.trainable_state()[name], value)
