"""The web page (services/inference/web) and what it reads: the ``category``/``product`` fields of
a request, the ring buffer of recent predictions, ``GET /v1/predictions/recent``, the bounded
``category`` label of ``shopsense_predictions_total``, and the assets shipping in the wheel.

The browser tests drive real Chromium (Debian's /usr/bin/chromium, through Playwright) against
the real app: ``build_api`` with the real torch backend and a real HybridRetriever (Qdrant local
mode + tantivy over real reviews), served by uvicorn on 127.0.0.1 in a thread. Screenshots are
saved under ``artifacts/screenshots/`` (or ``$SHOPSENSE_TEST_ARTIFACTS``), ignored by git.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.inference.api import LocalClassifierService, build_api
from services.inference.metrics import (
    CategoryLabels,
    RecentPredictions,
    normalize_category,
)
from services.inference.web import STATIC_DIR
from shopsense.settings import ImageSettings, ServeSettings, Settings

from .conftest import png_b64

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]
LABELS = ("negative", "neutral", "positive")


def _settings() -> Settings:
    return Settings(serve=ServeSettings(max_text_chars=5000, max_body_bytes=4_000_000),
                    images=ImageSettings(max_bytes=2_000_000, allow_hosts=[]))


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ============================================================================ without a browser

def test_ring_buffer_is_bounded_and_buckets_by_category():
    clock = FakeClock(1_700_000_000.0)
    rp = RecentPredictions(capacity=5, clock=clock)
    for k in range(8):  # 8 adds into 5 slots: the 3 oldest fall out
        clock.now += 1
        rp.add(category="Books", product=f"p{k}", label="positive", modalities=["text"],
               model_version="3")
    assert len(rp) == 5
    clock.now += 60
    rp.add(category=" Home  Kitchen ", product=None, label="negative",
           modalities=("text", "image"), model_version="3")
    rp.add(category=None, product=None, label="neutral", modalities=["image"], model_version="3")
    s = rp.summary(minutes=10, bucket_seconds=60)
    assert s["buffered"] == 5 and s["capacity"] == 5 and s["count"] == 5
    assert s["categories"] == ["books", "home-kitchen", "unknown"]
    assert len(s["bucket_starts"]) == 10 and s["end"] - s["start"] == 600
    assert s["end"] > clock.now >= s["bucket_starts"][-1]
    series = {x["category"]: x["counts"] for x in s["series"]}
    assert sum(series["books"]) == 3 and series["books"][-1] == 0  # a minute before the others
    assert series["home-kitchen"][-1] == 1 and series["unknown"][-1] == 1
    totals = {t["category"]: t for t in s["totals"]}
    assert totals["books"] == {"category": "books", "negative": 0, "neutral": 0, "positive": 3,
                               "total": 3}
    assert totals["home-kitchen"]["negative"] == 1
    assert [x["category"] for x in s["latest"]][:2] == [None, "home-kitchen"]  # newest first
    assert s["latest"][1]["modalities"] == ["text", "image"] and s["latest"][1]["model_version"] == "3"
    # a window that ends before the books: only the last two
    assert rp.summary(minutes=1, bucket_seconds=60)["count"] == 2
    assert rp.summary(minutes=10, bucket_seconds=60, category="books")["count"] == 3
    assert rp.summary(minutes=10, bucket_seconds=60, category="unknown")["count"] == 1


def test_busiest_categories_are_kept_and_the_rest_is_other():
    rp = RecentPredictions(clock=FakeClock())
    for k in range(12):
        for _ in range(k + 1):
            rp.add(category=f"c{k:02d}", product=None, label="positive", modalities=["text"],
                   model_version=None)
    s = rp.summary(minutes=5, bucket_seconds=60, top=8)
    assert s["categories"] == sorted([f"c{k:02d}" for k in range(4, 12)] + ["other"])
    other = next(t for t in s["totals"] if t["category"] == "other")
    assert other["total"] == 1 + 2 + 3 + 4
    with pytest.raises(ValueError):
        RecentPredictions(capacity=0)


def test_category_metric_label_values_are_bounded():
    cl = CategoryLabels(max_categories=3)
    assert cl(None) == "unknown" and cl("   ") == "unknown"
    assert cl("Electronics") == "electronics" and cl(" electronics ") == "electronics"
    assert cl("Home & Kitchen") == "home-&-kitchen"
    assert cl("x" * 33) == "other"  # over-long
    assert cl("-leading-dash") == "other" and cl("a/b") == "other"
    assert cl("books") == "books"
    assert cl("garden") == "other"  # past the cap of 3
    assert cl("electronics") == "electronics"  # admitted ones stay
    assert cl("unknown") == "unknown" and cl("OTHER") == "other"
    assert normalize_category("  Cell   Phones ") == "cell-phones"


@pytest.fixture(scope="module")
def client(torch_backend):
    clock = FakeClock(time.time())
    c = TestClient(build_api(LocalClassifierService(torch_backend), _settings(),
                             recent=RecentPredictions(capacity=100, clock=clock)))
    c.clock = clock
    return c


def test_the_page_and_its_assets_are_served_with_a_strict_csp(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert '<label for="text">Review text</label>' in r.text
    assert client.get("/ui/try").text == r.text
    recent = client.get("/ui/recent")
    assert recent.status_code == 200 and "Recent predictions by product category" in recent.text
    assert client.get("/ui", follow_redirects=False).status_code == 307
    for asset, kind in (("app.css", "text/css"), ("try.js", "javascript"),
                        ("recent.js", "javascript")):
        a = client.get(f"/ui/static/{asset}")
        assert a.status_code == 200 and kind in a.headers["content-type"], asset
    missing = client.get("/ui/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert client.get("/ui/static/../api.py").status_code == 404
    assert client.get("/ui/static/%2e%2e%2fapi.py").status_code == 404
    # the API is unchanged beside the page
    assert "/v1/predictions/recent" in client.get("/openapi.json").json()["paths"]
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_no_asset_loads_anything_from_the_internet():
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        urls = set(re.findall(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`)]*""", text))
        urls -= {"http://www.w3.org/2000/svg"}  # the SVG namespace name, never fetched
        assert not urls, f"{f.name} refers to {urls}"
        assert not re.search(r"<script(?![^>]*\bsrc=\"/ui/static/)", text), f.name
        assert "@import" not in text and "url(" not in text, f.name


