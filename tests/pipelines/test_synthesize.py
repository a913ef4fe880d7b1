"""The synthetic agent: spec -> balanced labelled dataset with rendered photos. The LLM path
runs against LangChain's fake chat model (no LLM is reachable here)."""

from __future__ import annotations

import json

import pytest

from pipelines.synthesize.images import photo_spec_for, prompt_for
from pipelines.synthesize.run import run_synthesize
from pipelines.synthesize.spec import GenerationSpec
from shopsense.text import normalise_text
from shopsense.data.dataset import read_dataset
from shopsense.data.loaders import load_set
from shopsense.store import LocalStore


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("syn")
    spec = GenerationSpec(category="dvd", products=["Band of Brothers", "Finding Nemo"],
                          count_per_label={"negative": 8, "neutral": 6, "positive": 8},
                          image_fraction=0.5, seed=4)
    res = run_synthesize(spec, (root / "dvd").as_uri(), data_dir=data_dir)
    manifest, reviews = read_dataset(LocalStore(root), "dvd")
    return spec, res, manifest, list(reviews), LocalStore(root)


def test_balanced_labelled_with_spec_and_photos(synthetic):
    spec, res, manifest, reviews, store = synthetic
    assert manifest.labels.negative == 8 and manifest.labels.neutral == 6
    assert manifest.labels.positive == 8 and manifest.count == 22
    assert manifest.labels_by_category["dvd"].positive == 8
    for r in reviews:
        assert r.source.kind == "synthetic" and r.source.spec["spec"]["category"] == "dvd"
        assert r.source.spec["label"] == r.label
        assert {"negative": r.rating <= 2, "neutral": r.rating == 3,
                "positive": r.rating >= 4}[r.label]
        assert r.product.category == "dvd" and r.product.name in spec.products
    photos = [r for r in reviews if r.images]
    assert photos and res.images == len({r.images[0].sha256 for r in photos})
    for r in photos:
        ctrl = r.source.spec["controls"]["image"]
        assert ctrl["signal"] in spec.image_signals[r.label]
        assert store.exists(f"dvd/{r.images[0].uri}") and r.images[0].width == 224


def test_never_copies_a_whole_real_review(synthetic, data_dir):
    _, _, _, reviews, _ = synthetic
    real = {normalise_text(r.text) for name in ("blitzer-books", "blitzer-electronics",
                                                 "huliu-reviews", "blitzer-dvd")
            for r in load_set(name, data_dir)}
    for r in reviews:
        assert normalise_text(r.text) not in real
    # the held-out category's real texts are never a source of phrases
    dvd = [normalise_text(r.text) for r in load_set("blitzer-dvd", data_dir)]
    assert not any(normalise_text(r.text)[20:80] in d for r in reviews for d in dvd[:300])


def test_image_signals_reach_the_photo_spec():
    import numpy as np

    rng = np.random.default_rng(0)
    assert photo_spec_for("negative", "cracked", "phone", rng).damage == "cracked"
    assert photo_spec_for("negative", "torn_packaging", "box", rng).packaging == "torn"
    assert photo_spec_for("negative", "wrong_colour", "mug", rng).wrong_colour
    good = photo_spec_for("positive", "pristine_good_light", "dvd", rng)
    assert good.lighting == "good" and not good.defective
    assert "cracked" in prompt_for(photo_spec_for("negative", "cracked", "phone", rng))
    with pytest.raises(ValueError):
        GenerationSpec(category="dvd", image_signals={"negative": ["on fire"]})


def test_llm_generator_with_a_fake_chat_model(tmp_path, data_dir):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    good = json.dumps({"title": "Scratched disc",
                       "text": "The disc arrived scratched and the picture kept freezing "
                               "halfway through. Not what I paid for."})
    chat = FakeListChatModel(responses=[good, "sorry, I cannot help with that"])
    spec = GenerationSpec(category="dvd", products=["Finding Nemo"], generator="llm",
                          count_per_label={"negative": 2, "neutral": 0, "positive": 0},
                          image_fraction=0.0, seed=1)
    res = run_synthesize(spec, (tmp_path / "llm").as_uri(), chat=chat, data_dir=data_dir)
    _, reviews = read_dataset(LocalStore(tmp_path), "llm")
    reviews = list(reviews)
    gens = sorted(r.source.generator for r in reviews)
    assert gens == ["grounded-phrases-v1", "llm:FakeListChatModel"]  # 2nd answer unusable
    assert res.llm_fallbacks == 1
    assert any(r.text.startswith("The disc arrived scratched") for r in reviews)


