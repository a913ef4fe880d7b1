"""Dynamic batching of concurrent calls: the one batcher of the inference service.

Callers submit single items from the event loop; :class:`MicroBatcher` groups the items that
are waiting into one call of ``fn(list) -> list`` (at most ``max_batch_size`` items), run in a
worker thread of its own, one batch at a time, so the event loop stays free to read and write
requests while the model computes. It runs wherever the inference API runs: inside the
``Classifier`` replica of the Ray Serve graph, and in the API process itself when the service
runs on one machine without hops (``SHOPSENSE_SERVE__ENGINE=local``). Batch size and wait are
retunable while it runs (Serve's ``user_config`` -> ``reconfigure``).

When to wait for a fuller batch. Items that arrive while a batch runs are queued and go out
together as soon as it returns; no timer is needed for those. When the worker is idle, the
first item either goes at once or waits at most ``max_wait_s`` for company. It waits only when
requests have lately been arriving faster than one per ``max_wait_s`` (an exponentially weighted
mean of the gaps between arrivals): a lone caller (concurrency 1) never pays the wait, a burst
fills a batch. The wait is measured from the oldest waiting item's arrival, so an item never
waits longer than ``max_wait_s`` for others.

One bad item never fails its neighbours: if a batch raises, each of its items is run alone and
only the failing ones get the exception. A caller that went away (its task cancelled) is
dropped from its batch's results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Gaps longer than this count as this long in the arrival-rate estimate (an idle minute is
# no more informative than an idle second).
_MAX_GAP_S = 1.0
_EWMA_WEIGHT = 0.2


@dataclass
class BatcherStats:
    """What the batcher did since it started (for tests, ``/metrics`` and benchmarks)."""

    batches: int = 0
    items: int = 0
    waited_batches: int = 0  # batches whose first item waited for company
    isolated_failures: int = 0  # batches that raised and were retried item by item


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` -> ``(result, size of the batch that computed it)``."""

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
        name: str = "batcher",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fn = fn
        self.name = name
        self.clock = clock
        self.set_max_batch_size(max_batch_size)
        self.set_max_wait_s(max_wait_s)
        self.stats = BatcherStats()
        self._pending: list[tuple[T, asyncio.Future, float]] = []
        self._in_flight = 0
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_arrival: float | None = None
        self._gap_ewma: float = _MAX_GAP_S
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-worker")

    # -- settings ---------------------------------------------------------------------------
    def set_max_batch_size(self, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {size}")
        self.max_batch_size = int(size)

    def set_max_wait_s(self, seconds: float) -> None:
        if float(seconds) < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {seconds}")
        self.max_wait_s = float(seconds)

    # -- load -------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Items waiting for a batch (not counting the one running)."""
        return len(self._pending)

    @property
    def load(self) -> int:
        """Items waiting plus items being computed."""
        return len(self._pending) + self._in_flight

    # -- submit -----------------------------------------------------------------------------
    async def submit(self, item: T) -> tuple[R, int]:
        return await self._enqueue([item])[0]

    async def submit_many(self, items: Sequence[T]) -> list[tuple[R, int]]:
        """Several items of one request (one arrival): results in order."""
        return list(await asyncio.gather(*self._enqueue(list(items))))

    def _enqueue(self, items: list[T]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._bind(loop)
        now = self.clock()
        if self._last_arrival is not None:
            gap = min(_MAX_GAP_S, max(0.0, now - self._last_arrival))
            self._gap_ewma += _EWMA_WEIGHT * (gap - self._gap_ewma)
        self._last_arrival = now
        futs = [loop.create_future() for _ in items]
        self._pending.extend((item, fut, now) for item, fut in zip(items, futs, strict=True))
        self._arrived.set()
        return futs

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        old = self._loop
        if (self._runner is not None and not self._runner.done() and old is not None
                and not old.is_closed()):
            raise RuntimeError(f"{self.name}: used from two event loops")
        for _, fut, _ in self._pending:  # left over from a loop that has gone
            if not fut.done() and fut.get_loop() is not loop:
                fut.cancel()
        self._pending = [p for p in self._pending if p[1].get_loop() is loop]
        self._loop = loop
        self._arrived = asyncio.Event()
        self._runner = loop.create_task(self._run(), name=f"{self.name}-runner")

    # -- the runner -------------------------------------------------------------------------
    def _should_wait(self) -> bool:
        return self.max_wait_s > 0 and self._gap_ewma < self.max_wait_s

    async def _run(self) -> None:
        try:
            while True:
                if not self._pending:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                waited = False
                if len(self._pending) < self.max_batch_size and self._should_wait():
                    deadline = self._pending[0][2] + self.max_wait_s
                    while len(self._pending) < self.max_batch_size:
                        left = deadline - self.clock()
                        if left <= 0:
                            break
                        waited = True
                        self._arrived.clear()
                        try:
                            await asyncio.wait_for(self._arrived.wait(), left)
                        except TimeoutError:
                            break
                batch = self._pending[: self.max_batch_size]
                del self._pending[: len(batch)]
                live = [(item, fut) for item, fut, _ in batch if not fut.done()]
                if not live:
                    continue
                self.stats.batches += 1
                self.stats.items += len(live)
                self.stats.waited_batches += waited
                await self._compute(live)
        except asyncio.CancelledError:
            for _, fut, _ in self._pending:
                if not fut.done():
                    fut.set_exception(RuntimeError(f"{self.name} stopped"))
            self._pending.clear()
            raise

    async def _compute(self, live: list[tuple[T, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for item, _ in live]
        self._in_flight = len(items)
        try:
            try:
                results = await loop.run_in_executor(self._executor, self._call, items)
            except Exception as exc:  # noqa: BLE001 - isolated below, then delivered
                if len(items) == 1:
                    _deliver(live[0][1], exc=exc)
                    return
                self.stats.isolated_failures += 1
                log.warning("%s: a batch of %d failed (%s: %s); running its items one by one",
                            self.name, len(items), type(exc).__name__, exc)
                for item, fut in live:
                    try:
                        (one,) = await loop.run_in_executor(self._executor, self._call, [item])
                    except Exception as one_exc:  # noqa: BLE001 - this item's own failure
                        _deliver(fut, exc=one_exc)
                    else:
                        _deliver(fut, value=(one, 1))
                return
            for (_, fut), res in zip(live, results, strict=True):
                _deliver(fut, value=(res, len(items)))
        finally:
            self._in_flight = 0

    def _call(self, items: list[T]) -> list[R]:
        out = list(self.fn(items))
        if len(out) != len(items):
            raise RuntimeError(f"{self.name}: {len(out)} results for {len(items)} items")
        return out

    def close(self) -> None:
        """Stop the runner (pending callers get an error) and the worker thread."""
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _deliver(fut: asyncio.Future, *, value=None, exc: BaseException | None = None) -> None:
    if fut.done():  # the caller went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class BatchedClassifierService:
    """The ``ClassifierService`` of one backend behind a :class:`MicroBatcher`: what the
    ``Classifier`` replica of the Ray Serve graph runs, and what the API calls directly in the
    ``local`` engine. ``batching=False`` computes every item alone (batches of one)."""

    def __init__(self, backend, *, batching: bool = True, max_batch_size: int = 32,
                 max_wait_s: float = 0.005) -> None:
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.batcher: MicroBatcher = MicroBatcher(
            backend.predict_batch, max_batch_size=max_batch_size if batching else 1,
            max_wait_s=max_wait_s, name=f"{backend.name}-batcher")
        self.batching = batching

    @classmethod
    def from_settings(cls, backend, serve_settings) -> BatchedClassifierService:
        return cls(backend, batching=serve_settings.batching,
                   max_batch_size=serve_settings.batch_max_size,
                   max_wait_s=serve_settings.batch_wait_timeout_s)

    def reconfigure(self, config: dict) -> None:
        """Live retuning (Serve's ``user_config``): batching, batch_max_size,
        batch_wait_timeout_s."""
        if "batch_max_size" in config:
            self.max_batch_size = int(config["batch_max_size"])
        if "batching" in config:
            self.batching = bool(config["batching"])
        if "batch_wait_timeout_s" in config:
            self.batcher.set_max_wait_s(float(config["batch_wait_timeout_s"]))
        self.batcher.set_max_batch_size(self.max_batch_size if self.batching else 1)

    @property
    def load(self) -> int:
        return self.batcher.load

    async def classify(self, items: list) -> list:
        """``(output, batch size)`` per item, in order; an item's own failure raises."""
        return await self.batcher.submit_many(items)

    def describe_now(self) -> dict:
        from services.inference.backends import describe_backend

        return describe_backend(self.backend)

    async def describe(self) -> dict:
        return self.describe_now()

    def close(self) -> None:
        self.batcher.close()
