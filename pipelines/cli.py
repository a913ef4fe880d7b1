"""``shopsense pipeline …``: compile, run locally (kfp.local) and submit the review-sentiment
pipeline. Registered on the root command through the ``shopsense.commands`` entry point."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger("shopsense.pipeline")

pipeline_app = typer.Typer(help="The Kubeflow pipeline review-sentiment: compile, run locally, "
                                "submit.", no_args_is_help=True)

# `shopsense pipeline run`: small sizes, CPU, one Ray Train worker — minutes, not hours.
LOCAL_ARGUMENTS: dict = {
    "train_sets": "blitzer-electronics,uci-amazon,huliu",
    "heldout_sets": "blitzer-dvd,uci-imdb",
    "max_train_per_set": 120,
    "max_heldout_per_set": 100,
    "recipe": "demo",
    "epochs": 1.0,
    "max_length": 64,
    "batch_size": 16,
    "image_pool": 60,
    "num_workers": 1,
    "use_gpu": False,
    "margin": 0.0,
    "floor_macro_f1": 0.5,
    "floor_accuracy": 0.5,
    "max_ece": 0.0,
    "scrape_max_pages": 120,
    "synth_per_label": 30,
}


_CHOICES = {"model_kind": ("compact", "llava"), "validate_features": ("embedding", "style"),
            "synth_generator": ("grounded", "llm", "auto"), "validate_teacher": ("", "llm"),
            "teacher": ("", "auto")}
# Allowed ranges (inclusive; None: open), checked before anything runs, so that a mistake is
# not found minutes later inside a step (or in the cluster, after `submit`).
_RANGES = {
    "max_train_per_set": (0, None), "max_heldout_per_set": (0, None), "epochs": (0.01, None),
    "max_length": (8, 512), "batch_size": (1, None), "image_pool": (0, None),
    "num_workers": (1, None), "margin": (0.0, 1.0), "floor_macro_f1": (0.0, 1.0),
    "floor_accuracy": (0.0, 1.0), "max_ece": (0.0, 1.0), "scrape_max_pages": (1, None),
    "demo_base_port": (0, 65530), "synth_per_label": (1, None),
    "synth_image_fraction": (0.0, 1.0), "validate_target_auc": (0.5, 1.0),
    "validate_min_keep": (0.0, 1.0), "label_min_confidence": (0.34, 1.0),
}


class PipelineFailed(Exception):
    """A step of a local run failed (its log is above)."""


def _arguments(pairs: list[str], base: dict) -> dict:
    """``KEY=VALUE`` pairs over ``base``, each checked against the pipeline's parameters and
    converted to the parameter's type; a mistake is a one-line ``BadParameter``."""
    from pipelines.review_pipeline import review_sentiment
    from shopsense.data.loaders import SET_NAMES
    from shopsense.model.train import RECIPES

    inputs = review_sentiment.component_spec.inputs
    out = dict(base)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--arg wants KEY=VALUE, got {pair!r}")
        if key not in inputs:
            raise typer.BadParameter(f"unknown pipeline argument {key!r}; known: "
                                     f"{', '.join(sorted(inputs))}")
        kind = inputs[key].type
        try:
            if kind == "Integer":
                out[key] = int(raw)
            elif kind == "Float":
                out[key] = float(raw)
            elif kind == "Boolean":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = raw.lower() in ("true", "1")
            else:
                out[key] = raw
        except ValueError as exc:
            raise typer.BadParameter(f"{key} wants {kind.lower()}, got {raw!r}") from exc
    for key, allowed in {**_CHOICES, "recipe": tuple(RECIPES)}.items():
        if key in out and out[key] not in allowed:
            raise typer.BadParameter(f"{key} must be one of {', '.join(allowed)}, "
                                     f"got {out[key]!r}")
    for key, (low, high) in _RANGES.items():
        if key in out and ((low is not None and out[key] < low) or
                           (high is not None and out[key] > high)):
            top = "∞" if high is None else high
            raise typer.BadParameter(f"{key} must be in [{low}, {top}], got {out[key]!r}")
    for key in ("train_sets", "heldout_sets"):
        unknown = [x for x in str(out.get(key, "")).split(",") if x and x not in SET_NAMES]
        if unknown:
            raise typer.BadParameter(f"{key}: unknown set {', '.join(unknown)}; known: "
                                     f"{', '.join(SET_NAMES)}")
    return out


def run_local(arguments: dict, *, pipeline_root: Path) -> dict:
    """Run the whole pipeline here through ``kfp.local`` (each step a subprocess of this
    virtualenv's Python; nothing installed). Returns the register step's outputs."""
    from kfp import local

    from pipelines.review_pipeline import review_sentiment

    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    try:
        task = review_sentiment(**arguments)
    except RuntimeError as exc:  # kfp.local: "Pipeline … finished with status FAILURE. …"
        raise PipelineFailed(re.sub(r"\x1b\[[0-9;]*m", "", str(exc))) from exc
    return {k: task.outputs[k] for k in ("model", "version", "champion", "reason")}


@pipeline_app.command("compile")
def compile_cmd(
    output: Optional[Path] = typer.Option(None, help="default: manifests/pipelines/"
                                          "review-sentiment.yaml"),
) -> None:
    """Compile the pipeline to its IR YAML."""
    from pipelines.review_pipeline import MANIFEST, compile_pipeline

    typer.echo(f"wrote {compile_pipeline(output or MANIFEST)}")


