"""The kopf handlers. :func:`register` puts them into a kopf registry (the default one for
``kopf run``, a fresh one in tests), so importing this module changes nothing.

Handler ids are stored keys (kopf keeps progress under them): do not rename them.

* ``reconcile_sentimentmodel`` (create, spec update, resume): resolve the model if needed,
  decide, converge the owned objects, write status.
* ``rollout_tick`` (timer, every ``tick_seconds``): the clock: poll the registry when due
  (with backoff after failures), measure the error rate during a rollout, advance the rollout
  when a pause or a timeout is over.
* ``rayservice_changed`` (event on the RayServices the operator owns): KubeRay wrote a status:
  reconcile the owner at once (no polling for readiness).
* ``sentimentmodel_deleted`` (optional, no finalizer of ours): the owned objects go with the
  resource through their ownerReferences (Kubernetes' garbage collector, blockOwnerDeletion);
  this only forgets metrics.

A spec the operator will not act on (see :mod:`policy`) gets ``Degraded=True`` with the
reason and an Event; nothing is rendered, patched or deleted for it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import kopf
from pydantic import ValidationError

from operators.sentimentmodel import observe, policy, render, rollout
from operators.sentimentmodel.kube import KubeClient, KubeError, NotOwned
from operators.sentimentmodel.registry import RegistryClient, RegistryError
from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import GROUP, PLURAL, VERSION, SentimentModelSpec, parse_spec

log = logging.getLogger("shopsense.operator")
PROMOTE_ANNOTATION = "shopsense.io/promote"
OWNERSHIP = "ChildrenOwned"


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
                   status: dict[str, Any], cfg: OperatorSettings, *, cleanup: bool,
                   download_uris: dict[str, str] | None = None,
                   ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Make the owned objects match ``desired_tracks(status)``. ``cleanup``: also delete what
    should not exist (a finished canary, a disabled route). Returns the changes (kind, name,
    action) and the conflicts (children of another owner, left alone)."""
    ns, name, uid = (body["metadata"]["namespace"], body["metadata"]["name"],
                     body["metadata"]["uid"])
    stable_v, canary = rollout.desired_tracks(status)
    done: list[tuple[str, str, str]] = []
    conflicts: list[str] = []
    if not stable_v:
        return done, conflicts
    wanted = render.render_all(body, spec, cfg, stable=stable_v, canary=canary,
                               download_uris=download_uris)
    for obj in wanted:
        try:
            action = await kube.apply(obj)
        except NotOwned as exc:
            conflicts.append(str(exc))
            observe.APPLIES.labels(obj["kind"], "conflict").inc()
            continue
        observe.APPLIES.labels(obj["kind"], action).inc()
        if action != "unchanged":
            done.append((obj["kind"], obj["metadata"]["name"], action))
    observe.CANARY_WEIGHT.labels(ns, name).set(canary[1] if canary else 0)
    if cleanup:
        keep = {(o["kind"], o["metadata"]["name"]) for o in wanted}
        for kind, suffix in render.CHILDREN:
            obj_name = name + suffix
            if (kind, obj_name) in keep:
                continue
            try:
                if await kube.delete(kind, ns, obj_name, owner_uid=uid):
                    observe.APPLIES.labels(kind, "deleted").inc()
                    done.append((kind, obj_name, "deleted"))
            except NotOwned:
                pass  # not ours to delete, and not wanted: nothing to say
            except KubeError as exc:
                if exc.status != 404:  # a kind the cluster does not serve (no Gateway API)
                    raise
    return done, conflicts


def _invalid(st: dict[str, Any], problems: list[tuple[str, str]], now: datetime,
             generation: int | None) -> None:
    reason = problems[0][0] if len(problems) == 1 else "InvalidSpec"
    message = "; ".join(m for _, m in problems)
    st["phase"] = "Failed"
    rollout.set_condition(st, rollout.DEGRADED, True, reason, message, now, generation)
    rollout.set_condition(st, rollout.PROGRESSING, False, reason,
                          "nothing is rendered until the spec is fixed", now, generation)
    if rollout.condition(st, rollout.READY) is None:
        rollout.set_condition(st, rollout.READY, False, reason, message, now, generation)
    if generation is not None:
        st["observedGeneration"] = generation


