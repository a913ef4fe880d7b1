"""Issue 16's API defects, each against the real app on uvicorn on 127.0.0.1 (the ASGI app Ray
Serve runs) with the real torch backend; the Serve-specific parts are in test_serve.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import threading

import httpx
import pytest
from PIL import Image

from services.inference.api import (
    LocalClassifierService,
    build_api,
    collapse_terms,
    repeated_terms,
)
from services.inference.backends.base import ClassifierInput, predict_isolated
from shopsense.errors import DataError, InvalidInput
from shopsense.settings import AuthSettings, ImageSettings, ServeSettings, Settings

from .conftest import png_b64
from .live import HeldImageServer, LiveServer, jpeg_bytes


def settings(*, serve=None, images=None, auth=None) -> Settings:
    return Settings(
        serve=ServeSettings(**{"max_batch_items": 64, "max_body_bytes": 2_000_000,
                               "retrieval": False, **(serve or {})}),
        images=ImageSettings(**{"allow_hosts": [], **(images or {})}),
        auth=AuthSettings(**(auth or {})))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(size, mode="RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG", **save)
    return buf.getvalue()


class Recording:
    """The real local classifier, remembering the image sizes it was handed."""

    def __init__(self, backend, delay_s: float = 0.0) -> None:
        self.inner = LocalClassifierService(backend)
        self.sizes: list[tuple[int, int]] = []
        self.delay_s = delay_s

    async def classify(self, items):
        self.sizes += [i.image.size for i in items if i.image is not None]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await self.inner.classify(items)

    async def describe(self):
        return await self.inner.describe()


@pytest.fixture(scope="module")
def live(torch_backend):
    service = Recording(torch_backend)
    with LiveServer(build_api(service, settings())) as srv:
        srv.service = service
        yield srv


def _raw(url: str, path: str, body: bytes, **kw) -> httpx.Response:
    return httpx.post(url + path, content=body, timeout=60,
                      headers={"content-type": "application/json", **kw.pop("headers", {})},
                      **kw)


def _is_error(r: httpx.Response, status: int, error: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "request_id"} and body["message"]
    assert body["request_id"] == r.headers["x-request-id"]
    if error is not None:
        assert body["error"] == error, body
    return body


# ------------------------------------------------------------------ invalid text, batches


@pytest.mark.parametrize("path, body", [
    ("/v1/sentiment", rb'{"text": "ok \ud800 bad"}'),
    ("/v1/sentiment", rb'{"text": "fine", "category": "\udfff"}'),
    ("/v1/sentiment/batch", rb'{"items": [{"text": "good"}, {"text": "ok \ud800 bad"}]}'),
    ("/v1/search", rb'{"query": "battery \udc00"}'),
])
def test_a_lone_surrogate_is_a_422_at_the_edge(live, path, body):
    r = _raw(live.url, path, body)
    err = _is_error(r, 422, "InvalidInput")
    assert "surrogate" in err["message"]
    # a surrogate *pair* is a real character and is fine
    ok = _raw(live.url, "/v1/sentiment", rb'{"text": "love it \ud83d\ude00"}')
    assert ok.status_code == 200, ok.text


def test_one_item_the_model_cannot_take_fails_alone(torch_backend):
    """The real tokenizer raises TypeError on a lone surrogate; that item fails, the others
    of the same batch are answered as if alone."""
    good, bad = ClassifierInput(text="Works great, love it"), ClassifierInput(text="ok \ud800")
    with pytest.raises(TypeError):
        torch_backend.predict_batch([good, bad])
    out = predict_isolated(torch_backend, [good, bad, good])
    assert isinstance(out[1], Exception) and not isinstance(out[0], Exception)
    alone = torch_backend.predict_batch([good])[0]
    assert out[0].label == out[2].label == alone.label
    assert abs(out[0].scores["positive"] - alone.scores["positive"]) < 1e-4


# ------------------------------------------------------------------------- image bombs


def test_a_400000x1_png_is_refused_from_its_header(live):
    data = png((400_000, 1), "L")
    assert len(data) < 2000
    err = _is_error(httpx.post(live.url + "/v1/sentiment", json={"image": b64(data)},
                               timeout=30), 413, "PayloadTooLarge")
    assert "400000x1" in err["message"]
    wide = png((6000, 100), "L")  # each side under the cap, 60:1
    err = _is_error(httpx.post(live.url + "/v1/sentiment", json={"image": b64(wide)},
                               timeout=30), 413)
    assert "aspect ratio" in err["message"]


@pytest.mark.parametrize("make, needle", [
    # a palette image whose pixel count is over the cap: 1-bit rows compress to nothing
    (lambda: png((9000, 9000), "P"), "pixels"),
    # a compressed text chunk that inflates past Pillow's cap
    (lambda: _ztxt_bomb(), "too large"),
    # a GIF whose logical screen is huge
    (lambda: _gif((12_001, 20)), "a side"),
])
def test_palette_and_decompression_bombs_are_413(live, make, needle):
    err = _is_error(httpx.post(live.url + "/v1/sentiment", json={"image": b64(make())},
                               timeout=30), 413, "PayloadTooLarge")
    assert needle in err["message"]


def _ztxt_bomb() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (40 << 20), zip=True)
    return png((8, 8), pnginfo=info)


def _gif(size) -> bytes:
    buf = io.BytesIO()
    Image.new("P", size).save(buf, format="GIF")
    return buf.getvalue()


def test_replicas_get_the_image_at_the_models_size(live, torch_backend):
    live.service.sizes.clear()
    big = Image.new("RGB", (3000, 2000), (180, 30, 30))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    r = httpx.post(live.url + "/v1/sentiment", json={"image": b64(buf.getvalue())}, timeout=60)
    assert r.status_code == 200, r.text
    assert live.service.sizes == [(336, 224)]
    # a palette PNG with transparency, reduced the same way
    pal = Image.new("P", (900, 600))
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    r = httpx.post(live.url + "/v1/sentiment", json={"image": b64(buf.getvalue())}, timeout=60)
    assert r.status_code == 200 and live.service.sizes[-1] == (336, 224)


def test_reducing_at_the_edge_does_not_change_the_answer(torch_backend):
    """A PNG (no draft mode): the edge's resize is the one the model's preprocessing does, so
    the scores are the same as from the full image."""
    from shopsense.images import render_photo
    from shopsense.images.render import PhotoSpec

    photo = render_photo(PhotoSpec(category="phone", damage="cracked", packaging="none"),
                         seed=3).resize((1200, 900))
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    body = {"text": "arrived like this", "image": b64(buf.getvalue())}
    answers = []
    for reduce_to in (None, 224):
        app = build_api(LocalClassifierService(torch_backend),
                        settings(images={"reduce_to": reduce_to}))
        with LiveServer(app) as srv:
            answers.append(httpx.post(srv.url + "/v1/sentiment", json=body, timeout=60).json())
    full, reduced = answers
    for label in full["scores"]:
        assert abs(full["scores"][label] - reduced["scores"][label]) < 1e-4


# --------------------------------------------------------------------------- slow URLs


def test_slow_image_urls_do_not_stall_other_callers(torch_backend):
    """64 URLs that hang, in one batch, while another caller sends a base64 photo: the photo is
    answered while the URLs still hang; the batch fetched at most fetch_per_request at once and
    ends at its overall deadline."""
    with HeldImageServer(hold_s=60) as slow:
        s = settings(images={"allow_hosts": ["127.0.0.1"], "fetch_timeout_s": 30,
                             "fetch_per_request": 4, "fetch_threads": 8, "fetch_queue": 8,
                             "fetch_deadline_s": 4})
        with LiveServer(build_api(LocalClassifierService(torch_backend), s)) as srv:
            result: dict = {}

            def slow_batch():
                items = [{"image": f"{slow.url}/{i}.jpg"} for i in range(64)]
                result["batch"] = httpx.post(srv.url + "/v1/sentiment/batch",
                                             json={"items": items}, timeout=120)

            t = threading.Thread(target=slow_batch)
            t.start()
            deadline = threading.Event()
            while slow.active < 4 and not deadline.wait(0.05):
                pass
            quick = httpx.post(srv.url + "/v1/sentiment", json={"image": png_b64()}, timeout=60)
            assert quick.status_code == 200, quick.text
            assert t.is_alive() and not slow.release.is_set()  # the URLs still hang
            t.join(120)
            err = _is_error(result["batch"], 400, "ImageFetchFailed")
            assert "4s" in err["message"]
            assert slow.peak <= 4


def test_too_many_fetches_in_flight_is_a_fast_503(torch_backend):
    with HeldImageServer(hold_s=30) as slow:
        s = settings(images={"allow_hosts": ["127.0.0.1"], "fetch_timeout_s": 20,
                             "fetch_per_request": 2, "fetch_threads": 2, "fetch_queue": 0,
                             "fetch_deadline_s": 20})
        with LiveServer(build_api(LocalClassifierService(torch_backend), s)) as srv:
            first = threading.Thread(target=lambda: httpx.post(
                srv.url + "/v1/sentiment/batch",
                json={"items": [{"image": f"{slow.url}/{i}.jpg"} for i in range(2)]},
                timeout=60))
            first.start()
            while slow.active < 2:
                threading.Event().wait(0.05)
            r = httpx.post(srv.url + "/v1/sentiment", json={"image": f"{slow.url}/x.jpg"},
                           timeout=30)
            _is_error(r, 503, "Overloaded")
            assert int(r.headers["retry-after"]) >= 1
            slow.release.set()
            first.join(60)


# ------------------------------------------------------------------ work before limits


def test_chunked_and_declared_bodies_over_the_cap_are_413(live):
    def chunks():
        for _ in range(40):
            yield b" " * 100_000  # 4 MB against a 2 MB cap, no Content-Length

    r = httpx.post(live.url + "/v1/sentiment", content=chunks(), timeout=60,
                   headers={"content-type": "application/json"})
    err = _is_error(r, 413, "PayloadTooLarge")
    assert "2000000" in err["message"]
    r = _raw(live.url, "/v1/sentiment", b'{"text": "' + b"a" * 2_100_000 + b'"}')
    _is_error(r, 413, "PayloadTooLarge")


def test_300k_items_are_refused_before_parsing(live):
    body = b'{"items": [' + b",".join([b"{}"] * 300_000) + b"]}"
    assert len(body) < 2_000_000
    r = _raw(live.url, "/v1/sentiment/batch", body)
    err = _is_error(r, 413, "PayloadTooLarge")
    # the structure budget's words: pydantic never saw the body
    assert "about 300000 items" in err["message"] and "limit is 64" in err["message"]
    flat = b'{"items": [' + b",".join([b"1"] * 300_000) + b"]}"
    _is_error(_raw(live.url, "/v1/sentiment/batch", flat), 413)
    nested = b"[" * 100_000 + b"]" * 100_000
    _is_error(_raw(live.url, "/v1/sentiment", nested), 422, "InvalidInput")


def test_repeated_term_queries():
    with pytest.raises(InvalidInput, match="repeats 'battery' 3333 times"):
        repeated_terms("battery " * 3333, max_terms=10_000, max_repeats=8)
    with pytest.raises(InvalidInput, match="words; the limit is 512"):
        repeated_terms(" ".join(f"w{i}" for i in range(600)), max_terms=512, max_repeats=8)
    repeated_terms("the battery died, the battery!", max_terms=512, max_repeats=8)
    assert collapse_terms("Great phone. Great battery.", max_terms=512, max_repeats=8) == \
        "Great phone. Great battery."
    collapsed = collapse_terms("ok " * 3000 + "broken", max_terms=512, max_repeats=8)
    assert collapsed == " ".join(["ok"] * 8 + ["broken"])


def test_repeated_term_search_is_refused_at_the_edge(torch_backend):
    class Counting:
        queries: list = []

        async def search(self, query=None, image=None, **kw):
            self.queries.append(query)
            return []

    search = Counting()
    app = build_api(LocalClassifierService(torch_backend), settings(serve={"retrieval": True}),
                    search)
    with LiveServer(app) as srv:
        r = httpx.post(srv.url + "/v1/search", json={"query": "battery " * 3333}, timeout=30)
        _is_error(r, 422, "InvalidInput")
        assert search.queries == []  # the retriever never saw it
        r = httpx.post(srv.url + "/v1/sentiment", json={"text": "battery " * 1000}, timeout=60)
        assert r.status_code == 200
        assert search.queries == [" ".join(["battery"] * ServeSettings().max_term_repeats)]


# --------------------------------------------------------------- deadlines, backpressure


def test_a_request_over_its_deadline_is_a_504(torch_backend):
    slow = Recording(torch_backend, delay_s=5)
    with LiveServer(build_api(slow, settings(serve={"deadline_s": 0.5}))) as srv:
        r = httpx.post(srv.url + "/v1/sentiment", json={"text": "fine"}, timeout=30)
        err = _is_error(r, 504, "DeadlineExceeded")
        assert "0.5s" in err["message"]


def test_a_slow_similar_lookup_is_skipped(torch_backend):
    class Slow:
        async def search(self, *a, **kw):
            await asyncio.sleep(10)
            return []

    app = build_api(LocalClassifierService(torch_backend),
                    settings(serve={"retrieval": True, "similar_deadline_s": 0.2}), Slow())
    with LiveServer(app) as srv:
        r = httpx.post(srv.url + "/v1/sentiment", json={"text": "fine"}, timeout=30)
        assert r.status_code == 200 and r.json()["similar"] == []
        m = httpx.get(srv.url + "/metrics").text
        assert 'shopsense_similar_skipped_total{reason="deadline"} 1.0' in m


def test_overload_is_a_fast_503_with_retry_after(torch_backend):
    slow = Recording(torch_backend, delay_s=2)
    app = build_api(slow, settings(serve={"max_in_flight": 2, "retry_after_s": 3}))
    with LiveServer(app) as srv:
        async def burst():
            async with httpx.AsyncClient(timeout=30) as c:
                return await asyncio.gather(*(c.post(srv.url + "/v1/sentiment",
                                                     json={"text": f"ok {i}"})
                                              for i in range(8)))

        rs = asyncio.run(burst())
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) == 2 and codes.count(503) == 6, codes
        rejected = [r for r in rs if r.status_code == 503]
        assert all(r.headers["retry-after"] == "3" for r in rejected)
        assert all(r.json()["error"] == "Overloaded" for r in rejected)
        m = httpx.get(srv.url + "/metrics").text
        assert 'shopsense_rejected_requests_total{key="anonymous",reason="overloaded"} 6.0' in m


# ---------------------------------------------------------------------------- errors


class _Exploding:
    async def classify(self, items):
        raise RuntimeError("password=hunter2 at /srv/internal")

    async def describe(self):
        return {"model": {"name": "m", "version": "1", "uri": "x"}, "backend": "torch"}


def test_an_unexpected_error_is_a_json_500_with_a_request_id_in_the_logs(caplog):
    with LiveServer(build_api(_Exploding(), settings())) as srv, \
            caplog.at_level(logging.INFO, logger="shopsense.api"):
        r = httpx.post(srv.url + "/v1/sentiment", json={"text": "fine"}, timeout=30,
                       headers={"x-request-id": "trace-42"})
        err = _is_error(r, 500, "InternalError")
        assert err["request_id"] == "trace-42" and "hunter2" not in r.text
        logged = [rec for rec in caplog.records if "trace-42" in rec.getMessage()]
        assert logged and "hunter2" in (logged[0].getMessage() + str(logged[0].exc_info))
        # an id that is not short and plain is replaced
        r = httpx.post(srv.url + "/v1/sentiment", json={"text": ""}, timeout=30,
                       headers={"x-request-id": "x" * 200})
        assert len(_is_error(r, 422)["request_id"]) == 32
        for path, status in (("/nope", 404), ("/v1/sentiment", 405)):
            r = httpx.get(srv.url + path, timeout=10)
            _is_error(r, status)


# ------------------------------------------------------------------- keys, rate limits


def _keys_file(tmp_path, **keys) -> str:
    path = tmp_path / "keys"
    path.write_text("# name:sha256\n" + "".join(
        f"{name}:{hashlib.sha256(key.encode()).hexdigest()}\n" for name, key in keys.items()))
    return str(path)


def test_api_keys(torch_backend, tmp_path, caplog):
    keys = _keys_file(tmp_path, ci="s3cret-ci-key", web="s3cret-web-key")
    app = build_api(LocalClassifierService(torch_backend),
                    settings(auth={"keys_file": keys, "rate_per_s": 0}))
    with LiveServer(app) as srv, caplog.at_level(logging.INFO, logger="shopsense.api"):
        url = srv.url + "/v1/sentiment"
        _is_error(httpx.post(url, json={"text": "fine"}, timeout=30), 401, "Unauthorized")
        _is_error(httpx.post(url, json={"text": "fine"}, timeout=30,
                             headers={"authorization": "Bearer wrong"}), 401, "Unauthorized")
        _is_error(httpx.post(url, json={"text": "fine"}, timeout=30,
                             headers={"authorization": "Basic s3cret-ci-key"}), 401)
        ok = httpx.post(url, json={"text": "fine"}, timeout=30,
                        headers={"authorization": "Bearer s3cret-ci-key"})
        assert ok.status_code == 200, ok.text
        bad = httpx.post(url, json={"text": ""}, timeout=30,
                         headers={"authorization": "Bearer s3cret-web-key"})
        _is_error(bad, 422)
        r = httpx.get(srv.url + "/v1/predictions/recent", timeout=30)
        _is_error(r, 401)
        for open_path in ("/healthz", "/readyz", "/metrics", "/docs"):
            assert httpx.get(srv.url + open_path, timeout=30).status_code == 200, open_path
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'shopsense_key_requests_total{code="200",key="ci"} 1.0' in metrics
        assert 'shopsense_rejected_requests_total{key="web",reason="invalid_input"} 1.0' in metrics
        assert 'shopsense_rejected_requests_total{key="unknown",reason="unauthorized"} 4.0' \
            in metrics
        logs = "\n".join(r.getMessage() for r in caplog.records)
        assert "key=web" in logs and "s3cret" not in logs + metrics


def test_a_bad_keys_file_stops_the_start(torch_backend, tmp_path):
    path = tmp_path / "keys"
    path.write_text("ci:not-a-digest\n")
    with pytest.raises(DataError, match="line 1"):
        build_api(LocalClassifierService(torch_backend), settings(auth={"keys_file": path}))
    with pytest.raises(DataError, match="cannot read"):
        build_api(LocalClassifierService(torch_backend),
                  settings(auth={"keys_file": tmp_path / "missing"}))


def test_rate_limits_per_key(torch_backend, tmp_path):
    keys = _keys_file(tmp_path, fast="fast-key", slow="slow-key")
    app = build_api(LocalClassifierService(torch_backend), settings(
        auth={"keys_file": keys, "rate_per_s": 100, "burst": 3, "key_rates": {"slow": 0.2}}))
    with LiveServer(app) as srv:
        def send(key):
            return httpx.get(srv.url + "/v1/predictions/recent", timeout=30,
                             headers={"authorization": f"Bearer {key}"})

        slow = [send("slow-key") for _ in range(5)]
        assert [r.status_code for r in slow] == [200, 200, 200, 429, 429]
        err = _is_error(slow[3], 429, "RateLimited")
        assert "'slow'" in err["message"] and int(slow[3].headers["retry-after"]) >= 1
        assert all(send("fast-key").status_code == 200 for _ in range(3))  # its own bucket
        m = httpx.get(srv.url + "/metrics").text
        assert 'shopsense_rejected_requests_total{key="slow",reason="rate_limited"} 2.0' in m


def test_keys_file_rotation_is_picked_up(torch_backend, tmp_path):
    import os
    import time

    keys = _keys_file(tmp_path, old="old-key")
    app = build_api(LocalClassifierService(torch_backend),
                    settings(auth={"keys_file": keys, "reload_s": 0}))
    with LiveServer(app) as srv:
        def send(key):
            return httpx.get(srv.url + "/v1/predictions/recent", timeout=30,
                             headers={"authorization": f"Bearer {key}"}).status_code

        assert send("old-key") == 200 and send("new-key") == 401
        _keys_file(tmp_path, new="new-key")
        os.utime(keys, (time.time() + 5, time.time() + 5))
        assert send("new-key") == 200 and send("old-key") == 401
        (tmp_path / "keys").write_text("garbage\n")
        os.utime(keys, (time.time() + 10, time.time() + 10))
        assert send("new-key") == 200  # a broken file keeps the previous keys