def test_category_and_product_are_validated(client):
    ok = client.post("/v1/sentiment", json={"text": "fine", "category": "Books",
                                             "product": "B000123"})
    assert ok.status_code == 200, ok.text
    for body, needle in (
        ({"text": "fine", "category": ""}, "category"),
        ({"text": "fine", "category": "x" * 65}, "category"),
        ({"text": "fine", "category": "bad\nline"}, "category"),
        ({"text": "fine", "category": 5}, "category"),
        ({"text": "fine", "product": "p" * 129}, "product"),
        ({"text": "fine", "categories": "books"}, "categories"),  # extra=forbid stays
    ):
        r = client.post("/v1/sentiment", json=body)
        assert r.status_code == 422, (body, r.text)
        err = r.json()
        assert set(err) == {"error", "message", "request_id"} and needle in err["message"]
    r = client.post("/v1/sentiment/batch", json={"items": [{"text": "a", "category": "x" * 65}]})
    assert r.status_code == 422 and "category" in r.json()["message"]


def test_recent_predictions_endpoint_and_metrics_by_category(client):
    client.clock.now += 3600  # past what earlier tests recorded
    for body in ({"text": "Love it", "category": "Electronics", "product": "B01"},
                 {"text": "Broke at once", "category": "electronics"},
                 {"image": png_b64(), "category": "Toys"},
                 {"text": "ok"}):
        assert client.post("/v1/sentiment", json=body).status_code == 200
    batch = client.post("/v1/sentiment/batch", json={"items": [
        {"text": "great", "category": "books"}, {"text": "bad", "category": "y" * 40}]})
    assert batch.status_code == 200
    r = client.get("/v1/predictions/recent", params={"minutes": 5})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["count"] == 6 and s["bucket_seconds"] == 5 and len(s["bucket_starts"]) == 60
    totals = {t["category"]: t["total"] for t in s["totals"]}
    assert totals == {"electronics": 2, "toys": 1, "unknown": 1, "books": 1, "y" * 40: 1}
    assert s["latest"][0]["category"] == "y" * 40 and s["latest"][-1]["product"] == "B01"
    assert s["latest"][-1]["model_version"] == "local"
    assert {tuple(x["modalities"]) for x in s["latest"]} == {("text",), ("image",)}
    one = client.get("/v1/predictions/recent",
                     params={"minutes": 5, "category": "Electronics", "bucket_seconds": 60})
    assert one.json()["count"] == 2 and one.json()["categories"] == ["electronics"]

    metrics = client.get("/metrics").text
    line = re.compile(r'shopsense_predictions_total\{category="([^"]*)",label="\w+",'
                      r'modalities="[\w+]+"\}')
    cats = set(line.findall(metrics))
    assert {"electronics", "toys", "unknown", "books", "other"} <= cats  # 40 chars -> other
    assert "y" * 40 not in cats


