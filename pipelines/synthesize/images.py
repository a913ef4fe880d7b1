"""Photos for synthetic reviews: the procedural renderer (CPU default), SDXL when configured.

Image signals (:data:`~pipelines.synthesize.spec.IMAGE_SIGNALS`) map onto a
:class:`~shopsense.images.render.PhotoSpec`; :class:`ProceduralImages` draws it with
``shopsense.images.render`` (deterministic per seed). :class:`SDXLImages` turns the same spec
into a text prompt for a diffusers ``StableDiffusionXLPipeline``; it needs a GPU and SDXL
weights, neither of which exists here, so it is not exercised in this repository's tests.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from shopsense.images.render import COLOURS, PhotoSpec, render_photo

__all__ = ["ProceduralImages", "SDXLImages", "photo_spec_for", "prompt_for"]


def photo_spec_for(label: str, signal: str, category: str, rng: np.random.Generator
                   ) -> PhotoSpec:
    colour = str(rng.choice(sorted(COLOURS)))
    fields: dict[str, Any] = {"category": category, "colour": colour,
                              "background": str(rng.choice(["wood", "marble", "carpet",
                                                            "tiles"]))}
    if signal in ("cracked", "dented", "scratched", "broken"):
        fields |= {"damage": signal, "lighting": str(rng.choice(["good", "dim", "harsh"]))}
    elif signal in ("torn_packaging", "crushed_packaging"):
        fields |= {"packaging": signal.split("_")[0]}
    elif signal == "wrong_colour":
        fields |= {"wrong_colour": True}
    elif signal == "pristine_good_light":
        fields |= {"lighting": "good"}
    elif signal == "intact_packaging":
        fields |= {"packaging": "intact", "lighting": "good"}
    elif signal == "dim_light":
        fields |= {"lighting": "dim"}
    elif signal == "plain_background":
        fields |= {"background": "plain", "lighting": "good"}
    return PhotoSpec.model_validate(fields)


def prompt_for(spec: PhotoSpec) -> str:
    """A text-to-image prompt that asks for what ``spec`` shows."""
    parts = [f"amateur smartphone photo of a {spec.colour} {spec.category}"]
    if spec.damage != "none":
        parts.append(f"{spec.damage} and visibly damaged")
    if spec.packaging in ("torn", "crushed"):
        parts.append(f"next to a {spec.packaging} cardboard shipping box")
    elif spec.packaging == "intact":
        parts.append("next to its neat, intact retail box")
    if spec.wrong_colour:
        parts.append("in a clearly different colour than the order slip shows")
    parts.append({"good": "bright natural light", "dim": "dim indoor light",
                  "harsh": "harsh flash light"}[spec.lighting])
    parts.append(f"on a {spec.background} surface")
    return ", ".join(parts)


def _jpeg(image: Any, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class ProceduralImages:
    name = "procedural-render-v1"

    def __init__(self, size: tuple[int, int] = (224, 224)) -> None:
        self.size = size

    def render(self, spec: PhotoSpec, seed: int) -> bytes:
        return _jpeg(render_photo(spec, seed=seed, size=self.size))


class SDXLImages:
    """diffusers SDXL text-to-image. ``pipeline`` may be given (any callable with the
    ``StableDiffusionXLPipeline`` call signature); otherwise ``model_id`` is loaded on CUDA."""

    def __init__(self, model_id: str = "stabilityai/stable-diffusion-xl-base-1.0", *,
                 pipeline: Any = None, steps: int = 30, size: int = 1024) -> None:
        self.model_id, self.steps, self.size = model_id, steps, size
        self._pipe = pipeline
        self.name = f"sdxl:{model_id}"

    def _pipeline(self) -> Any:
        if self._pipe is None:
            import torch
            from diffusers import StableDiffusionXLPipeline

            if not torch.cuda.is_available():
                raise RuntimeError("SDXL needs a GPU; use the procedural renderer on CPU")
            self._pipe = StableDiffusionXLPipeline.from_pretrained(
                self.model_id, torch_dtype=torch.float16, variant="fp16").to("cuda")
        return self._pipe

    def render(self, spec: PhotoSpec, seed: int) -> bytes:
        import torch

        pipe = self._pipeline()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        out = pipe(prompt=prompt_for(spec), negative_prompt="studio render, illustration, text",
                   num_inference_steps=self.steps, height=self.size, width=self.size,
                   generator=generator)
        return _jpeg(out.images[0])