def test_llm_generator_with_the_real_server(tmp_path, data_dir, smol_llm):
    """The real llama.cpp server (SmolLM2: weak, so answers may fall back, but every record
    says which generator wrote it) with few-shot examples of the category's own reviews."""
    from shopsense.data.loaders import load_set
    from shopsense.llm import chat_model_for

    style = [r.text for r in load_set("blitzer-dvd", data_dir)[:20]]
    spec = GenerationSpec(category="dvd", products=["Finding Nemo"], generator="llm",
                          count_per_label={"negative": 2, "neutral": 1, "positive": 2},
                          image_fraction=0.0, seed=3, style_examples=style)
    res = run_synthesize(spec, (tmp_path / "real").as_uri(), chat=chat_model_for(smol_llm),
                         data_dir=data_dir)
    reviews = list(read_dataset(LocalStore(tmp_path), "real")[1])
    assert len(reviews) == 5 and res.manifest.labels.neutral == 1
    by_llm = [r for r in reviews if r.source.generator.startswith("llm:")]
    assert by_llm, "the real model produced no usable review"
    for r in by_llm:
        c = r.source.spec["controls"]
        assert c["examples_from"] == "category" and c["examples"] == 3 and c["seed"] >= 0
        assert r.label_source == "spec" and r.source.spec["spec"]["style_examples"] == 20
    assert res.llm_fallbacks == sum(1 for r in reviews if r.source.spec["controls"].get(
        "llm_fallback"))


@pytest.mark.parametrize("reply", [
    "sorry, I cannot help with that",
    ("Title: Beowulf & Grendel: DVD Review\nReview: I am sorry to inform you that I cannot "
     "provide the requested review for Beowulf & Grendel as it is not a DVD product."),
    '{"title": "x", "text": "As an AI language model, I do not watch films."}',
    "I apologize, but I can't write reviews of real products.",
    "Title: DVD\nReview: I'm sorry, but I am unable to comply with this request.",
])
def test_a_refusal_is_no_review_whatever_its_form(reply):
    """Seen from Qwen2.5-Coder-1.5B in a cold-start run: an apology inside the asked
    ``Title:/Review:`` form got past a check that only looked at unformatted replies."""
    from pipelines.synthesize.text import _parse_reply

    assert _parse_reply(reply) == {}


@pytest.mark.parametrize("reply", [
    ("Title: Sorry I bought it\nReview: Sorry, but this film is two hours I will never get "
     "back. The acting is wooden and the disc skipped twice."),
    "Title: Not for me\nReview: I cannot recommend this DVD: the transfer is muddy.",
])
def test_a_negative_review_that_apologises_is_still_a_review(reply):
    from pipelines.synthesize.text import _parse_reply

    assert _parse_reply(reply)["text"].split()[0] in {"Sorry,", "I"}


def test_the_prompt_names_the_product_as_a_customer_would():
    from pipelines.synthesize.text import prompt_product

    blitzer = ("Chitty Chitty Bang Bang (Special Edition): DVD: Dick Van Dyke,Sally Ann Howes,"
               "Lionel Jeffries,Gert Frobe")
    assert prompt_product(blitzer, "dvd") == "Chitty Chitty Bang Bang (Special Edition)"
    assert prompt_product("Star Wars: Episode IV: A New Hope", "dvd") == (
        "Star Wars: Episode IV: A New Hope")
    assert prompt_product("Nokia 6610", "electronics") == "Nokia 6610"
    assert prompt_product("", "dvd") == ""


@pytest.mark.parametrize(("raw", "clean"), [
    ("Title: Beowulf & Grendel: DVD Review", "Beowulf & Grendel: DVD Review"),
    ("**Title:** Title: Great fun", "Great fun"),
    ('"A heartwarming tale"', "A heartwarming tale"),
    ("Negative", ""),
    ("Entitled to a refund", "Entitled to a refund"),
])
def test_titles_lose_the_reply_form(raw, clean):
    from pipelines.synthesize.text import clean_title

    assert clean_title(raw) == clean


def test_an_llm_review_without_a_usable_title_gets_a_customers_one(tmp_path, data_dir):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    reply = ("Title: Negative\nReview: The disc froze twice and the sound was out of sync "
             "for the whole second half.")
    spec = GenerationSpec(category="dvd", products=["Finding Nemo: DVD: A,B,C"],
                          generator="llm", image_fraction=0.0, seed=3,
                          count_per_label={"negative": 1, "neutral": 0, "positive": 0})
    run_synthesize(spec, (tmp_path / "t").as_uri(), chat=FakeListChatModel(responses=[reply]),
                   data_dir=data_dir)
    (review,) = list(read_dataset(LocalStore(tmp_path), "t")[1])
    assert review.source.generator == "llm:FakeListChatModel"
    assert review.title and review.title.lower() != "negative"
