"""``shopsense validate``."""

from __future__ import annotations

import typer


def validate_cmd(
    synthetic: str = typer.Option(..., help="dataset URI of the synthetic reviews"),
    real: str = typer.Option("blitzer-books,blitzer-electronics",
                             help="real reviews: shared set names and/or dataset URIs, "
                                  "comma-separated"),
    out: str | None = typer.Option(None, help="dataset URI for the kept reviews (default: "
                                      "<synthetic>-validated)"),
    teacher: str | None = typer.Option(None, help="model URI/bundle for label consistency "
                                          "(default VADER)"),
    target_auc: float = typer.Option(0.6, help="stop rejecting at this discriminator AUC"),
    min_keep: float = typer.Option(0.5, help="never keep less than this share"),
    style_only: bool = typer.Option(False, help="style features only (no MiniLM embeddings)"),
) -> None:
    """Adversarial validation: reject synthetic reviews a discriminator tells from real ones,
    plus label, duplicate, length and language checks; prints the JSON report."""
    from pipelines.validate.run import ValidateConfig, run_validate
    from shopsense.settings import get_settings

    cfg = ValidateConfig(teacher=teacher, target_auc=target_auc, min_keep_fraction=min_keep,
                         text_features="style" if style_only else "embedding")
    report = run_validate(real, synthetic, out or f"{synthetic.rstrip('/')}-validated", cfg,
                          data_dir=get_settings().data_dir)
    typer.echo(report.model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