@pipeline_app.command("run")
def run_cmd(
    arg: list[str] = typer.Option([], "--arg", help="pipeline argument KEY=VALUE (repeatable);"
                                  " defaults are small CPU sizes"),
    root: Optional[Path] = typer.Option(None, help="where step outputs go (default: "
                                        "<home>/pipeline-runs)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Run review-sentiment end to end on this machine (kfp.local, CPU, small sizes) and print
    the registered version and whether it became champion."""
    from shopsense.settings import get_settings

    s = get_settings()
    try:
        out = run_local(_arguments(arg, LOCAL_ARGUMENTS),
                        pipeline_root=root or s.resolved_home() / "pipeline-runs")
    except PipelineFailed as exc:
        typer.echo(f"error: {exc} (its log is above)", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(out))
    else:
        state = "is now champion" if out["champion"] else "did not become champion"
        typer.echo(f"registered {out['model']} v{out['version']} (alias challenger); it "
                   f"{state}: {out['reason']}")


@pipeline_app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., "--host", help="Kubeflow Pipelines API, e.g. "
                              "http://ml-pipeline-ui.kubeflow:80"),
    package: Optional[Path] = typer.Option(None, help="compiled YAML (default: the committed "
                                           "manifests/pipelines/review-sentiment.yaml)"),
    arg: list[str] = typer.Option([], "--arg", help="pipeline argument KEY=VALUE (repeatable)"),
    experiment: str = typer.Option("shopsense", help="KFP experiment name"),
    run_name: Optional[str] = typer.Option(None, help="run name (default: generated)"),
    namespace: Optional[str] = typer.Option(None, help="Kubeflow namespace (multi-user)"),
    token: Optional[str] = typer.Option(None, envvar="KFP_TOKEN", help="bearer token"),
) -> None:
    """Submit the compiled pipeline to a Kubeflow Pipelines server."""
    from pipelines.review_pipeline import MANIFEST

    out = submit(host=host, package=package or MANIFEST, arguments=_arguments(arg, {}),
                 experiment=experiment, run_name=run_name, namespace=namespace, token=token)
    typer.echo(f"submitted run {out['run_id']} to {host}: {out['url']}")


def submit(*, host: str, package: Path, arguments: dict, experiment: str,
           run_name: str | None = None, namespace: str | None = None,
           token: str | None = None) -> dict:
    import kfp

    client = kfp.Client(host=host, namespace=namespace, existing_token=token)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
        namespace=namespace)
    return {"run_id": result.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}


def coldstart_cmd(
    category: str = typer.Option(..., help="the product category, e.g. 'espresso machines'"),
    reviews: Path = typer.Option(..., help="JSONL: text, optional title, product, rating; "
                                 "no labels needed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    budget_minutes: float = typer.Option(60.0, help="time budget: the LLM's labelling and "
                                         "synthesis stop at their shares of it"),
    synthetic_per_label: int = typer.Option(30, help="synthetic reviews per polar label "
                                            "(at most; the budget may stop sooner)"),
    base_sets: Optional[str] = typer.Option(None, help="comma-separated shared sets trained "
                                            "on beside the category (default: the standard "
                                            "training sets; '' for none)"),
    base_per_set: int = typer.Option(500, help="at most this many reviews per base set"),
    champion: Optional[str] = typer.Option(None, help="model URI pooled with the LLM "
                                           "(default: the registry champion)"),
    min_confidence: float = typer.Option(0.9, help="probability an automatic label needs"),
    workers: int = typer.Option(2, help="Ray Train workers"),
    seed: int = typer.Option(0),
) -> None:
    """Cold start for a new category: auto-label -> synthesize -> validate -> assemble ->
    train -> register (a version tagged with the category; the champion gate applies)."""
    from pipelines.coldstart import run_coldstart
    from shopsense.errors import LLMUnavailable, ShopsenseError

    if not reviews.is_file():
        typer.echo(f"error: --reviews {reviews}: no such file", err=True)
        raise typer.Exit(2)
    sets = None if base_sets is None else [x.strip() for x in base_sets.split(",") if x.strip()]
    try:
        result = run_coldstart(category, reviews, budget_minutes=budget_minutes,
                               base_sets=sets, base_per_set=base_per_set,
                               synthetic_per_label=synthetic_per_label, champion=champion,
                               min_confidence=min_confidence, num_workers=workers, seed=seed)
    except LLMUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ShopsenseError:
        raise
    if as_json:
        typer.echo(json.dumps(result, default=str))
        return
    c = result["counts"]
    typer.echo(f"{result['model']} ({'champion' if result['promoted'] else 'not promoted'}: "
               f"{result['decision']}); {c['input']} reviews, auto-labelled "
               f"{c['auto_labelled']} (coverage {result['labeller']['coverage']:.0%}), synthetic "
               f"{c['synthetic_kept']}/{c['synthetic_generated']} kept (AUC "
               f"{result['discriminator_auc']['before']} -> "
               f"{result['discriminator_auc']['after']}), {result['minutes']:.1f} min")


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
    app.command("coldstart")(coldstart_cmd)
