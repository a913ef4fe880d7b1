"""The plain peer of ``benchmarks/speed.py``: what a user writes in a few lines to serve our
model on one machine. FastAPI on uvicorn, the same ``Predictor``, an asyncio micro-batcher
(at most 32 items, 5 ms wait), no cache, no similar reviews, no guard.

    .venv/bin/python benchmarks/peer_app.py --model BUNDLE_DIR --port 8009
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

MAX_BATCH, MAX_WAIT_S = 32, 0.005


class Review(BaseModel):
    text: str


def build(bundle_dir: str) -> FastAPI:
    from shopsense.model.classifier import Predictor

    predictor = Predictor.from_bundle(bundle_dir)
    labels = predictor.labels
    queue: asyncio.Queue = asyncio.Queue()
    pool = ThreadPoolExecutor(1)
    app = FastAPI()

    async def batcher() -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + MAX_WAIT_S
            while len(batch) < MAX_BATCH and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
            try:
                proba = await loop.run_in_executor(
                    pool, predictor.predict_proba, [t for t, _ in batch])
            except Exception as exc:  # noqa: BLE001
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut), row in zip(batch, proba, strict=True):
                fut.set_result(row)

    @app.on_event("startup")
    async def start() -> None:
        app.state.task = asyncio.create_task(batcher())

    @app.post("/v1/sentiment")
    async def sentiment(review: Review) -> dict:
        fut = asyncio.get_running_loop().create_future()
        await queue.put((review.text, fut))
        row = await fut
        return {"label": labels[int(row.argmax())],
                "scores": {lbl: round(float(p), 6) for lbl, p in zip(labels, row)}}

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready", "model": {"name": "peer", "version": "-"}}

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    uvicorn.run(build(a.model), host=a.host, port=a.port, log_level="warning", access_log=False)