@pytest.mark.parametrize("params,needle", [
    ({"minutes": 0}, "minutes"),
    ({"minutes": 1441}, "minutes"),
    ({"minutes": "an hour"}, "minutes"),
    ({"bucket_seconds": 1}, "bucket_seconds"),
    ({"bucket_seconds": 3601}, "bucket_seconds"),
    ({"minutes": 1440, "bucket_seconds": 5}, "over 720 buckets"),
    ({"category": ""}, "category"),
    ({"category": "c" * 65}, "category"),
])
def test_recent_predictions_bad_params_are_422_with_a_message(client, params, needle):
    r = client.get("/v1/predictions/recent", params=params)
    assert r.status_code == 422, r.text
    err = r.json()
    assert set(err) == {"error", "message", "request_id"} and needle in err["message"]


def test_request_metrics_label_routes_not_paths(client):
    client.get("/")
    client.get("/v1/predictions/recent")
    client.get("/ui/static/app.css")
    client.get("/ui/static/try.js")
    client.get("/no/such/page/12345")
    m = client.get("/metrics").text
    assert 'shopsense_requests_total{code="200",route="/ui/static/{name}"}' in m
    assert 'route="/ui/static/app.css"' not in m
    assert 'shopsense_requests_total{code="404",route="unmatched"}' in m
    assert "/no/such/page" not in m  # the raw path never becomes a label value
    nope = client.get("/no/such/page/12345")
    assert nope.status_code == 404 and nope.json()["error"] == "NotFound"  # the API's shape
    wrong = client.get("/v1/sentiment")
    assert wrong.status_code == 405 and wrong.json()["error"] == "MethodNotAllowed"
    assert 'shopsense_requests_total{code="200",route="/"}' in m
    assert 'shopsense_request_duration_seconds_count{route="/v1/predictions/recent"}' in m


