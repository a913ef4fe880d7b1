"""The pipeline's data steps as plain functions (what the Kubeflow components call): scrape the
demo shop into an artifact folder, synthesize for a category naming scraped products, validate
against several real datasets and push the quality figures, assemble the training data
without held-out leakage."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipelines import steps
from shopsense.data.dataset import image_key, read_dataset, write_dataset
from shopsense.data.loaders import load_set
from shopsense.schemas import ImageRef, Product, Review, Source
from shopsense.settings import get_settings
from shopsense.store import LocalStore
from tests.pushgateway import pushgateway


@pytest.fixture()
def isolated(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("SHOPSENSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPSENSE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("SHOPSENSE_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("SHOPSENSE_PUSHGATEWAY_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _review(i: int, text: str, label: str | None = "positive", *, kind: str = "scraped",
            images: list[ImageRef] | None = None, category: str = "dvd") -> Review:
    return Review.make(source=Source(kind=kind, name=f"t-{kind}", source_id=str(i)),
                       text=text, label=label, images=images or [],  # type: ignore[arg-type]
                       product=Product(id=f"p{i % 3}", name=f"Film {i % 3}",
                                       category=category))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_assemble_drops_heldout_overlap_duplicates_and_unlabelled_and_keeps_photos(isolated):
    root = isolated / "art"
    store = LocalStore(root)
    held = "The picture is sharp, the sound is clear and the extras are worth the price alone."
    write_dataset(store, "heldout", [_review(0, held, kind="imported")], name="heldout")
    dup = "Arrived broken and the disc would not play in any of my three players at all."
    write_dataset(store, "imported", [
        _review(1, held.upper().replace(" ", "  "), kind="imported"),  # the held-out text
        _review(2, dup, "negative", kind="imported"),
        _review(3, "No rating on this one, so it has no label to learn from.", None,
                kind="imported"),
    ], name="imported")
    png = _png()
    sha = __import__("hashlib").sha256(png).hexdigest()
    photo = ImageRef(uri=image_key(sha, png), sha256=sha, width=8, height=8)
    write_dataset(store, "scraped", [
        _review(4, dup + " Really.", "negative"),  # near-duplicate of an imported review
        _review(5, "Great film, my kids watch it every weekend and still laugh out loud.",
                images=[photo]),
    ], name="scraped", images={sha: png})
    write_dataset(store, "synthetic", [
        _review(6, "The story drags but the acting holds it together for most of it.",
                "neutral", kind="synthetic")], name="synthetic")

    info = steps.assemble_training_data(
        parts={p: root / p for p in ("imported", "scraped", "synthetic")},
        heldout_dir=root / "heldout", out_dir=root / "training")

    assert info["count"] == 3
    assert info["parts"]["imported"] == {"read": 3, "kept": 1, "unlabelled": 1,
                                         "heldout_overlap": 1, "duplicate": 0}
    assert info["parts"]["scraped"]["duplicate"] == 1 and info["parts"]["scraped"]["kept"] == 1
    manifest, reviews = read_dataset(store, "training")
    reviews = list(reviews)
    assert held.lower() not in {r.text.lower() for r in reviews}
    with_photo = next(r for r in reviews if r.images)
    assert store.get_bytes(f"training/{with_photo.images[0].uri}") == png  # photos carried
    assert manifest.provenance[0]["step"] == "assemble_training_data"
    assert [p["part"] for p in manifest.provenance[0]["parts"]] == ["imported", "scraped",
                                                                    "synthetic"]


def test_validate_step_uses_every_real_dataset_and_pushes_its_figures(isolated, data_dir,
                                                                     monkeypatch):
    root = isolated / "art"
    store = LocalStore(root)
    real = load_set("blitzer-electronics", data_dir)
    write_dataset(store, "scraped", real[:80], name="scraped")
    write_dataset(store, "imported", real[80:200], name="imported")
    syn = [_review(i, f"PRODUCT {i} IS GOOD!!! BUY NOW!!! 5 STARS!!! {i * 7}", kind="synthetic")
           for i in range(30)]
    syn += [_review(100 + i, r.text, r.label or "positive", kind="synthetic",
                    category="electronics")
            for i, r in enumerate(load_set("blitzer-books", data_dir)[:30])]
    write_dataset(store, "synthetic", syn, name="synthetic-dvd")

    def run(gateway: str) -> dict:
        monkeypatch.setenv("SHOPSENSE_PUSHGATEWAY_URL", gateway)
        get_settings.cache_clear()
        return steps.validate_reviews(real_dirs=[root / "scraped", root / "imported"],
                                      synthetic_dir=root / "synthetic", kept_dir=root / "kept",
                                      rejected_dir=root / "rejected", text_features="style",
                                      target_auc=0.65)

    with pushgateway() as (address, pushed):
        out = run(address)
    assert out["pushed_to"] == address
    assert out["real"] == 200 and out["synthetic"] == 60
    assert out["kept"] + out["rejected"] == 60 and out["rejected_by_reason"]["adversarial"] >= 1
    assert out["rejected_uri"] == (root / "rejected").resolve().as_uri()
    _, rejected = read_dataset(store, "rejected")
    assert len(list(rejected)) == out["rejected"]
    assert store.exists("rejected/rejected.jsonl")
    (path, body), = pushed.items()
    assert path == "/metrics/job/shopsense-validate/dataset/synthetic-dvd-validated"
    text = body
    assert 'shopsense_validation_samples_total{category="dvd",dataset="synthetic-dvd-validated",' \
           'outcome="rejected"}' in text
    # one discriminator over a synthetic set of two categories: its AUC is labelled "all"
    assert 'shopsense_validation_discriminator_auc{category="all",' in text
    # a Pushgateway that is down costs the dashboard this run, not the step
    with pushgateway() as (address, _):
        pass
    again = run(address)
    assert again["pushed_to"] is None and again["kept"] == out["kept"]


@pytest.mark.slow
def test_scrape_step_then_synthesize_names_the_scraped_products(isolated):
    art = isolated / "art"
    info = steps.scrape_reviews(out_dir=art / "scraped", seeds=[], max_pages=40,
                                demo_base_port=0, concurrency=3)
    # how many of the 40 pages hold reviews depends on the crawl order and the shop's faults
    # (19 to 35 reviews in four runs, 17 once in CI): the step must publish what it found
    assert info["pages"] >= 30 and info["count"] == info["new_reviews"] > 0
    _, scraped = read_dataset(LocalStore(art), "scraped")
    scraped = list(scraped)
    assert all(r.source.kind == "scraped" for r in scraped)
    # the agent's own dataset and state stay in the settings' store, for the next run
    home_store = isolated / "home" / "store"
    assert (home_store / "scraped" / "pipeline" / "manifest.json").is_file()

    category = max({r.product.category for r in scraped},
                   key=lambda c: sum(r.product.category == c for r in scraped))
    syn = steps.synthesize_reviews(scraped_dir=art / "scraped", out_dir=art / "synthetic",
                                   category=category, per_label=4, seed=1)
    assert syn["count"] == 12 and syn["generators"] == {"grounded-phrases-v1": 12}
    _, reviews = read_dataset(LocalStore(art), "synthetic")
    named = {r.product.name for r in reviews}
    assert named and named <= {r.product.name for r in scraped
                               if r.product.category == category}


def test_the_llm_comes_from_the_step_argument_or_the_environment(monkeypatch):
    from langchain_openai import ChatOpenAI

    from shopsense.llm import chat_model_from_env

    monkeypatch.delenv("SHOPSENSE_LLM_BASE_URL", raising=False)
    assert chat_model_from_env() is None and steps._chat(None) is None
    chat = steps._chat("http://127.0.0.1:9/v1")
    assert isinstance(chat, ChatOpenAI) and str(chat.openai_api_base) == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("SHOPSENSE_LLM_BASE_URL", "http://vllm.shopsense:8000/v1")
    monkeypatch.setenv("SHOPSENSE_LLM_MODEL", "llama")
    chat = chat_model_from_env()
    assert chat.model_name == "llama" and chat.openai_api_base == "http://vllm.shopsense:8000/v1"


def test_assemble_drops_the_demo_shops_near_copies_of_held_out_reviews(isolated, data_dir):
    """The demo shop's near-copies (words dropped, a sign-off added) of held-out reviews fall
    below a Jaccard threshold when the review is short; containment still catches them all."""
    from pipelines.scrape.shop import _perturb
    from shopsense.text import jaccard, shingles

    root = isolated / "art"
    store = LocalStore(root)
    heldout = load_set("blitzer-dvd", data_dir)[:300]
    copies = [_review(i, _perturb(r.text, f"copy-{i}"), r.label) for i, r in enumerate(heldout)]
    low = [c for c, r in zip(copies, heldout)
           if jaccard(shingles(c.text), shingles(r.text)) < 0.7]
    assert low  # the case a Jaccard check misses
    others = load_set("blitzer-books", data_dir)[:100]
    write_dataset(store, "heldout", heldout, name="heldout")
    write_dataset(store, "scraped", copies, name="scraped")
    write_dataset(store, "imported", others, name="imported")
    info = steps.assemble_training_data(parts={"imported": root / "imported",
                                               "scraped": root / "scraped"},
                                        heldout_dir=root / "heldout", out_dir=root / "training")
    assert info["parts"]["scraped"]["heldout_overlap"] == len(copies)
    assert info["parts"]["scraped"]["kept"] == 0
    assert info["parts"]["imported"]["kept"] >= 97  # unrelated reviews are not caught
