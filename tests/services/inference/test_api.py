"""The HTTP API in-process (FastAPI + the real torch backend), every error path included."""

import base64
import http.server
import io
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.inference.api import LocalClassifierService, build_api
from shopsense.settings import ImageSettings, ServeSettings, Settings

from .conftest import png_b64


def make_client(backend, **serve):
    settings = Settings(serve=ServeSettings(max_batch_items=4, max_text_chars=500,
                                            max_body_bytes=200_000, **serve),
                        images=ImageSettings(max_bytes=100_000, allow_hosts=[]))
    return TestClient(build_api(LocalClassifierService(backend), settings))


@pytest.fixture(scope="module")
def client(torch_backend):
    return make_client(torch_backend)


def test_text_only(client):
    r = client.post("/v1/sentiment", json={"text": "Love it, works perfectly."})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["label"] in ("negative", "neutral", "positive")
    assert abs(sum(p["scores"].values()) - 1) < 1e-3
    assert p["modalities"] == ["text"] and p["latency_ms"] > 0
    assert p["model"]["version"] == "local" and p["model"]["name"]


def test_text_and_photo_and_photo_only(client):
    r = client.post("/v1/sentiment", json={"text": "arrived like this", "image": png_b64()})
    assert r.status_code == 200 and r.json()["modalities"] == ["text", "image"]
    r = client.post("/v1/sentiment", json={"image": "data:image/png;base64," + png_b64()})
    assert r.status_code == 200 and r.json()["modalities"] == ["image"]
    r = client.post("/v1/sentiment", json={"text": "  ", "image": png_b64()})
    assert r.status_code == 200 and r.json()["modalities"] == ["image"]


def test_batch_answers_in_order(client):
    items = [{"text": "awful, broke at once"}, {"image": png_b64((20, 200, 20))},
             {"text": "great value", "image": png_b64()}]
    r = client.post("/v1/sentiment/batch", json={"items": items})
    assert r.status_code == 200
    got = r.json()["items"]
    assert [g["modalities"] for g in got] == [["text"], ["image"], ["text", "image"]]
    for item, g in zip(items, got):
        single = client.post("/v1/sentiment", json=item).json()
        assert single["label"] == g["label"]
        for k in single["scores"]:
            assert abs(single["scores"][k] - g["scores"][k]) < 1e-3


def _not_png() -> str:
    return base64.b64encode(b"GIF89a this is not really an image" * 3).decode()


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"text": ""}, 422, "text is empty"),
        ({"text": "   "}, 422, "text is empty"),
        ({"text": "x" * 501}, 422, "limit is 500"),
        ({}, 422, "give text, an image, or both"),
        ({"text": None, "image": None}, 422, "give text, an image, or both"),
        ({"image": "%%%not-base64%%%"}, 422, "base64"),
        ({"image": _not_png()}, 422, ""),
        ({"text": "ok", "colour": "red"}, 422, "colour"),
        ({"text": 5}, 422, "text"),
        ({"image": "http://127.0.0.1:1/x.png"}, 400, ""),
        ({"image": "http://169.254.169.254/latest/meta-data"}, 400, ""),
        ({"image": "ftp://example.com/x.png"}, 400, ""),
        ({"image": "https://shopsense-no-such-host.invalid/x.png"}, 400, ""),
    ],
)
def test_bad_input_gets_a_4xx_json_message(client, body, status, words):
    r = client.post("/v1/sentiment", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "message", "request_id"} and err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert words.lower() in err["message"].lower()


def test_oversized_inputs_get_413(client):
    big = base64.b64encode(b"\x89PNG" + b"0" * 140_000).decode()
    r = client.post("/v1/sentiment", json={"image": big})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    r = client.post("/v1/sentiment", content=b'{"text": "' + b"a" * 300_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/sentiment/batch", json={"items": [{"text": "ok"}] * 5})
    assert r.status_code == 413 and "limit is 4" in r.json()["message"]
    r = client.post("/v1/sentiment/batch", json={"items": []})
    assert r.status_code == 422


def test_malformed_json_is_422(client):
    r = client.post("/v1/sentiment", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidInput"


def test_health_ready_metrics_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"]["version"] == "local"
    client.post("/v1/sentiment", json={"text": "fine"})
    client.post("/v1/sentiment", json={"text": ""})
    m = client.get("/metrics").text
    for name in ("shopsense_requests_total", "shopsense_request_duration_seconds_bucket",
                 "shopsense_predictions_total", "shopsense_model_info",
                 "shopsense_classifier_batch_size_bucket", "shopsense_request_errors_total"):
        assert name in m
    assert 'code="422"' in m
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/sentiment", "/v1/sentiment/batch", "/healthz", "/readyz"} <= set(paths)


class _NotReady:
    name = "torch"

    @property
    def model(self):
        raise RuntimeError("still loading")


def test_readyz_is_503_when_the_classifier_is_not_ready():
    c = TestClient(build_api(LocalClassifierService(_NotReady()), Settings()))
    r = c.get("/readyz")
    assert r.status_code == 503 and "not ready" in r.json()["message"]


@pytest.fixture()
def image_server():
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 10, 200)).save(buf, format="JPEG")
    payload = buf.getvalue()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "image/jpeg")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/photo.jpg"
    srv.shutdown()


def test_image_url_from_an_allow_listed_host(torch_backend, image_server):
    settings = Settings(images=ImageSettings(allow_hosts=["127.0.0.1"]))
    c = TestClient(build_api(LocalClassifierService(torch_backend), settings))
    r = c.post("/v1/sentiment", json={"text": "colour is off", "image": image_server})
    assert r.status_code == 200, r.text
    assert r.json()["modalities"] == ["text", "image"]
    refused = make_client(torch_backend).post("/v1/sentiment", json={"image": image_server})
    assert refused.status_code == 400


def test_vllm_backend_failures_map_to_502_and_503():
    """The API over the real vLLM backend code, with the model server's answers injected."""
    import httpx

    from services.inference.backends.vllm import VLLMBackend
    from shopsense.settings import VLLMSettings

    def garbage(request):
        return httpx.Response(200, json={"choices": [{"message": {"content": "I think it's ok"}}]})

    def down(request):
        return httpx.Response(503, json={"error": {"message": "engine loading"}})

    for handler, status in ((garbage, 502), (down, 503)):
        backend = VLLMBackend(VLLMSettings(base_url="http://vllm.invalid:8000"),
                              transport=httpx.MockTransport(handler))
        c = TestClient(build_api(LocalClassifierService(backend), Settings()))
        r = c.post("/v1/sentiment", json={"text": "fine"})
        assert r.status_code == status, r.text
        assert r.json()["message"]