def test_the_wheel_ships_the_page(tmp_path):
    """Build a wheel from a copy of the project (isolated from the work tree) and look in it."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("shopsense", "services", "operators", "pipelines"):
        if (ROOT / pkg).is_dir():
            shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    out = tmp_path / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = out.glob("shopsense-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in STATIC_DIR.iterdir():
        assert f"services/inference/web/static/{f.name}" in names
    assert "services/inference/web/router.py" in names
    assert "pipelines/metrics.py" in names and "shopsense/dashboards.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dashboards = shopsense.dashboards:register" in \
        zipfile.ZipFile(wheel).read(entry).decode()


# ============================================================================ in real Chromium

@pytest.fixture(scope="module")
def artifacts() -> Path:
    d = Path(os.environ.get("SHOPSENSE_TEST_ARTIFACTS") or ROOT / "artifacts") / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def retriever(data_dir, tmp_path_factory):
    from services.retrieval.retriever import HybridRetriever
    from services.retrieval.settings import RetrievalSettings
    from shopsense.data.loaders import load_set
    from shopsense.embed import text_embedder

    el = load_set("blitzer-electronics", data_dir)
    reviews = el[:12] + el[-12:]
    r = HybridRetriever.open(
        RetrievalSettings(qdrant_url=None, opensearch_url=None, text_max_length=128),
        index_dir=tmp_path_factory.mktemp("web-index"), text_embedder=text_embedder(128, 32))
    r.index(reviews)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(torch_backend, retriever):
    """The real app on 127.0.0.1:<free port>, served by uvicorn in a thread."""
    import uvicorn

    from services.retrieval.deployment import LocalSearchService

    app = build_api(LocalClassifierService(torch_backend), _settings(),
                    LocalSearchService(retriever))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                        access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: apt-get install -y chromium "
                    "(the browser tests use Debian's Chromium, not a Playwright download)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="pip install playwright (the test extra)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    """A fresh page that records every request it makes and every console error."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    ctx.set_default_timeout(30_000)
    pg = ctx.new_page()
    pg.requests = []
    pg.console_errors = []
    pg.on("request", lambda req: pg.requests.append(req.url))
    pg.on("console", lambda msg: msg.type == "error" and pg.console_errors.append(msg.text))
    pg.on("pageerror", lambda exc: pg.console_errors.append(str(exc)))
    yield pg
    ctx.close()
    # Nothing but this server, and no script error or CSP violation on any page.
    assert all(u.startswith((server + "/", "data:", "blob:"))
               for u in pg.requests), pg.requests
    unexpected = [e for e in pg.console_errors
                  if not re.search(r"status of 4\d\d", e)]  # the API's 4xx answers, on purpose
    assert not unexpected, unexpected


def _photo(tmp_path: Path, name="cracked-phone.jpg", damage="cracked") -> Path:
    from shopsense.images.render import PhotoSpec, render_photo

    path = tmp_path / name
    render_photo(PhotoSpec(category="phone", damage=damage, packaging="none"),
                 seed=7).save(path, format="JPEG", quality=90)
    return path


def _pct(text: str) -> float:
    return float(text.replace("%", "").strip())


def test_try_a_review_with_text_and_a_photo(page, server, tmp_path, artifacts):
    from playwright.sync_api import expect

    photo = _photo(tmp_path)
    text = "The screen arrived cracked and support never answered."
    page.goto(server + "/")
    expect(page).to_have_title(re.compile("Try a review"))
    page.get_by_label("Review text").fill(text)
    page.get_by_label("Product category").fill("electronics")
    page.get_by_label(re.compile("Product photo")).set_input_files(str(photo))
    expect(page.locator("#preview")).to_be_visible()
    expect(page.get_by_alt_text("Preview of cracked-phone.jpg")).to_be_visible()
    page.get_by_label("Review text").press("Enter")  # Enter submits
    expect(page.get_by_role("alert")).to_be_hidden()

    result = page.locator("#result")
    expect(result).to_be_visible()
    label = page.locator("#result-label").inner_text()
    assert label in LABELS
    expect(page.locator("#result-modalities")).to_have_text(
        "Read from the text and the photo together.")
    rows = page.locator("#scores tr")
    expect(rows).to_have_count(3)
    shown = {rows.nth(i).locator("th").inner_text(): _pct(rows.nth(i).locator("td.num").inner_text())
             for i in range(3)}
    assert set(shown) == set(LABELS) and abs(sum(shown.values()) - 100) < 0.5
    assert page.locator("#scores tr.top th").inner_text() == label
    expect(page.locator("#result-model")).to_contain_text("version local")

    similar = page.locator("#similar li")
    expect(similar.first).to_be_visible()
    assert similar.count() == 3
    for i in range(similar.count()):
        item = similar.nth(i)
        assert item.locator(".label").inner_text() in LABELS + ("unlabelled",)
        assert item.locator(".similar-text").inner_text().strip()
        assert re.fullmatch(r"similarity \d\.\d{3}", item.locator(".meta").inner_text())

    # The page shows what the API answers for the same review and photo.
    api = httpx.post(server + "/v1/sentiment", timeout=60, json={
        "text": text, "image": base64.b64encode(photo.read_bytes()).decode(),
        "category": "electronics"}).json()
    assert api["label"] == label
    for name in LABELS:
        assert abs(api["scores"][name] * 100 - shown[name]) < 0.06
    def words(t: str) -> str:
        return " ".join(t.split())[:60]

    assert [words(s["text"]) for s in api["similar"]] == \
        [words(similar.nth(i).locator(".similar-text").text_content()) for i in range(3)]
    page.screenshot(path=str(artifacts / "web-try-answer.png"), full_page=True)


