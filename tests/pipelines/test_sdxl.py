"""SDXLImages with a tiny, randomly initialised SDXL pipeline of the real architecture, on CPU.

The components follow diffusers' own fast tests (``get_dummy_components`` in
tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py): a UNet with SDXL's
``text_time`` added conditioning and ``cross_attention_dim`` = the two text encoders' hidden
sizes together, a two-block VAE, CLIPTextModel + CLIPTextModelWithProjection and two
CLIPTokenizers (built here from a byte-level vocab.json / merges.txt, nothing downloaded).
Real SDXL weights on a GPU are not exercised.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("diffusers")

from PIL import Image

from pipelines.synthesize.images import SDXLImages, photo_spec_for, prompt_for
from shopsense.images.render import BACKGROUNDS, CATEGORIES, COLOURS, DAMAGES, PACKAGINGS, PhotoSpec

GEN = 32  # generation resolution: latents 16x16, UNet bottleneck 8x8
OUT = (224, 224)  # what the procedural renderer returns, and so what SDXLImages returns here


PROMPT_WORDS = " ".join([
    "amateur smartphone photo of a and visibly damaged next to cardboard shipping box its neat",
    "intact retail in clearly different colour than the order slip shows bright natural light",
    "dim indoor harsh flash on surface studio render illustration text",
    *COLOURS, *CATEGORIES, *DAMAGES, *PACKAGINGS, *BACKGROUNDS])


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: one printable character per byte."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tokenizer(path):
    from transformers import CLIPTokenizer

    path.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _bytes_to_unicode():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    # merges for the prompt words, so a whole prompt fits CLIP's 77 tokens as it does with
    # the real tokenizers; any other word falls back to one token per character
    merges: list[str] = []
    for word in sorted(set(PROMPT_WORDS.split())):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = f"{parts[0]} {parts[1]}"
            parts[:2] = [parts[0] + parts[1]]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(parts[0], len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(path), model_max_length=77, local_files_only=True)


def tiny_sdxl(tmp_path):
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=2, sample_size=GEN // 2,
        in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids + pooled text (32)
        cross_attention_dim=32 + 32,  # text_encoder + text_encoder_2 hidden sizes
        norm_num_groups=1)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear",
                                       timestep_spacing="leading")
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
                        latent_channels=4, sample_size=GEN)
    torch.manual_seed(0)
    # special-token ids match the tokenizer above (pooling reads the first <|endoftext|>)
    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                         intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                         num_hidden_layers=5, vocab_size=1000, hidden_act="gelu",
                         projection_dim=32)
    text_encoder = CLIPTextModel(cfg)
    text_encoder_2 = CLIPTextModelWithProjection(cfg)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=_tokenizer(tmp_path / "tok1"), tokenizer_2=_tokenizer(tmp_path / "tok2"),
        unet=unet, scheduler=scheduler).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Recording:
    """Delegates to the real pipeline and keeps every call's keyword arguments."""

    def __init__(self, pipe) -> None:
        self.pipe, self.calls = pipe, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    import torch

    # one intra-op thread: the model is tiny, and on a busy machine a starved second OpenMP
    # thread can stall each op for seconds
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))
    finally:
        torch.set_num_threads(threads)


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


SIGNALS = {"cracked": "cracked and visibly damaged",
           "torn_packaging": "next to a torn cardboard shipping box",
           "wrong_colour": "in a clearly different colour than the order slip shows",
           "pristine_good_light": "bright natural light"}


def test_tiny_sdxl_renders_the_spec_signals(pipe):
    rec = Recording(pipe)
    images = SDXLImages("tiny-sdxl", pipeline=rec, steps=2, size=OUT, resolution=GEN)
    assert images.name == "sdxl:tiny-sdxl" and images.resolution == (GEN, GEN)
    rng = np.random.default_rng(0)
    for signal, words in SIGNALS.items():
        label = "positive" if signal == "pristine_good_light" else "negative"
        spec = photo_spec_for(label, signal, "box", rng)
        data = images.render(spec, seed=7)
        im = _open(data)
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == OUT
        call = rec.calls[-1]
        assert call["prompt"] == prompt_for(spec) and words in call["prompt"]
        assert spec.colour in call["prompt"] and "box" in call["prompt"]
        assert (call["height"], call["width"], call["num_inference_steps"]) == (GEN, GEN, 2)
        assert np.asarray(im).std() > 0  # the VAE decoded something, not a blank frame
    # deterministic per seed, like the procedural renderer
    spec = PhotoSpec(category="box", colour="red", damage="dented")
    assert images.render(spec, 3) == images.render(spec, 3)


def test_sdxl_loads_a_local_model_directory_on_cpu(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "tiny-sdxl")
    images = SDXLImages(tmp_path / "tiny-sdxl", steps=1, size=(48, 40))  # path, no pipeline
    im = _open(images.render(PhotoSpec(category="phone", colour="blue", damage="cracked"), 1))
    assert im.size == (48, 40) and images.resolution == (48, 40)
    import torch

    loaded = images._pipe
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded.unet.dtype == (torch.float16 if torch.cuda.is_available() else torch.float32)
    with pytest.raises((OSError, ValueError)):  # local_files_only: nothing is downloaded
        SDXLImages("shopsense-tests/not-a-cached-sdxl")._pipeline()


def test_run_synthesize_with_tiny_sdxl(pipe, tmp_path, data_dir):
    from pipelines.synthesize.run import run_synthesize
    from pipelines.synthesize.spec import GenerationSpec
    from shopsense.data.dataset import read_dataset
    from shopsense.store import LocalStore

    rec = Recording(pipe)
    spec = GenerationSpec(category="electronics", products=["Kettle"],
                          count_per_label={"negative": 2, "neutral": 0, "positive": 1},
                          image_signals={"negative": ["cracked", "torn_packaging",
                                                      "wrong_colour"],
                                         "positive": ["pristine_good_light"]},
                          image_fraction=1.0, seed=1)
    images = SDXLImages("tiny-sdxl", pipeline=rec, steps=2, size=OUT, resolution=GEN)
    res = run_synthesize(spec, (tmp_path / "syn").as_uri(), images=images, data_dir=data_dir)
    manifest, reviews = read_dataset(LocalStore(tmp_path), "syn")
    reviews = list(reviews)
    assert manifest.count == 3 and len(rec.calls) == 3 and res.images >= 1
    assert any(p.get("images") == "sdxl:tiny-sdxl" for p in manifest.provenance)
    prompts = [c["prompt"] for c in rec.calls]
    for r in reviews:
        assert r.images and (r.images[0].width, r.images[0].height) == OUT
        ctrl = r.source.spec["controls"]["image"]
        assert ctrl["generator"] == "sdxl:tiny-sdxl"
        assert ctrl["signal"] in spec.image_signals[r.label]
        prompt = prompt_for(PhotoSpec.model_validate(ctrl["photo_spec"]))
        assert prompt in prompts and SIGNALS[ctrl["signal"]] in prompt
