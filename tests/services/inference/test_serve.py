"""The real Ray Serve application, started the way `make demo` starts it."""

import asyncio
import os
import socket
import subprocess
import sys

import httpx
import pytest

from .conftest import png_b64

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-c", "from shopsense.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def service(registered_model, home):
    port = _free_port()
    env = {**os.environ, "SHOPSENSE_HOME": str(home), "SHOPSENSE_SERVE__MAX_BATCH_ITEMS": "16"}
    p = _cli("serve", "--background", "--port", str(port), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"ready: http://127.0.0.1:{port}" in p.stdout
    yield f"http://127.0.0.1:{port}", env
    stop = _cli("stop", env=env)
    assert stop.returncode == 0, stop.stderr


def test_serves_the_champion_from_the_registry(service, registered_model):
    url, _ = service
    r = httpx.post(f"{url}/v1/sentiment", json={"text": "Great phone"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == {"name": "shopsense-sentiment",
                                 "version": registered_model["version"],
                                 "uri": "models:/shopsense-sentiment@champion"}


def test_batch_endpoint_and_limits(service):
    url, _ = service
    items = [{"text": f"review {i}"} if i % 2 else {"image": png_b64()} for i in range(6)]
    r = httpx.post(f"{url}/v1/sentiment/batch", json={"items": items}, timeout=60)
    assert r.status_code == 200
    assert [x["modalities"] for x in r.json()["items"]] == [
        ["image"] if i % 2 == 0 else ["text"] for i in range(6)]
    r = httpx.post(f"{url}/v1/sentiment/batch", json={"items": [{"text": "x"}] * 17}, timeout=30)
    assert r.status_code == 413
    r = httpx.post(f"{url}/v1/sentiment", json={"image": "not base64!"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"] == "InvalidImage"


def test_concurrent_requests_are_batched(service):
    url, _ = service

    async def burst():
        async with httpx.AsyncClient(timeout=60) as c:
            rs = await asyncio.gather(*(c.post(f"{url}/v1/sentiment",
                                               json={"text": f"fine product number {i}"})
                                        for i in range(48)))
        return rs

    rs = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    # At least one forward pass carried more than one request.
    count_le1 = total = None
    for line in metrics.splitlines():
        if line.startswith('shopsense_classifier_batch_size_bucket{le="1.0"}'):
            count_le1 = float(line.split()[-1])
        if line.startswith("shopsense_classifier_batch_size_count"):
            total = float(line.split()[-1])
    assert total and count_le1 is not None and count_le1 < total


def test_demo_command_prints_answers(service):
    url, env = service
    p = _cli("demo", "--url", url, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "photo only" in p.stdout and "batch of 3" in p.stdout