def test_errors_are_shown_in_words(page, server, tmp_path, artifacts):
    from playwright.sync_api import expect

    page.goto(server + "/")
    alert = page.get_by_role("alert")
    text = page.get_by_label("Review text")
    text.press("Enter")  # nothing given: the API's 422, in words
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Give text, an image, or both (InvalidInput, HTTP 422)")

    text.fill("x" * 5001)
    text.press("Enter")
    expect(alert).to_contain_text("the limit is 5000")
    expect(alert).to_contain_text("HTTP 422")

    # A file that claims to be a PNG but is not an image: the API's own message.
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"this is not really a picture" * 20)
    api = httpx.post(server + "/v1/sentiment", timeout=30,
                     json={"image": base64.b64encode(fake.read_bytes()).decode()})
    assert api.status_code == 422
    text.fill("")
    page.get_by_label(re.compile("Product photo")).set_input_files(str(fake))
    page.get_by_role("button", name="Get the sentiment").click()
    expect(alert).to_contain_text(api.json()["message"][1:30])
    expect(page.locator("#preview-name")).to_contain_text("no preview")
    expect(page.locator("#result")).to_be_hidden()
    page.screenshot(path=str(artifacts / "web-error.png"), full_page=True)

    # Not an image type at all: refused before sending, in words.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    sent = len([u for u in page.requests if u.endswith("/v1/sentiment")])
    page.get_by_label(re.compile("Product photo")).set_input_files(str(notes))
    expect(alert).to_contain_text('"notes.txt" is not a photo this service reads')
    assert len([u for u in page.requests if u.endswith("/v1/sentiment")]) == sent


def _focused(page) -> str:
    return page.evaluate("() => { const e = document.activeElement;"
                         " return e.id || (e.tagName + ':' + e.textContent.trim()); }")


def test_the_page_works_with_the_keyboard(page, server, tmp_path, artifacts):
    from playwright.sync_api import expect

    photo = _photo(tmp_path, "pristine.jpg", damage="none")
    page.goto(server + "/")
    # Every control has a label.
    for label, id_ in (("Review text", "text"), ("Product category", "category"),
                       (re.compile("Product photo"), "photo")):
        assert page.get_by_label(label).get_attribute("id") == id_
    # Focus order: skip link, the three views, then the form top to bottom.
    order = []
    for _ in range(8):
        page.keyboard.press("Tab")
        order.append(_focused(page))
    assert order == ["A:Skip to the form", "A:Try a review", "A:Recent predictions",
                     "A:API docs", "text", "category", "photo", "submit"]
    # Focus is visible on the keyboard-focused control.
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"

    # Shift+Enter is a new line, not a submit.
    page.get_by_label("Review text").focus()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.get_by_label("Review text").input_value() == "first line\nsecond line"
    assert not any(u.endswith("/v1/sentiment") for u in page.requests)
    page.get_by_label("Review text").fill("")

    # The drop zone's file input opens the file chooser from the keyboard (Space).
    page.get_by_label(re.compile("Product photo")).focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(str(photo))
    expect(page.locator("#preview")).to_be_visible()
    page.keyboard.press("Tab")
    assert _focused(page) == "remove-photo"
    page.keyboard.press("Tab")
    assert _focused(page) == "submit"
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#result-modalities")).to_have_text("Read from the photo alone.")
    page.screenshot(path=str(artifacts / "web-photo-only.png"), full_page=True)

    # Remove the photo from the keyboard: focus goes back to the file input.
    page.locator("#remove-photo").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#preview")).to_be_hidden()
    assert _focused(page) == "photo"

    # Submitting nothing now: the error replaces the earlier answer.
    page.get_by_role("button", name="Get the sentiment").press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("Give text, an image, or both")
    expect(page.locator("#result")).to_be_hidden()


