"""What a run carries across runs and across a crash: the published dataset it adds to, each
source's state (decayed bandit evidence, learnt selectors and interval), the checkpoint of an
interrupted run (states, counters, reviews and photos collected so far), and the publication
at the end (the dataset atomically, then the states, then the checkpoint removed)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pipelines.scrape.config import ScrapeConfig, SourceRun
from pipelines.scrape.state import SourceState, load_state, save_state
from shopsense.data.dataset import DatasetNotFound, read_dataset, write_dataset
from shopsense.schemas import DatasetManifest, Review
from shopsense.store import ObjectNotFound, ObjectStore, join_key

__all__ = ["carried_state", "checkpoint_images", "checkpoint_prefix", "publish",
           "read_checkpoint", "read_previous", "write_checkpoint"]

CHECKPOINT = "checkpoint.json"


def checkpoint_prefix(config: ScrapeConfig) -> str:
    """Where the run of ``config.dataset`` checkpoints (one folder per dataset)."""
    return join_key(config.checkpoint_prefix,
                    re.sub(r"[^A-Za-z0-9._-]+", "_", config.dataset))


def read_previous(store: ObjectStore, dataset: str) -> list[Review]:
    """The reviews published so far (none when the dataset does not exist yet)."""
    try:
        _, reviews = read_dataset(store, dataset)
        return list(reviews)
    except DatasetNotFound:
        return []


def carried_state(store: ObjectStore, config: ScrapeConfig, src: str) -> SourceState:
    """A source's state at the start of a fresh run: what past runs learnt (with ``learn``),
    their bandit evidence weighted by ``decay``."""
    st = (load_state(store, config.state_prefix, src) if config.learn
          else SourceState(source=src))
    st.bandit_pages *= config.decay
    st.bandit_reviews *= config.decay
    st.patterns = {k: [v[0] * config.decay, v[1] * config.decay]
                   for k, v in st.patterns.items()}
    st.runs += 1
    return st


def read_checkpoint(store: ObjectStore, prefix: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(join_key(prefix, CHECKPOINT)))
    except ObjectNotFound:
        return None


def checkpoint_images(store: ObjectStore, prefix: str, shas: list[str]) -> dict[str, bytes]:
    """The photos a checkpoint saved (one lost since is skipped)."""
    images = {}
    for sha in shas:
        try:
            images[sha] = store.get_bytes(join_key(prefix, "images", sha))
        except ObjectNotFound:
            pass
    return images


def write_checkpoint(store: ObjectStore, prefix: str, *, run_id: str, pages: int,
                     sources: dict[str, SourceState], runs: dict[str, SourceRun],
                     new: list[Review], images: dict[str, bytes]) -> None:
    for sha, data in images.items():
        key = join_key(prefix, "images", sha)
        if not store.exists(key):
            store.put_bytes(key, data)
    body = {
        "run_id": run_id,
        "pages": pages,
        "states": {k: v.model_dump(mode="json") for k, v in sources.items()},
        "runs": {k: v.model_dump(mode="json") for k, v in runs.items()},
        "reviews": [r.model_dump(mode="json") for r in new],
        "images": sorted(images),
    }
    store.put_bytes(join_key(prefix, CHECKPOINT), json.dumps(body).encode(),
                    content_type="application/json")


def publish(store: ObjectStore, config: ScrapeConfig, prefix: str, *, run_id: str,
            resumed: bool, sources: dict[str, SourceState], runs: dict[str, SourceRun],
            previous: list[Review], new: list[Review], images: dict[str, bytes]
            ) -> DatasetManifest:
    """Publish the dataset (previous + new reviews, with the run's provenance), then the
    source states, then remove the checkpoint under ``prefix``."""
    provenance = {
        "step": "scrape", "run_id": run_id, "resumed": resumed,
        "seeds": config.seeds, "pages": sum(r.pages for r in runs.values()),
        "new_reviews": len(new), "previous_reviews": len(previous),
        "per_source": {k: {"pages": v.pages, "new_reviews": v.new_reviews,
                           "duplicates": v.duplicates, "failures": v.failures}
                       for k, v in runs.items()},
        "at": datetime.now(UTC).isoformat(),
    }
    try:
        old = _read_provenance(store, config.dataset)
    except DatasetNotFound:
        old = []
    manifest = write_dataset(store, config.dataset, [*previous, *new],
                             name=config.dataset, provenance=[*old[-20:], provenance],
                             images=images)
    if config.learn:
        for st in sources.values():
            save_state(store, config.state_prefix, st)
    store.delete_prefix(prefix)
    return manifest


def _read_provenance(store: ObjectStore, prefix: str) -> list[dict[str, Any]]:
    from shopsense.data.dataset import read_manifest

    return list(read_manifest(store, prefix).provenance)
