"""Loaders against the REAL shared data (skipped, with the reason, when it is not there)."""

from __future__ import annotations

import collections
import json
from datetime import datetime, timezone

import pytest

from shopsense.data.loaders import (
    EPOCH,
    SET_NAMES,
    iter_cranfield_docs,
    load_blitzer,
    load_cranfield_beir,
    load_huliu,
    load_huliu_reviews,
    load_set,
    load_uci,
    to_eval_records,
)
from shopsense.errors import DataError
from shopsense.schemas import Review
from shopsense.settings import Settings


@pytest.fixture(scope="module")
def data_dir():
    path = Settings().data_dir  # SHOPSENSE_DATA_DIR or ../shared/data beside the project
    if not (path / "uci-sentiment-labelled-sentences").is_dir():
        pytest.skip(f"shared review data not found at {path} (set SHOPSENSE_DATA_DIR)")
    return path


@pytest.fixture(scope="module")
def all_sets(data_dir):
    return {name: load_set(name, data_dir) for name in SET_NAMES}


def labels(reviews):
    return dict(collections.Counter(r.label for r in reviews))


def test_uci_counts(all_sets):
    for name in ("uci-amazon", "uci-imdb"):
        assert len(all_sets[name]) == 1000
        assert labels(all_sets[name]) == {"negative": 500, "positive": 500}
    assert {r.product.category for r in all_sets["uci-amazon"]} == {"cell phones"}
    assert {r.product.category for r in all_sets["uci-imdb"]} == {"movies"}


def test_uci_imdb_keeps_u0085_inside_one_record(all_sets):
    with_nel = [r for r in all_sets["uci-imdb"] if "\u0085" in r.text]
    assert len(with_nel) == 2
    assert "The script is\u0085was there a script?" in [r.text for r in with_nel]
    assert all(not r.text.endswith((" ", "\t")) for r in all_sets["uci-imdb"])


def test_blitzer_counts_fields_and_dates(all_sets):
    for cat in ("books", "dvd", "electronics"):
        reviews = all_sets[f"blitzer-{cat}"]
        assert len(reviews) == 2000  # 1000 per file
        assert labels(reviews[:1000]) == {"negative": 1000}  # negative.review first
        assert labels(reviews[1000:]) == {"positive": 1000}
        assert all(r.rating in (1.0, 2.0, 4.0, 5.0) for r in reviews)
        assert all(r.product.id and r.product.name and r.title is not None for r in reviews)
    first = all_sets["blitzer-books"][1000]
    assert first.source.source_id == "0785758968:one_of_the_best_crichton_novels:joseph_m"
    assert first.title == "One of the best Crichton novels"
    assert first.product.model_dump() == {
        "id": "0785758968", "name": "Sphere: Books: Michael Crichton", "category": "books"
    }
    assert first.created_at == datetime(2006, 7, 1, tzinfo=timezone.utc)
    assert first.rating == 5.0 and first.text.startswith("Sphere by Michael Crichton")
    electronics = all_sets["blitzer-electronics"]
    assert "computer & video games" in {r.product.category for r in electronics}  # &amp;
    assert sum(r.created_at == EPOCH for r in electronics) == 1  # the one empty <date>
    texts = " ".join(r.text for r in all_sets["blitzer-books"][:200])
    assert "&quot;" not in texts and "&amp;" not in texts


def test_huliu_review_counts_per_product(data_dir, all_sets):
    by_product = collections.Counter(r.product.name for r in all_sets["huliu-reviews"])
    assert by_product == {
        "Canon G3": 45,
        "Apex AD2600 Progressive-scan DVD player": 77,
        "Nikon coolpix 4300": 34,
        "Nokia 6610": 39,
    }
    assert len(load_huliu_reviews(data_dir, "CanonG3")) == 45
    assert len(load_huliu_reviews(data_dir, "nokia 6610")) == 39
    reviews = all_sets["huliu-reviews"]
    assert labels(reviews) == {"positive": 152, "negative": 42, None: 1}  # one DVD [t] unprefixed
    cats = {r.product.name: r.product.category for r in reviews}
    assert cats["Canon G3"] == cats["Nikon coolpix 4300"] == "digital cameras"
    assert cats["Nokia 6610"] == "cell phones"
    assert cats["Apex AD2600 Progressive-scan DVD player"] == "dvd players"
    first = reviews[0]
    assert first.title == "excellent picture quality / color"
    assert first.text.startswith("i recently purchased the canon powershot g3")


