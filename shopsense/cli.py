"""The ``shopsense`` command. Sub-commands of deployables are found through the
``shopsense.commands`` entry points (each a ``register(app)`` function), so this core module
never imports ``services``, ``operators`` or ``pipelines``."""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from shopsense.errors import ShopsenseError
from shopsense.settings import get_settings

app = typer.Typer(
    help="shopsense: multimodal review sentiment. Train, evaluate, register and serve models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="The labelled review sets: list them, export them.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions in the MLflow registry.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

log = logging.getLogger("shopsense")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False,
                              rich_tracebacks=False)],
    )
    for noisy in ("httpx", "urllib3", "alembic", "mlflow", "filelock", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def train(
    recipe: str = typer.Option("full", help="full: the best CPU model (~25 min); demo: ~2 min"),
    output: Optional[Path] = typer.Option(None, help="bundle directory (default under home)"),
    register: bool = typer.Option(True, help="log to MLflow, register, maybe promote"),
    epochs: Optional[float] = typer.Option(None, help="override the recipe's epochs"),
    max_train_per_set: Optional[int] = typer.Option(None, help="cap texts per training set"),
    max_eval_per_set: Optional[int] = typer.Option(None, help="cap texts per held-out set"),
    train_sets: Optional[str] = typer.Option(None, help="comma-separated set names"),
    eval_sets: Optional[str] = typer.Option(None, help="comma-separated held-out set names"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Fine-tune the multimodal classifier (LoRA on MiniLM), evaluate on held-out real data,
    register a version of the model and make it champion if it beats the current one."""
    from datetime import datetime, timezone

    from shopsense.model.train import recipe as make_recipe
    from shopsense.model.train import train as run_train

    s = get_settings()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    overrides: dict = {"data_dir": s.data_dir,
                       "output_dir": output or s.resolved_home() / "bundles" / f"{recipe}-{stamp}"}
    for key, val in (("epochs", epochs), ("max_train_per_set", max_train_per_set),
                     ("max_eval_per_set", max_eval_per_set)):
        if val is not None:
            overrides[key] = val
    if train_sets:
        overrides["train_sets"] = [x.strip() for x in train_sets.split(",") if x.strip()]
    if eval_sets:
        overrides["eval_sets"] = [x.strip() for x in eval_sets.split(",") if x.strip()]
    try:
        cfg = make_recipe(recipe, **overrides)
    except ValueError as exc:
        fail(str(exc))
    result = run_train(cfg)
    summary = {
        "bundle": str(result.bundle_dir),
        "recipe": recipe,
        "train_samples": result.train_samples,
        "seconds": round(result.seconds, 1),
        "samples_per_second": round(result.samples_per_second, 2),
        "eval": {k: result.evaluation[k] for k in ("n", "accuracy", "macro_f1")},
        "eval_per_set": result.evaluation.get("per_set", {}),
    }
    if register:
        from shopsense import registry
        from shopsense.model.classifier import Predictor
        from shopsense.model.train import evaluate_held_out

        def rescore(bundle: Path) -> dict:
            return evaluate_held_out(Predictor.from_bundle(bundle), result.eval_records)

        summary["registry"] = registry.log_and_register(
            s,
            bundle_dir=result.bundle_dir,
            params={**result.params, "recipe": recipe},
            metrics=result.metrics,
            evaluation=result.evaluation,
            eval_records=result.eval_records,
            champion_scorer=rescore,
            tags={"recipe": recipe},
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        log.info("trained in %.0fs: held-out accuracy %.3f macro-F1 %.3f", result.seconds,
                 result.evaluation["accuracy"], result.evaluation["macro_f1"])
        if register:
            reg = summary["registry"]
            log.info("registered %s v%s: %s", reg["name"], reg["version"], reg["reason"])


@app.command()
def prepare(
    recipe: str = typer.Option("demo", help="recipe used when the registry has no champion"),
) -> None:
    """Make sure a champion model exists: train one with RECIPE when the registry has none."""
    from shopsense import registry

    s = get_settings()
    if registry.has_champion(s):
        r = registry.resolve(s)
        log.info("registry has %s@champion = v%s; nothing to do", s.model_name, r.version)
        return
    log.info("no champion in %s: training the %s recipe", s.tracking_uri(), recipe)
    train(recipe=recipe, output=None, register=True, epochs=None, max_train_per_set=None,
          max_eval_per_set=None, train_sets=None, eval_sets=None, as_json=False)


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data", help="JSONL: text, label, optional image, category"),
    model: Optional[str] = typer.Option(None, help="models:/name@alias, models:/name/N or a bundle dir"),
    baseline: Optional[str] = typer.Option(None, help="keyword | vader | llm instead of a model "
                                           "(llm: the LLM's zero-shot label-word logits)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    batch_size: int = typer.Option(64, help="items per forward pass"),
) -> None:
    """Score a labelled JSONL file (the stable evaluation contract)."""
    from shopsense.evaluate import evaluate_records, read_eval_file

    records = read_eval_file(data)
    if baseline is not None and model is not None:
        fail("--model and --baseline exclude each other")
    if baseline == "llm":
        if any(r.get("image") for r in records):
            log.warning("baseline llm reads text only; images are ignored")
        result = _evaluate_llm(records)
    elif baseline is not None:
        from shopsense.baselines import BASELINES

        if baseline not in BASELINES:
            fail(f"unknown baseline {baseline!r}; choose keyword, vader or llm")
        if any(r.get("image") for r in records):
            log.warning("baseline %s reads text only; images are ignored", baseline)
        fn = BASELINES[baseline]
        result = evaluate_records(records, lambda texts, _imgs: fn([t or "" for t in texts]),
                                  model={"name": f"baseline:{baseline}", "version": None})
    else:
        from shopsense import registry
        from shopsense.model.classifier import Predictor
        from shopsense.model.train import predict_in_batches

        s = get_settings()
        resolved = registry.resolve(s, model)
        images = _load_eval_images(records, data.parent)
        predictor = Predictor.from_bundle(resolved.bundle_dir)
        result = evaluate_records(
            records,
            lambda texts, imgs: predict_in_batches(predictor, list(texts), list(imgs),
                                                   batch_size=batch_size,
                                                   progress=sys.stderr.isatty()),
            model={"name": resolved.name, "version": resolved.version, "uri": resolved.uri},
            images=images,
        )
    if as_json:
        typer.echo(json.dumps(result))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{result['model']['name']} on {data.name} (n={result['n']})")
        for col in ("label", "precision", "recall", "f1", "support"):
            t.add_column(col)
        for lbl, m in result["per_class"].items():
            t.add_row(lbl, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                      str(m["support"]))
        Console().print(t)
        typer.echo(f"accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}")


def _evaluate_llm(records: list[dict]) -> dict:
    """The evaluation contract with the LLM's zero-shot judgement (labels it has made before
    for the same text come from the teacher-label cache)."""
    from shopsense.evaluate import evaluate_records
    from shopsense.llm.server import llm_endpoint
    from shopsense.llm.teacher import teacher_labeller, teacher_labels
    from shopsense.text import review_content

    with llm_endpoint() as ep:
        labeller, cache = teacher_labeller(ep), teacher_labels(ep)
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(desc="LLM", unit="text")

        def tick(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(1)

        texts = [review_content(r.get("title"), r["text"]) if r.get("text") else None
                 for r in records]
        try:
            return evaluate_records(
                records, lambda _t, _i: labeller.proba(texts, cache=cache, progress=tick),
                model={"name": "baseline:llm", "version": None, "teacher": ep.identity})
        finally:
            if bar is not None:
                bar.close()


def _load_eval_images(records: list[dict], base: Path) -> list:
    from shopsense.images import decode_image, load_image_bytes

    s = get_settings()
    out = []
    for i, rec in enumerate(records, 1):
        ref = rec.get("image")
        if not ref:
            out.append(None)
            continue
        try:
            if ref.startswith(("http://", "https://", "data:")):
                raw = load_image_bytes(ref, s.images)
            else:
                path = Path(ref[len("file://"):] if ref.startswith("file://") else ref)
                raw = (path if path.is_absolute() else base / path).read_bytes()
            out.append(decode_image(raw, max_bytes=s.images.max_bytes,
                                    max_pixels=s.images.max_pixels))
        except OSError as exc:
            raise ShopsenseError(f"record {i}: image {ref!r}: {exc.strerror or exc}") from exc
        except ShopsenseError as exc:
            raise ShopsenseError(f"record {i}: image {ref!r}: {exc}") from exc
    return out


@data_app.command("sets")
def data_sets() -> None:
    """List the labelled sets the loaders know, with counts per label."""
    from collections import Counter

    from shopsense.data.loaders import SET_NAMES, load_set

    s = get_settings()
    for name in SET_NAMES:
        reviews = load_set(name, s.data_dir)
        counts = Counter(r.label for r in reviews)
        typer.echo(f"{name:22s} {len(reviews):6d}  " +
                   "  ".join(f"{k}={counts.get(k, 0)}" for k in ("negative", "neutral", "positive")))


@data_app.command("export-eval")
def data_export_eval(
    sets: str = typer.Option(..., "--sets", help="comma-separated set names"),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (evaluation contract)"),
    limit: Optional[int] = typer.Option(None, help="at most this many per set (seeded sample)"),
) -> None:
    """Write labelled sets as an evaluation file: one {text, label, category} per line."""
    from shopsense.model.train import load_labelled

    s = get_settings()
    rows = load_labelled([x.strip() for x in sets.split(",") if x.strip()], s.data_dir, limit, 7)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"text": r["text"], "label": r["label"],
                                 "category": r["category"]}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    typer.echo(f"wrote {len(rows)} records to {out}")


@data_app.command("import")
def data_import(
    sets: str = typer.Option(..., "--sets", help="comma-separated set names (see `data sets`)"),
    to: Optional[str] = typer.Option(None, "--to", help="dataset URI: file://DIR/PREFIX or "
                                     "s3://bucket/prefix (default: the store, imported/<sets>)"),
) -> None:
    """Import labelled sets as one dataset (reviews.jsonl + manifest.json) in the object store.

    The write is atomic: a failure leaves any previous dataset at that prefix intact."""
    from shopsense.data.dataset import DatasetURIError, open_dataset_uri, write_dataset
    from shopsense.data.loaders import load_set

    s = get_settings()
    names = [x.strip() for x in sets.split(",") if x.strip()]
    reviews = [r for name in names for r in load_set(name, s.data_dir)]
    uri = to or f"{s.default_store_uri().rstrip('/')}/imported/{'+'.join(names)}"
    try:
        store, prefix = open_dataset_uri(uri, s)
    except DatasetURIError as exc:
        fail(f"--to: {exc}")
    manifest = write_dataset(store, prefix, reviews, name="+".join(names),
                             provenance=[{"command": "shopsense data import", "sets": names,
                                          "data_dir": s.data_dir.name}])
    typer.echo(f"wrote {manifest.count} reviews to {uri} (digest {manifest.digest[:12]})")


@models_app.command("list")
def models_list() -> None:
    """Versions of the model with their aliases, score and champion decision."""
    from shopsense import registry

    s = get_settings()
    rows = registry.list_versions(s)
    if not rows:
        typer.echo(f"no versions of {s.model_name} in {s.tracking_uri()}")
    for r in rows:
        typer.echo(f"v{r['version']:<4} {','.join(r['aliases']) or '-':12s} "
                   f"macro_f1={r['eval_macro_f1']}  {r['decision'] or ''}")


def _load_plugins() -> None:
    for ep in entry_points(group="shopsense.commands"):
        try:
            ep.load()(app)
        except ImportError as exc:  # a deployable's optional dependency is missing
            log.debug("sub-command %s unavailable: %s", ep.name, exc)


def _quiet_libraries() -> None:
    """Library chatter (deprecation notices, weight-loading bars) is not for our users."""
    import os
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def main() -> None:
    _quiet_libraries()
    _load_plugins()
    try:
        app(prog_name="shopsense")
    except ShopsenseError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        typer.echo(f"error: invalid setting {where}: {first.get('msg')}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
