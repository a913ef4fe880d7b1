"""``shopsense auto-label``."""

from __future__ import annotations

from typing import Optional

import typer


def auto_label_cmd(
    reviews: str = typer.Option(..., help="dataset URI of the reviews (file://DIR/PREFIX, s3://…)"),
    out: str = typer.Option(..., help="dataset URI to write the labelled reviews to"),
    min_confidence: float = typer.Option(0.9, help="probability a label needs"),
    llm_weight: float = typer.Option(0.75, help="LLM's weight against the champion's"),
    champion: Optional[str] = typer.Option(None, help="model URI (default: the champion)"),
    no_llm: bool = typer.Option(False, "--no-llm", help="the champion alone"),
    llm_budget_s: Optional[float] = typer.Option(None, help="seconds of LLM time at most"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Label reviews that have none with the LLM and the champion together (confident labels
    only; each records its source and confidence)."""
    from pipelines.label.run import AutoLabelConfig, run_auto_label

    cfg = AutoLabelConfig(min_confidence=min_confidence, llm_weight=llm_weight,
                          champion=champion, use_llm=not no_llm, llm_budget_s=llm_budget_s)
    report = run_auto_label(reviews, out, cfg, progress=True)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo(f"{sum(report.labelled.values())} of {report.to_label} reviews labelled "
                   f"({report.labelled}; coverage {report.coverage:.0%}), {report.from_rating} "
                   f"from ratings; written to {out}")


def register(app: typer.Typer) -> None:
    app.command("auto-label")(auto_label_cmd)