async def _adapter_uris(memo: kopf.Memo, spec: SentimentModelSpec, status: dict[str, Any],
                        key: tuple[str, str], registry: Any) -> dict[str, str]:
    """Artifact locations of the versions the tracks serve (LoRA mode), cached per version:
    kept in the operator's memory, not in the status (registry answers never reach it)."""
    cache: dict[str, str] = memo.adapter_uris.setdefault(key, {})
    if not render.lora_mode(spec):
        return cache
    stable_v, canary = rollout.desired_tracks(status)
    for v in {stable_v, canary[0] if canary else None} - {None}:
        if v not in cache:
            cache[v] = await memo.mlflow.download_uri(spec.model, v, registry=registry)
    return cache


async def reconcile(*, body: Any, status: Any, patch: Any, memo: kopf.Memo,
                    logger: Any, handler: str, force_poll: bool, cleanup: bool) -> None:
    lock: asyncio.Lock = memo.locks.setdefault(
        (body["metadata"]["namespace"], body["metadata"]["name"]), asyncio.Lock())
    async with lock:
        # Another handler (a RayService event) may have written the status since this one's
        # body was taken: start from what the API server holds now.
        fresh = await memo.kube.get("SentimentModel", body["metadata"]["namespace"],
                                    body["metadata"]["name"])
        if fresh is not None and fresh["metadata"].get("uid") == body["metadata"].get("uid"):
            body, status = fresh, fresh.get("status") or {}
        await _reconcile(body=body, status=status, patch=patch, memo=memo, logger=logger,
                         handler=handler, force_poll=force_poll, cleanup=cleanup)


