"""The model registry: MLflow (a local sqlite store by default, a server in a cluster).

A model version of ``shopsense-sentiment`` is a pyfunc model whose artifacts hold a shopsense
bundle. Its tags carry the evaluation set's digest and metrics; alias ``champion`` moves only
when a new version beats the current champion on the same held-out data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from shopsense.errors import ModelNotFound
from shopsense.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
PRIMARY_METRIC = "eval_macro_f1"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    uri: str
    bundle_dir: Path


def eval_digest(records: list[dict]) -> str:
    """Digest of an evaluation set (texts and labels, in order): 'the same held-out data'."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.get("text"), r.get("label")], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def client(settings: Settings):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri())
    mlflow.set_registry_uri(settings.tracking_uri())
    return MlflowClient(tracking_uri=settings.tracking_uri(), registry_uri=settings.tracking_uri())


def _experiment(settings: Settings, name: str) -> str:
    import mlflow

    c = client(settings)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(name, artifact_location=settings.artifact_root())
    mlflow.set_experiment(name)
    return exp.experiment_id


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text", required=False),
                       ColSpec("string", "image", required=False)]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score_negative"),
                        ColSpec("double", "score_neutral"), ColSpec("double", "score_positive")]),
    )


def log_and_register(
    settings: Settings,
    *,
    bundle_dir: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    evaluation: dict[str, Any],
    eval_records: list[dict],
    champion_scorer: Callable[[Path], dict] | None = None,
    experiment: str = "shopsense-train",
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log a run, register a model version, and move ``champion`` if it wins.

    ``champion_scorer(bundle_dir) -> evaluation`` re-scores the current champion when its
    recorded evaluation was made on different held-out data.
    """
    import mlflow

    from shopsense.model.pyfunc import SentimentPyfunc

    c = client(settings)
    exp_id = _experiment(settings, experiment)
    digest = eval_digest(eval_records)
    name = settings.model_name
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"eval_digest": digest, **(tags or {})})
        mlflow.log_dict(evaluation, "evaluation.json")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SentimentPyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            signature=_signature(),
            pip_requirements=["shopsense"],
            registered_model_name=name,
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    primary = float(metrics[PRIMARY_METRIC])
    for key, value in {"eval_digest": digest, PRIMARY_METRIC: f"{primary:.6f}",
                       "eval_accuracy": f"{metrics.get('eval_accuracy', 0):.6f}",
                       "run_id": run_id, **(tags or {})}.items():
        c.set_model_version_tag(name, version, key, value)

    decision = decide_champion(settings, version=version, score=primary, digest=digest,
                               champion_scorer=champion_scorer)
    c.set_model_version_tag(name, version, "champion_decision", decision["reason"])
    if decision["promote"]:
        c.set_registered_model_alias(name, CHAMPION, version)
    return {"name": name, "version": version, "run_id": run_id, "eval_digest": digest,
            PRIMARY_METRIC: primary, **decision}


def decide_champion(
    settings: Settings,
    *,
    version: str,
    score: float,
    digest: str,
    champion_scorer: Callable[[Path], dict] | None,
) -> dict[str, Any]:
    c = client(settings)
    name = settings.model_name
    try:
        champ = c.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - MLflow raises RestException when the alias is unset
        return {"promote": True, "previous": None, "reason": "no champion yet"}
    champ_score: float | None = None
    if champ.tags.get("eval_digest") == digest and PRIMARY_METRIC in champ.tags:
        champ_score = float(champ.tags[PRIMARY_METRIC])
    elif champion_scorer is not None:
        resolved = resolve(settings, f"models:/{name}/{champ.version}")
        champ_score = float(champion_scorer(resolved.bundle_dir)["macro_f1"])
    if champ_score is None:
        return {"promote": False, "previous": str(champ.version),
                "reason": f"champion v{champ.version} was scored on other data; not compared"}
    promote = score > champ_score
    verb = "beats" if promote else "does not beat"
    return {
        "promote": promote,
        "previous": str(champ.version),
        "champion_score": champ_score,
        "reason": f"v{version} {PRIMARY_METRIC}={score:.4f} {verb} "
                  f"champion v{champ.version} {champ_score:.4f} on the same held-out data",
    }


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    m = _MODELS_URI.match(uri)
    if not m:
        raise ModelNotFound(
            f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
        )
    return m["name"], m["alias"], m["version"]


def resolve(settings: Settings, uri: str | None = None) -> ResolvedModel:
    """Resolve a ``models:/`` URI (or a local bundle directory) to a local bundle."""
    import mlflow

    uri = uri or settings.default_model_uri()
    local = Path(uri)
    if not uri.startswith("models:/") and (local / "shopsense_model.json").is_file():
        return ResolvedModel(name=local.name, version="local", uri=uri, bundle_dir=local)
    name, alias, version = parse_model_uri(uri)
    c = client(settings)
    try:
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(
            name, version
        )
    except Exception as exc:  # noqa: BLE001 - MLflow's RestException for unknown name/alias
        raise ModelNotFound(f"{uri}: not in the registry at {settings.tracking_uri()}") from exc
    cache = settings.resolved_home() / "models" / name / str(mv.version)
    if not (cache / ".complete").exists():
        if cache.exists():
            shutil.rmtree(cache)
        tmp = cache.with_name(cache.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(tmp)
        )
        tmp.rename(cache)
        (cache / ".complete").touch()
    found = [p.parent for p in cache.rglob("shopsense_model.json")]
    if not found:
        raise ModelNotFound(f"{uri}: version {mv.version} holds no shopsense bundle")
    bundle = found[0]
    return ResolvedModel(name=name, version=str(mv.version), uri=uri, bundle_dir=bundle)


def has_champion(settings: Settings) -> bool:
    try:
        client(settings).get_model_version_by_alias(settings.model_name, CHAMPION)
        return True
    except Exception:  # noqa: BLE001
        return False


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    c = client(settings)
    name = settings.model_name
    try:
        rm = c.get_registered_model(name)
    except Exception:  # noqa: BLE001
        return []
    aliases: dict[str, list[str]] = {}
    for alias, ver in (rm.aliases or {}).items():
        aliases.setdefault(str(ver), []).append(alias)
    out = []
    for mv in c.search_model_versions(f"name='{name}'"):
        recipe = mv.tags.get("recipe")
        if recipe is None and mv.run_id:
            recipe = c.get_run(mv.run_id).data.params.get("recipe")
        out.append({"recipe": recipe, "version": mv.version, "aliases": aliases.get(str(mv.version), []),
                    PRIMARY_METRIC: mv.tags.get(PRIMARY_METRIC),
                    "decision": mv.tags.get("champion_decision"),
                    "created": mv.creation_timestamp})
    return sorted(out, key=lambda r: int(r["version"]))
