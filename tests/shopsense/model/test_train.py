import numpy as np
import pytest
import torch
from PIL import Image

from shopsense.model.classifier import ModelConfig, Predictor, SentimentModel, tokenize
from shopsense.model.encoders import load_tokenizer
from shopsense.model.train import RECIPES, TrainConfig, recipe


def test_tiny_training_produces_a_loadable_bundle(tiny_train_result):
    r = tiny_train_result
    assert r.train_samples > 0 and np.isfinite(r.metrics["train_loss_last"])
    assert (r.bundle_dir / "adapter").is_dir() and (r.bundle_dir / "head.pt").is_file()
    ev = r.evaluation
    assert ev["n"] == 40 and ev["labels"] == ["negative", "positive"]
    assert 0.0 <= ev["macro_f1"] <= 1.0 and "uci-imdb" in ev["per_set"]


def test_lora_weights_were_trained(tiny_train_result):
    """LoRA B matrices start at zero; after fine-tuning they are not: the encoder itself
    was fine-tuned, not only a head on frozen embeddings."""
    from safetensors.torch import load_file

    adapter = load_file(str(tiny_train_result.bundle_dir / "adapter" / "adapter_model.safetensors"))
    b_norms = [float(t.abs().sum()) for k, t in adapter.items() if "lora_B" in k]
    assert b_norms and all(n > 0 for n in b_norms)
    assert any("query" in k for k in adapter) and any("dense" in k for k in adapter)


def test_predictor_handles_every_modality_combination(tiny_train_result):
    pred = Predictor.from_bundle(tiny_train_result.bundle_dir)
    img = Image.new("RGB", (300, 200), (200, 30, 30))
    proba = pred.predict_proba(["great phone", None, "broke in a week"], [None, img, img])
    assert proba.shape == (3, 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        pred.predict_proba([None], [None])


def test_head_tail_truncation_keeps_the_end_of_long_reviews():
    tok = load_tokenizer()
    cfg = ModelConfig(max_length=16, truncation="head_tail")
    text = "start " + "filler " * 100 + "verdict terrible"
    enc = tokenize(tok, [text, "short"], cfg)
    ids = enc["input_ids"][0].tolist()
    assert len(ids) == 16
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded.startswith("start") and decoded.endswith("verdict terrible")
    assert enc["attention_mask"][1].sum() == 3  # [CLS] short [SEP]


def test_fusion_head_ignores_a_masked_modality():
    torch.manual_seed(0)
    model = SentimentModel(ModelConfig(random_init=True), with_lora=False).eval()
    text = torch.randn(2, 384)
    a, b = torch.randn(2, 1280), torch.randn(2, 1280)
    mt, mi = torch.ones(2), torch.zeros(2)
    with torch.no_grad():
        assert torch.allclose(model.head(text, a, mt, mi), model.head(text, b, mt, mi))


def test_recipes_are_valid(tmp_path):
    for name in RECIPES:
        cfg = recipe(name, data_dir=tmp_path, output_dir=tmp_path / name)
        assert isinstance(cfg, TrainConfig)
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("nope", data_dir=tmp_path, output_dir=tmp_path)


def test_dataset_rows_are_capped_per_source_set(tmp_path):
    from shopsense.data.dataset import write_dataset
    from shopsense.model.train import load_dataset_rows
    from shopsense.schemas import Review, Source
    from shopsense.store import LocalStore

    reviews = [Review.make(source=Source(kind="scraped", name=name, source_id=str(i)),
                           text=f"review {name} {i} with some words", label="positive")
               for name, n in (("site-a", 10), ("site-b", 3)) for i in range(n)]
    reviews.append(Review.make(source=Source(kind="scraped", name="site-a", source_id="u"),
                               text="unlabelled, never a training row"))
    write_dataset(LocalStore(tmp_path), "mixed", reviews, name="mixed")
    uri = (tmp_path / "mixed").as_uri()
    assert len(load_dataset_rows(uri, None, 0)) == 13
    rows = load_dataset_rows(uri, 4, 0)
    assert sorted(r["set"] for r in rows) == ["site-a"] * 4 + ["site-b"] * 3
