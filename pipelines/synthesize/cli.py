"""``shopsense synthesize``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def synthesize_cmd(
    category: str = typer.Option(..., help="product category, e.g. dvd"),
    out: str | None = typer.Option(None, help="dataset URI (default: the store, "
                                      "synthetic/<category>)"),
    per_label: int = typer.Option(50, help="reviews per label (negative, neutral, positive)"),
    products: str | None = typer.Option(None, help="comma-separated product names"),
    aspects: str | None = typer.Option(None, help="comma-separated aspects"),
    spec_file: Path | None = typer.Option(None, "--spec", help="a GenerationSpec JSON file "
                                             "(overrides the options above)"),
    image_fraction: float = typer.Option(0.5, help="share of reviews with a photo"),
    llm: bool = typer.Option(False, help="text from the LLM at SHOPSENSE_LLM_BASE_URL"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate a balanced, labelled synthetic dataset (text + rendered photos) from a spec."""
    from shopsense.llm import chat_model_from_env
    from pipelines.synthesize.run import run_synthesize
    from pipelines.synthesize.spec import GenerationSpec
    from shopsense.settings import get_settings

    s = get_settings()
    if spec_file:
        spec = GenerationSpec.model_validate_json(spec_file.read_text())
    else:
        spec = GenerationSpec(
            category=category, seed=seed, image_fraction=image_fraction,
            generator="llm" if llm else "grounded",
            products=[p.strip() for p in (products or "").split(",") if p.strip()],
            aspects=[a.strip() for a in (aspects or "").split(",") if a.strip()],
            count_per_label={"negative": per_label, "neutral": per_label,
                             "positive": per_label})
    uri = out or f"{s.default_store_uri().rstrip('/')}/synthetic/{spec.category}"
    chat = chat_model_from_env() if spec.generator == "llm" else None
    res = run_synthesize(spec, uri, chat=chat, data_dir=s.data_dir, progress=True)
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        return
    m = res.manifest
    typer.echo(f"wrote {m.count} reviews ({json.dumps(m.labels.model_dump())}) and "
               f"{res.images} photos to {uri}; generators {res.generators}")


def register(app: typer.Typer) -> None:
    app.command("synthesize")(synthesize_cmd)