def test_huliu_sentences_and_labels(data_dir, all_sets):
    sentences = all_sets["huliu"]
    per_file = collections.Counter(r.source.source_id.split(":")[0] for r in sentences)
    assert per_file == {"CanonG3": 597, "DVD": 596, "Nikon": 346, "Nokia6610": 535}
    got = labels(sentences)
    assert got["neutral"] > 0 and got["positive"] > 0 and got["negative"] > 0
    assert set(got) <= {"positive", "negative", "neutral", None}
    canon = load_huliu(data_dir, "CanonG3")
    by_text = {r.text: r.label for r in canon}
    # "canon powershot g3[+3]##i recently purchased …"
    assert by_text["i recently purchased the canon powershot g3 and am extremely satisfied "
                   "with the purchase ."] == "positive"
    # "##after i took their picture …": no annotation → neutral
    assert by_text["after i took their picture with their camera , they offered to take a "
                   "picture of us ."] == "neutral"
    # the "option[+1}, control[+1]" typo line still counts as positive
    typo = [r for r in canon if r.text.startswith("canon have packed a lot in here")]
    assert [r.label for r in typo] == ["positive"]
    # the DVD line with a single '#' after its annotations
    dvd = load_huliu(data_dir, "DVD")
    single = [r for r in dvd if r.text.startswith("apex ad-2600 runs all the dvd media")]
    assert [r.label for r in single] == ["positive"]
    assert not any("##" in r.text or r.text.startswith("[") for r in sentences)


def test_neutral_labels_only_come_from_huliu(all_sets):
    for name, reviews in all_sets.items():
        if name != "huliu":
            assert "neutral" not in labels(reviews), name


def test_ids_unique_and_stable_and_valid(data_dir, all_sets):
    for name in SET_NAMES:
        first = all_sets[name]
        ids = [r.id for r in first]
        assert len(set(ids)) == len(ids), name
        again = load_set(name, data_dir)
        assert [r.model_dump() for r in again] == [r.model_dump() for r in first], name
        for r in first:
            assert r.source.kind == "imported" and r.source.name == name
            Review.model_validate(r.model_dump())  # round-trips through validation
            Review.model_validate_json(r.model_dump_json())
    everything = [r.id for reviews in all_sets.values() for r in reviews]
    assert len(set(everything)) == len(everything)


def test_to_eval_records(all_sets):
    records = to_eval_records(all_sets["huliu-reviews"])
    assert len(records) == 194  # the unprefixed review is skipped
    assert set(records[0]) == {"text", "label", "category"}
    assert records[0]["category"] == "digital cameras"
    assert len(to_eval_records(all_sets["uci-amazon"])) == 1000


def test_unknown_set_and_missing_files(tmp_path, data_dir):
    with pytest.raises(DataError) as exc:
        load_set("yelp", data_dir)
    assert all(name in str(exc.value) for name in SET_NAMES)
    with pytest.raises(DataError, match=str(tmp_path)):
        load_set("uci-amazon", tmp_path)
    with pytest.raises(DataError, match="imdb_labelled.txt"):
        load_uci(tmp_path, "imdb")
    with pytest.raises(DataError, match=str(tmp_path)):
        load_blitzer(tmp_path, "books")
    with pytest.raises(DataError, match=str(tmp_path)):
        load_huliu(tmp_path)
    with pytest.raises(DataError, match="choose one of"):
        load_huliu(data_dir, "iPod")


def test_cranfield_beir(data_dir, tmp_path):
    summary = load_cranfield_beir(data_dir, tmp_path / "beir")
    assert (summary["corpus"], summary["queries"], summary["qrels"]) == (1400, 225, 1612)
    corpus = [json.loads(line) for line in (tmp_path / "beir" / "corpus.jsonl").open()]
    queries = [json.loads(line) for line in (tmp_path / "beir" / "queries.jsonl").open()]
    assert [d["_id"] for d in corpus] == [str(i) for i in range(1, 1401)]
    assert set(corpus[0]) == {"_id", "title", "text"}
    assert corpus[0]["title"].startswith("experimental investigation of the aerodynamics")
    assert [q["_id"] for q in queries] == [str(i) for i in range(1, 226)]
    assert queries[0]["text"].startswith("what similarity laws must be obeyed")
    # cran.qry numbers the 3rd query "004": it is qid 3
    assert queries[2]["text"].startswith("what problems of heat conduction in composite slabs")
    lines = (tmp_path / "beir" / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    rows = [tuple(line.split("\t")) for line in lines[1:]]
    assert rows[0] == ("1", "184", "3")  # code 2 → gain 3
    assert collections.Counter(r[2] for r in rows) == {"4": 128, "3": 387, "2": 734, "1": 363}
    docs = {d["_id"]: d for d in iter_cranfield_docs(data_dir)}
    assert "application to turbulent separations" in docs["240"]["text"]
    assert ".A" not in docs["240"]["text"].split()
    assert docs["471"]["text"] == ""
    assert docs["1"]["author"] == "brenckman,m."
