"""A keyed JSONL dataset that grows in small shards and folds them into one file.

Long, resumable jobs (the LLM's teacher labels, its retrieval queries) write what they made
every few rows as a shard under ``<prefix>/parts/``, so a killed run loses at most one shard;
``compact`` folds the main file and the shards into ``<prefix>/<main>`` plus
``manifest.json`` and only then deletes the shards. A torn shard (a crash mid-upload on a store
without atomic writes) loses only its own unreadable lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from shopsense.store import ObjectNotFound, ObjectStore, join_key

__all__ = ["ShardedRows"]

log = logging.getLogger(__name__)


class ShardedRows:
    """Rows keyed by ``key(row)`` under ``prefix`` in ``store`` (module docstring).

    ``check(object_key, row)`` may refuse a row read back (raise); the last row of a key wins.
    """

    def __init__(self, store: ObjectStore, prefix: str, *, main: str,
                 key: Callable[[dict[str, Any]], str], shard_size: int,
                 check: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.main = main
        self.key = key
        self.shard_size = shard_size
        self.check = check
        self._pending: list[dict[str, Any]] = []
        self._shard_no = 0

    def _lines(self, object_key: str) -> list[dict[str, Any]]:
        try:
            data = self.store.get_bytes(object_key)
        except ObjectNotFound:
            return []
        rows = []
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                log.warning("%s:%d: unreadable line skipped (%s)", object_key, n, exc)
        return rows

    def parts(self) -> list[str]:
        return sorted(k for k in self.store.list(join_key(self.prefix, "parts"))
                      if k.endswith(".jsonl"))

    def read(self) -> dict[str, dict[str, Any]]:
        """Every row written so far (the main file, then the shards in order)."""
        rows: dict[str, dict[str, Any]] = {}
        for object_key in [join_key(self.prefix, self.main), *self.parts()]:
            for row in self._lines(object_key):
                if self.check is not None:
                    self.check(object_key, row)
                rows[self.key(row)] = row
        return rows

    def append(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self._shard_no += 1
        name = (f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{os.getpid()}-"
                f"{self._shard_no:05d}.jsonl")
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._pending)
        self.store.put_bytes(join_key(self.prefix, "parts", name), body.encode(),
                             content_type="application/x-ndjson")
        self._pending = []

    def compact(self, manifest: Callable[[dict[str, dict[str, Any]]], dict[str, Any]]
                ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Fold the shards into the main file and write ``manifest.json``: ``manifest(rows)``
        plus the main file's ``digest``. Returns the rows and the manifest written."""
        self.flush()
        parts = self.parts()
        rows = self.read()
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n"
                       for _, r in sorted(rows.items())).encode()
        self.store.put_bytes(join_key(self.prefix, self.main), body,
                             content_type="application/x-ndjson")
        written = {**manifest(rows), "digest": hashlib.sha256(body).hexdigest()}
        self.store.put_bytes(join_key(self.prefix, "manifest.json"),
                             json.dumps(written, indent=2).encode(),
                             content_type="application/json")
        for object_key in parts:  # only after the main file holds them
            self.store.delete(object_key)
        return rows, written
