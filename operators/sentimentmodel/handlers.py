"""The kopf handlers. :func:`register` puts them into a kopf registry (the default one for
``kopf run``, a fresh one in tests), so importing this module changes nothing.

Handler ids are stored keys (kopf keeps progress under them): do not rename them.

* ``reconcile_sentimentmodel`` (create, spec update, resume): resolve the model if needed,
  decide, converge the owned objects, write status.
* ``rollout_tick`` (timer, every ``tick_seconds``): poll the registry when due (with backoff
  after failures), measure the error rate during a rollout, advance the rollout.
* ``sentimentmodel_deleted`` (optional, no finalizer): the owned objects go with the resource
  through their ownerReferences (Kubernetes' garbage collector); this only forgets metrics.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import kopf
from pydantic import ValidationError

from operators.sentimentmodel import observe, render, rollout
from operators.sentimentmodel.kube import KubeClient
from operators.sentimentmodel.registry import RegistryClient, RegistryError
from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import GROUP, PLURAL, VERSION, SentimentModelSpec, parse_spec

log = logging.getLogger("shopsense.operator")
PROMOTE_ANNOTATION = "shopsense.io/promote"


def merge_diff(old: Any, new: Any) -> Any:
    """A JSON merge patch that turns ``old`` into ``new`` (removed keys become ``None``)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for k in old.keys() - new.keys():
        out[k] = None
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif old[k] != v:
            out[k] = merge_diff(old[k], v)
    return out


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def converge(kube: KubeClient, body: dict[str, Any], spec: SentimentModelSpec,
                   status: dict[str, Any], cfg: OperatorSettings, *,
                   cleanup: bool) -> list[tuple[str, str, str]]:
    """Make the owned objects match ``desired_tracks(status)``. ``cleanup``: also delete what
    should not exist (a finished canary, a disabled Ingress). Returns (kind, name, action)."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    stable_v, canary = rollout.desired_tracks(status)
    done: list[tuple[str, str, str]] = []

    async def apply(obj: dict[str, Any]) -> None:
        action = await kube.apply(obj)
        observe.APPLIES.labels(obj["kind"], action).inc()
        if action != "unchanged":
            done.append((obj["kind"], obj["metadata"]["name"], action))

    async def delete(kind: str, obj_name: str) -> None:
        if await kube.delete(kind, ns, obj_name):
            observe.APPLIES.labels(kind, "deleted").inc()
            done.append((kind, obj_name, "deleted"))

    if stable_v:
        for obj in render.render_track(body, spec, stable_v, cfg, track=render.STABLE):
            await apply(obj)
        if cleanup and not spec.ingress.enabled:
            await delete("Ingress", name)
    canary_name = render.object_name(name, render.CANARY)
    if canary:
        version, weight = canary
        await apply(render.render_rayservice(body, spec, version, cfg, track=render.CANARY))
        await apply(render.render_service(body, cfg, track=render.CANARY))
        if spec.ingress.enabled and weight > 0:
            await apply(render.render_ingress(body, spec, cfg, track=render.CANARY,
                                              weight=weight))
        observe.CANARY_WEIGHT.labels(ns, name).set(weight)
    elif cleanup:
        for kind in ("Ingress", "Service", "RayService"):
            await delete(kind, canary_name)
        observe.CANARY_WEIGHT.labels(ns, name).set(0)
    return done


async def reconcile(*, body: Any, status: Any, patch: kopf.Patch, memo: kopf.Memo,
                    logger: Any, handler: str, force_poll: bool, cleanup: bool) -> None:
    cfg: OperatorSettings = memo.config
    kube: KubeClient = memo.kube
    mlflow: RegistryClient = memo.mlflow
    gate: observe.ErrorRateGate = memo.gate
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
        spec.model.parts  # noqa: B018 - validates the URI
    except (ValidationError, ValueError) as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    old = _plain(status)
    now = _now()

    # The registry: polled when due (the poll interval, or a backoff after failures), at once
    # when nothing is deployed yet or the model reference changed.
    target = reg_error = None
    reg = old.get("registry") or {}
    next_check = rollout.parse_time(reg.get("nextCheckTime"))
    due = (force_poll or old.get("resolvedVersion") is None or next_check is None
           or now >= next_check or reg.get("uri") != spec.model.uri)
    if due:
        try:
            target = await mlflow.resolve(spec.model, url=render.registry_url(spec, cfg))
            observe.REGISTRY_POLLS.labels("ok").inc()
        except RegistryError as exc:
            reg_error = str(exc)
            observe.REGISTRY_POLLS.labels(type(exc).__name__).inc()
            logger.warning("registry: %s", reg_error)

    stable_obj = await kube.get("RayService", ns, name)
    canary_obj = await kube.get("RayService", ns, render.object_name(name, render.CANARY))
    stable_h = rollout.rayservice_health(stable_obj)
    canary_h = rollout.rayservice_health(canary_obj)

    measured = observe.ErrorRate(None, note="not measured")
    ro = old.get("rollout") or {}
    if ro.get("stage") in ("Stepping", "Analysing") and not spec.rollout.skip_error_rate_gate:
        track = render.CANARY if ro.get("strategy") == "Canary" else render.STABLE
        measured = await gate.measure(
            url=spec.rollout.prometheus_url or cfg.prometheus_url, namespace=ns, name=name,
            track=track, version=ro["version"], window=spec.rollout.error_rate_window)

    obs = rollout.Observation(
        now=now, generation=meta.get("generation"), target=target, registry_error=reg_error,
        stable=stable_h, canary=canary_h, error_rate=measured.rate,
        error_rate_note=measured.note, requests=measured.requests, errors=measured.errors,
        promote=(meta.get("annotations") or {}).get(PROMOTE_ANNOTATION))
    plan = rollout.decide(spec, old, obs, max_backoff_s=cfg.max_backoff_s)
    new = plan.status
    if due and (target is not None or reg_error is not None):
        new.setdefault("registry", {})["uri"] = spec.model.uri
    new["endpoint"] = render.endpoint(body, spec, cfg)

    changes = await converge(kube, body, spec, new, cfg,
                             cleanup=cleanup or bool(ro) and not new.get("rollout"))
    for kind, obj_name, action in changes:
        kopf.info(body, reason=action.capitalize(), message=f"{kind} {obj_name} {action}")
    for type_, reason, message in plan.events:
        kopf.event(body, type=type_, reason=reason, message=message)
        logger.info("%s: %s", reason, message)
        if reason in ("Promoted", "RolledBack"):
            observe.ROLLOUTS.labels(spec.rollout.strategy, reason).inc()

    diff = merge_diff(old, new)
    if diff:
        patch.setdefault("status", {}).update(diff)
    if new.get("resolvedVersion"):
        observe.SERVED.labels(ns, name).set(float(new["resolvedVersion"]))
    observe.READY.labels(ns, name).set(1.0 if rollout.is_true(new, rollout.READY) else 0.0)
    observe.RECONCILES.labels(handler, "ok").inc()


def _mlflow_auth_headers() -> dict[str, str]:
    """MLflow's documented client variables (from the chart's mlflow Secret), if set."""
    import base64
    import os

    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, pw = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get(
        "MLFLOW_TRACKING_PASSWORD")
    if user and pw:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}
    return {}


def _plain(value: Any) -> Any:
    """kopf's body views -> plain dicts and lists."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register the operator's handlers into ``registry``, configured by ``config``."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure_operator(settings: kopf.OperatorSettings, memo: kopf.Memo,
                                 **_: Any) -> None:
        cfg = memo.setdefault("config", config)
        # Progress and the last-handled spec live in annotations, so the status schema stays
        # strict (no kopf-private keys in .status).
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="shopsense.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="shopsense.io", key="last-handled-configuration")
        settings.peering.name = cfg.peering
        settings.peering.standalone = cfg.standalone
        settings.peering.mandatory = not cfg.standalone
        settings.posting.level = logging.INFO
        # The resource is fixed: no CRD/namespace scanning, so RBAC needs no list on them.
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
        if memo.get("kube") is None:
            memo.kube = KubeClient.from_kopf()
        if memo.get("mlflow") is None:
            memo.mlflow = RegistryClient(timeout_s=cfg.registry_timeout_s,
                                         headers=_mlflow_auth_headers())
        if memo.get("gate") is None:
            memo.gate = observe.ErrorRateGate(cfg)
        if cfg.metrics_port and not memo.get("metrics_started"):
            from prometheus_client import start_http_server

            start_http_server(cfg.metrics_port, registry=observe.REGISTRY)
            memo.metrics_started = True

    @kopf.on.cleanup(registry=registry)
    async def close_clients(memo: kopf.Memo, **_: Any) -> None:
        for key in ("kube", "mlflow", "gate"):
            client = memo.get(key)
            if client is not None and memo.get("owns_clients", True):
                await client.aclose()

    @kopf.on.create(*resource, id="reconcile_sentimentmodel", registry=registry)
    @kopf.on.update(*resource, id="reconcile_sentimentmodel", field="spec", registry=registry)
    @kopf.on.resume(*resource, id="reconcile_sentimentmodel", registry=registry)
    async def reconcile_sentimentmodel(body: kopf.Body, status: kopf.Status, patch: kopf.Patch,
                                       memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await reconcile(body=body, status=status, patch=patch, memo=memo, logger=logger,
                        handler="reconcile_sentimentmodel", force_poll=True, cleanup=True)

    @kopf.timer(*resource, id="rollout_tick", interval=config.tick_seconds, registry=registry)
    async def rollout_tick(body: kopf.Body, status: kopf.Status, patch: kopf.Patch,
                           memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await reconcile(body=body, status=status, patch=patch, memo=memo, logger=logger,
                        handler="rollout_tick", force_poll=False, cleanup=False)

    @kopf.on.delete(*resource, id="sentimentmodel_deleted", optional=True, registry=registry)
    async def sentimentmodel_deleted(name: str, namespace: str, logger: Any, **_: Any) -> None:
        observe.forget(namespace, name)
        logger.info("deleted; its RayService, Service and Ingress go with it (ownerReferences)")