def test_a_photo_dropped_on_the_drop_zone(page, server, tmp_path):
    from playwright.sync_api import expect

    photo = _photo(tmp_path, "dropped.jpg")
    page.goto(server + "/")
    dt = page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
        return dt;
    }""", base64.b64encode(photo.read_bytes()).decode())
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": dt})
    expect(page.locator("#dropzone")).to_have_class(re.compile("dragging"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dt})
    expect(page.get_by_alt_text("Preview of dropped.jpg")).to_be_visible()
    expect(page.locator("#dropzone")).not_to_have_class(re.compile("dragging"))
    page.get_by_label("Product category").fill("phones")
    page.get_by_label("Product category").press("Enter")  # Enter in a field submits the form
    expect(page.locator("#result-modalities")).to_have_text("Read from the photo alone.")


def test_the_recent_predictions_chart(page, server, artifacts):
    from playwright.sync_api import expect

    with httpx.Client(base_url=server, timeout=60) as c:
        for body in ({"text": "great value", "category": "books", "similar_k": 0},
                     {"text": "pages fell out", "category": "books", "similar_k": 0},
                     {"text": "works", "category": "kitchen", "similar_k": 0},
                     {"text": "meh", "similar_k": 0}):
            assert c.post("/v1/sentiment", json=body).status_code == 200
        want = c.get("/v1/predictions/recent", params={"minutes": 60}).json()
    page.goto(server + "/")
    page.get_by_role("link", name="Recent predictions").first.press("Enter")
    expect(page).to_have_url(server + "/ui/recent")
    chart = page.get_by_role("img", name="Predictions per category over time")
    expect(chart).to_be_visible()
    series = page.locator("svg.chart g.series")
    expect(series).to_have_count(len(want["categories"]))
    for cat in ("books", "kitchen", "unknown"):
        assert cat in want["categories"]
        assert page.locator(f'svg.chart g.series[data-category="{cat}"] rect').count() >= 1
        expect(page.locator("#legend")).to_contain_text(cat)
    for t in want["totals"]:
        # the chart's segments add up to the category's total
        titles = page.locator(f'svg.chart g.series[data-category="{t["category"]}"] rect title')
        counts = [int(re.search(r": (\d+) from", titles.nth(i).text_content())[1])
                  for i in range(titles.count())]
        assert sum(counts) == t["total"], (t, counts)
        row = page.locator(f'#totals tr[data-category="{t["category"]}"] td')
        expect(row).to_have_text([str(t["negative"]), str(t["neutral"]), str(t["positive"]),
                                  str(t["total"])])
    expect(page.locator("#latest tr")).to_have_count(min(20, want["count"]))
    expect(page.locator("#latest tr").first).to_contain_text("unknown")  # the newest: no category
    expect(page.locator("#status")).to_contain_text(f"{want['count']} predictions")
    page.screenshot(path=str(artifacts / "web-recent-chart.png"), full_page=True)

    # Another window, from the keyboard.
    page.get_by_label("Time window").focus()
    page.get_by_label("Time window").select_option("15")
    expect(page.locator("#bucket-words")).to_have_text("15 seconds")
    page.get_by_role("button", name="Refresh now").press("Enter")
    expect(page.locator("#status")).to_contain_text("predictions")
