"""Photos for synthetic reviews: the procedural renderer (CPU default), SDXL when configured.

Image signals (:data:`~pipelines.synthesize.spec.IMAGE_SIGNALS`) map onto a
:class:`~shopsense.images.render.PhotoSpec`; :class:`ProceduralImages` draws it with
``shopsense.images.render`` (deterministic per seed). :class:`SDXLImages` turns the same spec
into a text prompt for a diffusers ``StableDiffusionXLPipeline`` (a local model path / cached
id, or a ready pipeline object) and returns a JPEG of the requested size, like the renderer.
On a GPU it runs in float16; without one it runs on CPU in float32. This repository's tests
run it with a tiny, randomly initialised SDXL pipeline of the same architecture on CPU; real
SDXL weights on a GPU are not exercised here. ``diffusers`` is imported lazily, only when
a model has to be loaded.
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


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _round8(n: int) -> int:
    return max(8, -(-int(n) // 8) * 8)


NEGATIVE_PROMPT = "studio render, illustration, text"


class SDXLImages:
    """diffusers SDXL text-to-image.

    ``model`` is either a model path / hub id (loaded with ``from_pretrained`` and
    ``local_files_only=True``: nothing is downloaded) or a ready pipeline object (anything
    with the ``StableDiffusionXLPipeline`` call signature); ``pipeline=`` is the same as
    passing the object. A loaded model goes to ``device`` (default CUDA when available, else
    CPU) in float16 on CUDA and float32 on CPU; a given pipeline is used as it is (it is only
    moved when ``device`` is set explicitly).

    ``size`` is the returned image size (``int`` or ``(width, height)``), ``resolution`` the
    size SDXL generates at (default: ``size`` rounded up to a multiple of 8; SDXL itself is
    trained at 1024); the result is resized to ``size`` when the two differ.
    """

    def __init__(self, model: Any = "stabilityai/stable-diffusion-xl-base-1.0", *,
                 pipeline: Any = None, steps: int = 30, size: int | tuple[int, int] = 1024,
                 resolution: int | tuple[int, int] | None = None, guidance_scale: float = 5.0,
                 device: str | None = None, variant: str | None = "fp16",
                 negative_prompt: str = NEGATIVE_PROMPT) -> None:
        if pipeline is None and not isinstance(model, (str, bytes)) and not hasattr(
                model, "__fspath__"):
            pipeline, model = model, None
        if pipeline is not None and model is None:
            model = getattr(pipeline, "name_or_path", None) or type(pipeline).__name__
        self.model_id = str(model)
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.size = _pair(size)
        w, h = _pair(resolution) if resolution is not None else self.size
        self.resolution = (_round8(w), _round8(h))
        self.device, self.variant, self.negative_prompt = device, variant, negative_prompt
        self._pipe = pipeline
        if pipeline is not None and device is not None and hasattr(pipeline, "to"):
            self._pipe = pipeline.to(device)
        self.name = f"sdxl:{self.model_id}"

    def _pipeline(self) -> Any:
        if self._pipe is None:
            import torch
            from diffusers import StableDiffusionXLPipeline

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = torch.float32 if device == "cpu" else torch.float16
            kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
            variant = self.variant if dtype == torch.float16 else None
            try:
                pipe = StableDiffusionXLPipeline.from_pretrained(
                    self.model_id, variant=variant, **kwargs)
            except (OSError, ValueError):
                if variant is None:
                    raise
                # the local copy may only hold the full-precision weights
                pipe = StableDiffusionXLPipeline.from_pretrained(self.model_id, **kwargs)
            pipe = pipe.to(device)
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        return self._pipe

    def prompt(self, spec: PhotoSpec) -> str:
        return prompt_for(spec)

    def generate(self, spec: PhotoSpec, seed: int) -> Any:
        """The PIL image for ``spec`` (RGB, ``self.size``)."""
        import torch

        pipe = self._pipeline()
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        width, height = self.resolution
        out = pipe(prompt=self.prompt(spec), negative_prompt=self.negative_prompt,
                   num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                   height=height, width=width, generator=generator, output_type="pil")
        image = out.images[0].convert("RGB")
        if image.size != self.size:
            from PIL import Image

            image = image.resize(self.size, Image.Resampling.LANCZOS)
        return image

    def render(self, spec: PhotoSpec, seed: int) -> bytes:
        return _jpeg(self.generate(spec, seed))
