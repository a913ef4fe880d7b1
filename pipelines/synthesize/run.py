"""``run_synthesize(spec, out) -> SynthesizeResult``: a balanced, labelled synthetic dataset.

For each label, ``spec.count_per_label[label]`` reviews: a product (cycling through
``spec.products``), an aspect (cycling through ``spec.aspects``), a text from the grounded
generator (or the LLM when ``spec.generator == "llm"`` and a chat model is given), a rating
consistent with the label (1-2, 3, 4-5), and with probability ``spec.image_fraction`` a photo
showing one of the label's image signals. Every record keeps the spec and its own controls in
``source.spec``; the dataset is written atomically with its manifest.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipelines.synthesize.images import ProceduralImages, photo_spec_for
from pipelines.synthesize.spec import GenerationSpec
from pipelines.synthesize.text import GroundedGenerator, LLMGenerator, PhraseBank
from shopsense.data.dataset import image_key, open_dataset_uri, split_dataset_uri, write_dataset
from shopsense.schemas import DatasetManifest, ImageRef, Product, Review, Source
from shopsense.store import ObjectStore

log = logging.getLogger(__name__)

__all__ = ["SynthesizeResult", "run_synthesize"]


class SynthesizeResult(BaseModel):
    dataset_uri: str
    manifest: DatasetManifest
    generators: dict[str, int]
    images: int
    llm_fallbacks: int = 0


def run_synthesize(spec: GenerationSpec, out: str, *, chat: Any = None, images: Any = None,
                   data_dir: Any = None, store: ObjectStore | None = None,
                   progress: bool = False) -> SynthesizeResult:
    """Generate the dataset ``spec`` describes and publish it at the dataset URI ``out``.

    ``chat``: a LangChain chat model for ``generator="llm"``; ``images``: an image backend
    with ``render(photo_spec, seed) -> bytes`` and ``name`` (default: procedural)."""
    if store is None:
        store, prefix = open_dataset_uri(out)
    else:
        prefix = split_dataset_uri(out)[1]
    rng = np.random.default_rng(spec.seed)
    bank = PhraseBank.mine(spec.mine_from, spec.aspects, spec.noun or "product", data_dir)
    grounded = GroundedGenerator(bank)
    if spec.generator == "llm":
        if chat is None:
            raise ValueError("generator 'llm' needs a chat model (set SHOPSENSE_LLM_BASE_URL)")
        gen: Any = LLMGenerator(chat, grounded, category=spec.category,
                                style_examples=spec.style_examples,
                                temperature=spec.temperature)
    else:
        gen = grounded
    painter = images or ProceduralImages()
    products = spec.products or [""]
    # the examples are inputs, not part of what each record needs to say how it was made
    spec_json = spec.model_dump(mode="json", exclude={"style_examples"})
    spec_json["style_examples"] = len(spec.style_examples)
    reviews: list[Review] = []
    blobs: dict[str, bytes] = {}
    generators: dict[str, int] = {}
    plan = [(lbl, i) for lbl, n in spec.count_per_label.items() for i in range(n)]
    order = rng.permutation(len(plan))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc="synthesize", unit="review")
    for k in order:
        label, i = plan[int(k)]
        product = products[i % len(products)]
        aspect = spec.aspects[(i + int(rng.integers(len(spec.aspects)))) % len(spec.aspects)]
        g = gen.generate(label, product=product, aspect=aspect, rng=rng)
        generators[g.generator] = generators.get(g.generator, 0) + 1
        rating = g.controls.get("rating") or {"negative": int(rng.choice([1, 2])), "neutral": 3,
                                              "positive": int(rng.choice([4, 5]))}[label]
        controls = dict(g.controls)
        refs: list[ImageRef] = []
        signals = spec.image_signals.get(label) or []
        if signals and rng.random() < spec.image_fraction:
            signal = str(rng.choice(signals))
            pspec = photo_spec_for(label, signal, spec.photo_category or "box", rng)
            seed = int(rng.integers(2**31))
            data = painter.render(pspec, seed)
            sha = hashlib.sha256(data).hexdigest()
            blobs[sha] = data
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
            refs.append(ImageRef(uri=image_key(sha, data), sha256=sha, width=w, height=h))
            controls["image"] = {"signal": signal, "photo_spec": pspec.model_dump(),
                                 "seed": seed, "generator": getattr(painter, "name", "images")}
        sid = f"{spec.category}:{label}:{i}:{spec.seed}"
        reviews.append(Review.make(
            source=Source(kind="synthetic", name=f"synthetic-{spec.category}", source_id=sid,
                          generator=g.generator,
                          spec={"spec": spec_json, "label": label, "controls": controls}),
            text=g.text, title=g.title, rating=float(rating), label=label,  # type: ignore[arg-type]
            label_source="spec",
            images=refs,
            product=Product(id=f"synthetic:{hashlib.sha256(product.encode()).hexdigest()[:10]}",
                            name=product or None, category=spec.category),
        ))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    manifest = write_dataset(store, prefix, reviews, name=f"synthetic-{spec.category}",
                             provenance={"step": "synthesize", "spec": spec_json,
                                         "generators": generators,
                                         "images": getattr(painter, "name", "images")},
                             images=blobs)
    return SynthesizeResult(dataset_uri=out, manifest=manifest, generators=generators,
                            images=len(blobs),
                            llm_fallbacks=getattr(gen, "failures", 0))