async def _reconcile(*, body: Any, status: Any, patch: Any, memo: kopf.Memo,
                     logger: Any, handler: str, force_poll: bool, cleanup: bool) -> None:
    cfg: OperatorSettings = memo.config
    kube: KubeClient = memo.kube
    mlflow: RegistryClient = memo.mlflow
    gate: observe.ErrorRateGate = memo.gate
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    old = _plain(status)
    now = _now()
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
        problems = policy.problems(spec, cfg)
    except ValidationError as exc:
        problems = [("InvalidSpec", f"the spec does not parse: {exc.error_count()} error(s), "
                     f"first at {'.'.join(str(x) for x in exc.errors()[0]['loc'])}")]
    if problems:
        new = dict(old)
        _invalid(new, problems, now, meta.get("generation"))
        diff = merge_diff(old, new)
        if diff:
            patch.setdefault("status", {}).update(diff)
            message = "; ".join(m for _, m in problems)
            kopf.warn(body, reason="InvalidSpec", message=message)
            logger.warning("not acting on the spec: %s", message)
        observe.RECONCILES.labels(handler, "invalid").inc()
        return
    registry = render.registry_for(spec, cfg)

    # The registry: polled when due (the poll interval, or a backoff after failures), at once
    # when nothing is deployed yet or the model reference changed.
    target = reg_error = None
    reg = old.get("registry") or {}
    next_check = rollout.parse_time(reg.get("nextCheckTime"))
    due = (force_poll or old.get("resolvedVersion") is None or next_check is None
           or now >= next_check or reg.get("uri") != spec.model.uri)
    if due:
        try:
            target = await mlflow.resolve(spec.model, registry=registry)
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

    try:
        uris = await _adapter_uris(memo, spec, new, (ns, name), registry)
    except RegistryError as exc:
        # the adapter's location is needed to render: change nothing, say why, retry
        rollout.set_condition(new, rollout.REGISTRY, False, "AdapterUnresolved", str(exc),
                              now, meta.get("generation"))
        uris = None
    changes: list[tuple[str, str, str]] = []
    conflicts: list[str] = []
    if uris is not None:
        try:
            changes, conflicts = await converge(
                kube, body, spec, new, cfg, download_uris=uris,
                cleanup=cleanup or bool(ro) and not new.get("rollout"))
        except ValueError as exc:  # an adapter outside the LLM app's loading path
            rollout.set_condition(new, rollout.DEGRADED, True, "AdapterNotLoadable", str(exc),
                                  now, meta.get("generation"))
        stable_v = rollout.desired_tracks(new)[0]
        if render.lora_mode(spec) and stable_v in uris:
            new["adapter"] = render.adapter_model_id(spec, uris[stable_v])
    if conflicts:
        rollout.set_condition(new, OWNERSHIP, False, "NotOwned", "; ".join(conflicts), now,
                              meta.get("generation"))
        if rollout.condition(old, OWNERSHIP) != rollout.condition(new, OWNERSHIP):
            kopf.warn(body, reason="NotOwned", message="; ".join(conflicts))
    elif rollout.condition(new, OWNERSHIP) is not None:
        rollout.set_condition(new, OWNERSHIP, True, "Owned",
                              "every child object is controlled by this SentimentModel", now,
                              meta.get("generation"))
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
    if target is not None or reg_error is not None:
        observe.REGISTRY_UP.labels(ns, name).set(0.0 if reg_error is not None else 1.0)
    started = rollout.parse_time((new.get("rollout") or {}).get("startedAt"))
    observe.ROLLOUT_STARTED.labels(ns, name).set(started.timestamp() if started else 0.0)
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
        # kopf patches the SentimentModel's status and annotations; the children go through
        # our KubeClient (server-side apply, field manager shopsense-operator)
        settings.watching.server_timeout = 300
        settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
        # A deleted SentimentModel waits for its rollout timer to stop. A tick caught mid-way
        # (a few API calls) gets a few seconds to finish, and is checked again every second,
        # not after kopf's default 60 s.
        settings.background.instant_exit_timeout = 5.0
        settings.background.cancellation_polling = 1.0
        if memo.get("kube") is None:
            memo.kube = KubeClient.from_kopf()
        if memo.get("mlflow") is None:
            memo.mlflow = RegistryClient(timeout_s=cfg.registry_timeout_s,
                                         headers=_mlflow_auth_headers())
        if memo.get("gate") is None:
            memo.gate = observe.ErrorRateGate(cfg)
        memo.setdefault("locks", {})
        memo.setdefault("adapter_uris", {})
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

    @kopf.on.event("ray.io", "v1", "rayservices", id="rayservice_changed",
                   labels={"app.kubernetes.io/managed-by": render.MANAGED_BY},
                   registry=registry)
    async def rayservice_changed(body: kopf.Body, type: str | None, memo: kopf.Memo,
                                 logger: Any, **_: Any) -> None:
        """KubeRay wrote a RayService's status (or it went away): look at its owner now."""
        ref = next((r for r in body.get("metadata", {}).get("ownerReferences") or []
                    if r.get("controller") and r.get("kind") == "SentimentModel"), None)
        if ref is None or type is None:  # type None: the initial listing
            return
        kube: KubeClient = memo.kube
        ns = body["metadata"]["namespace"]
        owner = await kube.get("SentimentModel", ns, ref["name"])
        if owner is None or owner["metadata"].get("uid") != ref.get("uid") or \
                owner["metadata"].get("deletionTimestamp"):
            return
        patch: dict[str, Any] = {}
        await reconcile(body=owner, status=owner.get("status") or {}, patch=patch, memo=memo,
                        logger=logger, handler="rayservice_changed", force_poll=False,
                        cleanup=False)
        if patch.get("status"):
            await kube.patch_status("SentimentModel", ns, ref["name"], patch["status"])

    @kopf.on.delete(*resource, id="sentimentmodel_deleted", optional=True, registry=registry)
    async def sentimentmodel_deleted(name: str, namespace: str, logger: Any, **_: Any) -> None:
        observe.forget(namespace, name)
        logger.info("deleted; its RayServices, Services, route and NetworkPolicy go with it "
                    "(ownerReferences)")
