"""The service's one batcher (``MicroBatcher``) and the classifier service over it: concurrent
callers share batches, a lone caller never waits, one bad item fails alone, retuning live."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.inference.backends.base import ClassifierInput
from services.inference.batching import BatchedClassifierService, MicroBatcher


class Recorder:
    """``fn`` for the batcher: records batch sizes; ``hold`` blocks a batch until released."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, items):
        self.hold.wait(10)
        self.sizes.append(len(items))
        if any(i == "bad" for i in items):
            raise ValueError("bad item")
        return [f"out:{i}" for i in items]


def test_items_arriving_while_a_batch_runs_go_out_together():
    rec = Recorder()

    async def scenario():
        b = MicroBatcher(rec, max_batch_size=8, max_wait_s=0.0)
        rec.hold.clear()
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)  # "a" is being computed, held
        rest = [asyncio.ensure_future(b.submit(x)) for x in "bcdefghijk"]
        await asyncio.sleep(0.05)
        assert b.queued == 10 and b.load == 11
        rec.hold.set()
        out = [await first] + [await r for r in rest]
        b.close()
        return out

    out = asyncio.run(scenario())
    assert [o for o, _ in out] == [f"out:{x}" for x in "abcdefghijk"]
    assert rec.sizes == [1, 8, 2]  # the queued ten in batches of at most 8
    assert [n for _, n in out] == [1] + [8] * 8 + [2] * 2


def test_a_lone_caller_does_not_wait_for_company():
    rec = Recorder()

    async def scenario():
        b = MicroBatcher(rec, max_batch_size=32, max_wait_s=0.2)
        for i in range(3):  # one caller, a request every 0.3 s: slower than the wait
            await b.submit(i)
            await asyncio.sleep(0.3)
        b.close()
        return b.stats

    stats = asyncio.run(scenario())
    assert stats.waited_batches == 0 and rec.sizes == [1, 1, 1]


def test_a_burst_waits_for_a_fuller_batch():
    rec = Recorder()

    async def scenario():
        b = MicroBatcher(rec, max_batch_size=4, max_wait_s=0.5)
        await b.submit_many(list(range(10)))  # ten arrivals at once: requests come fast
        await asyncio.gather(*(b.submit(i) for i in range(10)))
        rec.sizes.clear()
        staggered = []
        for i in range(4):  # 10 ms apart: the first waits for the other three
            staggered.append(asyncio.ensure_future(b.submit(f"s{i}")))
            await asyncio.sleep(0.01)
        out = await asyncio.gather(*staggered)
        b.close()
        return out, b.stats

    out, stats = asyncio.run(scenario())
    assert [n for _, n in out] == [4, 4, 4, 4] and rec.sizes == [4]
    assert stats.waited_batches >= 1


def test_one_bad_item_fails_alone():
    rec = Recorder()

    async def scenario():
        b = MicroBatcher(rec, max_batch_size=8, max_wait_s=0.0)
        rec.hold.clear()
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(b.submit(x)) for x in ("b", "bad", "c")]
        await asyncio.sleep(0.05)
        rec.hold.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        b.close()
        return results, b.stats

    results, stats = asyncio.run(scenario())
    assert results[0] == ("out:a", 1)
    assert isinstance(results[2], ValueError)
    assert results[1] == ("out:b", 1) and results[3] == ("out:c", 1)
    assert stats.isolated_failures == 1


def test_settings_are_checked_and_retunable():
    b = MicroBatcher(lambda xs: xs)
    with pytest.raises(ValueError):
        b.set_max_batch_size(0)
    with pytest.raises(ValueError):
        b.set_max_wait_s(-1)
    b.set_max_batch_size(3)
    assert b.max_batch_size == 3
    b.close()


def test_a_batcher_survives_its_event_loop():
    """A new event loop (a test client's portal, a restarted server) rebinds the runner."""
    b = MicroBatcher(lambda xs: [x * 2 for x in xs])
    assert asyncio.run(b.submit(2)) == (4, 1)
    assert asyncio.run(b.submit(3)) == (6, 1)
    b.close()


def test_classifier_service_batches_the_real_backend(torch_backend):
    svc = BatchedClassifierService(torch_backend, max_batch_size=16, max_wait_s=0.0)

    async def scenario():
        items = [ClassifierInput(text=f"great product number {i}") for i in range(12)]
        # one request of 12 items: one arrival, one batch
        outs = await svc.classify(items)
        svc.reconfigure({"batching": False})
        alone = await svc.classify(items[:3])
        svc.reconfigure({"batching": True, "batch_max_size": 4})
        again = await svc.classify(items)
        svc.close()
        return outs, alone, again

    outs, alone, again = asyncio.run(scenario())
    assert [n for _, n in outs] == [12] * 12
    assert [n for _, n in alone] == [1, 1, 1]
    assert max(n for _, n in again) == 4
    assert [o.label for o, _ in outs] == [o.label for o, _ in again]
    info = svc.describe_now()
    assert info["identity"].startswith(info["model"]["name"])
    assert info["identity"].endswith("/torch")
