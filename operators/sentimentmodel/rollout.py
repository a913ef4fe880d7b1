"""The reconciliation logic as plain functions: what the registry, KubeRay and Prometheus say
(an :class:`Observation`) plus the current status -> the next status (a :class:`Plan`).

No I/O here. The handlers observe, call :func:`decide`, then make the cluster match
:func:`desired_tracks` of the new status. Because the desired objects are a function of
(spec, status) alone, every handler run is idempotent: running it twice applies nothing new.

Rollout, strategy ``Canary`` (operator-managed)::

    idle --new version--> Starting   (canary RayService NAME-canary, no traffic)
    Starting --canary Ready--> Stepping, step 0 (canary Ingress at steps[0].weight %)
    Stepping --pause held, healthy--> next step ... --last step--> Promoting
             (stable RayService patched to the new version: KubeRay swaps clusters)
    Promoting --stable Ready on the new version--> idle, canary deleted, version promoted
    any stage --not Ready in time | failed | error rate too high--> rolled back:
             canary deleted, stable kept (or put back), Degraded=True with the reason,
             the version remembered as rejectedVersion until the alias moves again.

Rollout, strategy ``KubeRay``: the stable RayService is patched at once; KubeRay's
``NewCluster`` upgrade keeps the old cluster serving until the new one is healthy
(Starting), then the error rate is watched for ``analysisSeconds`` (Analysing); a failure
patches the previous version back, which makes KubeRay drop the pending cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from operators.sentimentmodel.spec import SentimentModelSpec

READY, PROGRESSING, DEGRADED, REGISTRY = "Ready", "Progressing", "Degraded", "RegistryAvailable"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, REGISTRY)


@dataclass(frozen=True)
class RayServiceHealth:
    """What one RayService's status says (see :func:`rayservice_health`)."""

    exists: bool = False
    ready: bool = False              # serving: KubeRay's Ready condition (or Running status)
    upgrading: bool = False          # a pending cluster exists (NewCluster upgrade running)
    spec_version: str | None = None  # the model version its spec asks for
    settled: bool = True             # status.observedGeneration caught up with the spec
    failed: str | None = None        # why an application failed, if it did

    def serving(self, version: str) -> bool:
        return (self.exists and self.ready and self.settled and not self.upgrading
                and self.spec_version == version)


@dataclass(frozen=True)
class Observation:
    now: datetime
    generation: int | None = None
    target: str | None = None          # registry version (None: not polled this time)
    registry_error: str | None = None  # why the poll failed
    stable: RayServiceHealth = RayServiceHealth()
    canary: RayServiceHealth = RayServiceHealth()
    error_rate: float | None = None    # 5xx share of the new version's track (None: unknown)
    error_rate_note: str | None = None  # why it is unknown
    requests: float = 0.0              # /v1/ requests the track answered in the window
    errors: float = 0.0                # of which 5xx
    promote: str | None = None         # the shopsense.io/promote annotation


@dataclass
class Plan:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append((type_, reason, message))


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def set_condition(status: dict[str, Any], type_: str, value: bool, reason: str, message: str,
                  now: datetime, generation: int | None) -> None:
    """Set one condition; ``lastTransitionTime`` moves only when the status flips."""
    conds: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []]
    new = {"type": type_, "status": "True" if value else "False", "reason": reason,
           "message": message, "lastTransitionTime": iso(now)}
    if generation is not None:
        new["observedGeneration"] = generation
    for i, c in enumerate(conds):
        if c.get("type") == type_:
            if c.get("status") == new["status"]:
                new["lastTransitionTime"] = c.get("lastTransitionTime", new["lastTransitionTime"])
            conds[i] = new
            break
    else:
        conds.append(new)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    status["conditions"] = sorted(conds, key=lambda c: order.get(c["type"], 99))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def is_true(status: dict[str, Any], type_: str) -> bool:
    c = condition(status, type_)
    return bool(c and c.get("status") == "True")


def desired_tracks(status: dict[str, Any]) -> tuple[str | None, tuple[str, int] | None]:
    """(version for the stable track, (version, traffic weight) for the canary track or None)."""
    stable = status.get("resolvedVersion")
    ro = status.get("rollout") or {}
    if not ro:
        return stable, None
    cand = ro["version"]
    if ro.get("strategy") == "KubeRay":
        return cand, None
    if ro.get("stage") == "Promoting":
        return cand, (cand, int(ro.get("weight") or 0))
    return stable, (cand, int(ro.get("weight") or 0))


def registry_next_check(spec: SentimentModelSpec, failures: int, now: datetime,
                        max_backoff_s: float) -> datetime:
    """The poll interval, doubled per consecutive failure, capped."""
    base = float(spec.rollout.poll_interval_seconds)
    delay = base if failures == 0 else min(base * (2 ** failures), max(max_backoff_s, base))
    return now + timedelta(seconds=delay)


def decide(spec: SentimentModelSpec, status: dict[str, Any], obs: Observation, *,
           max_backoff_s: float = 600.0) -> Plan:
    """The next status (and the events to emit) from the current one and what was observed."""
    st = copy.deepcopy(status or {})
    plan = Plan(st)
    now, gen = obs.now, obs.generation
    if gen is not None:
        st["observedGeneration"] = gen
    _registry(spec, st, obs, plan, max_backoff_s)

    stable_v = st.get("resolvedVersion")
    if stable_v is None:
        _first_deploy(st, obs, plan)
        return plan

    if st.get("rollout"):
        _advance(spec, st, obs, plan, stable_v)
    elif obs.target is not None and obs.target != stable_v:
        if obs.target != st.get("rejectedVersion"):
            _start(spec, st, obs, plan, stable_v)
    elif obs.target is not None and obs.target == stable_v and is_true(st, DEGRADED):
        set_condition(st, DEGRADED, False, "AliasAtStable",
                      f"the registry points at the serving version {stable_v} again", now, gen)
        st.pop("rejectedVersion", None)

    _summarise(spec, st, obs)
    return plan


# -- pieces of decide ------------------------------------------------------------------------

def _registry(spec: SentimentModelSpec, st: dict, obs: Observation, plan: Plan,
              max_backoff_s: float) -> None:
    reg = dict(st.get("registry") or {})
    if obs.registry_error is not None:
        failures = int(reg.get("failures") or 0) + 1
        nxt = registry_next_check(spec, failures, obs.now, max_backoff_s)
        reg.update(failures=failures, message=obs.registry_error, lastCheckTime=iso(obs.now),
                   nextCheckTime=iso(nxt))
        set_condition(st, REGISTRY, False, "RegistryUnavailable",
                      f"{obs.registry_error}; nothing changed; next try at {iso(nxt)}",
                      obs.now, obs.generation)
        if failures == 1:
            plan.event("RegistryUnavailable", obs.registry_error, "Warning")
    elif obs.target is not None:
        nxt = registry_next_check(spec, 0, obs.now, max_backoff_s)
        if int(reg.get("failures") or 0) > 0:
            plan.event("RegistryAvailable", f"{spec.model.uri} -> version {obs.target}")
        reg.update(failures=0, message=f"{spec.model.uri} -> version {obs.target}",
                   lastCheckTime=iso(obs.now), nextCheckTime=iso(nxt))
        set_condition(st, REGISTRY, True, "Resolved", reg["message"], obs.now, obs.generation)
    if reg:
        st["registry"] = reg


def _first_deploy(st: dict, obs: Observation, plan: Plan) -> None:
    now, gen = obs.now, obs.generation
    if obs.target is None:
        st["phase"] = "Pending"
        why = obs.registry_error or "waiting for the registry"
        set_condition(st, READY, False, "NoModelVersion", f"no version resolved yet: {why}",
                      now, gen)
        set_condition(st, PROGRESSING, False, "NoModelVersion", why, now, gen)
        set_condition(st, DEGRADED, obs.registry_error is not None,
                      "RegistryUnavailable" if obs.registry_error else "AsExpected",
                      why, now, gen)
        return
    st["resolvedVersion"] = obs.target
    st["phase"] = "Progressing"
    set_condition(st, READY, False, "Deploying", f"deploying version {obs.target}", now, gen)
    set_condition(st, PROGRESSING, True, "Deploying", f"deploying version {obs.target}", now, gen)
    set_condition(st, DEGRADED, False, "AsExpected", "", now, gen)
    plan.event("Deploying", f"deploying model version {obs.target}")


def _start(spec: SentimentModelSpec, st: dict, obs: Observation, plan: Plan,
           stable_v: str) -> None:
    cand = obs.target
    assert cand is not None
    strategy = spec.rollout.strategy
    st["candidateVersion"] = cand
    st["rollout"] = {"strategy": strategy, "version": cand, "stage": "Starting", "step": 0,
                     "weight": 0, "startedAt": iso(obs.now), "stepStartedAt": iso(obs.now)}
    how = ("canary RayService, no traffic yet" if strategy == "Canary"
           else "KubeRay NewCluster upgrade of the RayService")
    set_condition(st, PROGRESSING, True, "RolloutStarted",
                  f"version {cand} replacing {stable_v}: {how}", obs.now, obs.generation)
    plan.event("RolloutStarted", f"new registry version {cand} (serving {stable_v}): {how}")


def _rollback(spec: SentimentModelSpec, st: dict, obs: Observation, plan: Plan, stable_v: str,
              reason: str, message: str) -> None:
    cand = st["rollout"]["version"]
    st.pop("rollout", None)
    st.pop("candidateVersion", None)
    st["rejectedVersion"] = cand
    msg = f"version {cand} rolled back, {stable_v} kept: {message}"
    set_condition(st, DEGRADED, True, reason, msg, obs.now, obs.generation)
    set_condition(st, PROGRESSING, False, "RolledBack", msg, obs.now, obs.generation)
    plan.event("RolledBack", msg, "Warning")


def _promote_done(st: dict, obs: Observation, plan: Plan, stable_v: str) -> None:
    cand = st["rollout"]["version"]
    st.pop("rollout", None)
    st.pop("candidateVersion", None)
    st.pop("rejectedVersion", None)
    st["previousVersion"] = stable_v
    st["resolvedVersion"] = cand
    msg = f"version {cand} promoted (was {stable_v})"
    set_condition(st, PROGRESSING, False, "Promoted", msg, obs.now, obs.generation)
    set_condition(st, DEGRADED, False, "Promoted", msg, obs.now, obs.generation)
    plan.event("Promoted", msg)


PASS, FAIL, WAIT = "pass", "fail", "wait"


def gate_verdict(spec: SentimentModelSpec, obs: Observation) -> tuple[str, str]:
    """The error-rate gate, failing closed: ``fail`` when the 5xx answers already exceed
    ``maxErrorRate`` of ``max(requests, minRequests)`` (more traffic could not bring the rate
    under the limit); ``pass`` only with a measured rate under the limit over at least
    ``minRequests`` requests; ``wait`` otherwise (no Prometheus, unreachable, too few
    requests). Returns (verdict, what it is based on)."""
    r = spec.rollout
    if r.skip_error_rate_gate:
        return PASS, "(error-rate gate skipped: rollout.skipErrorRateGate)"
    window = r.error_rate_window
    if obs.errors > r.max_error_rate * max(obs.requests, r.min_requests):
        rate = obs.errors / max(obs.requests, 1.0)
        return FAIL, (f"error rate {rate:.4f} ({obs.errors:.0f} of {obs.requests:.0f} requests "
                      f"answered 5xx in {window}) exceeds {r.max_error_rate}")
    if obs.error_rate is None:
        return WAIT, f"error rate unknown: {obs.error_rate_note or 'not measured'}"
    seen = f"{obs.errors:.0f} of {obs.requests:.0f} requests answered 5xx in {window}"
    if obs.requests < r.min_requests:
        return WAIT, f"too few requests to judge ({seen}; {r.min_requests} needed)"
    return PASS, f"error rate {obs.error_rate:.4f} ({seen})"


def _no_verdict(spec: SentimentModelSpec, st: dict, obs: Observation, plan: Plan,
                stable_v: str, since: datetime, why: str) -> None:
    """Hold while the gate has no verdict; roll back once that lasted readyTimeoutSeconds."""
    timeout = spec.rollout.ready_timeout_seconds
    cand = st["rollout"]["version"]
    if (obs.now - since).total_seconds() > timeout:
        return _rollback(spec, st, obs, plan, stable_v, "ErrorRateUnknown",
                         f"no error-rate verdict within {timeout}s: {why}")
    set_condition(st, PROGRESSING, True, "AwaitingErrorRate",
                  f"version {cand} held until the error rate can be judged: {why}",
                  obs.now, obs.generation)


def _advance(spec: SentimentModelSpec, st: dict, obs: Observation, plan: Plan,
             stable_v: str) -> None:
    ro = st["rollout"]
    cand = ro["version"]
    now, gen = obs.now, obs.generation
    if obs.target is not None and obs.target == stable_v:
        st.pop("rollout", None)
        st.pop("candidateVersion", None)
        set_condition(st, PROGRESSING, False, "AliasReverted",
                      f"the registry points at {stable_v} again; rollout of {cand} abandoned",
                      now, gen)
        plan.event("RolloutAbandoned", f"alias back at {stable_v}; {cand} abandoned")
        return
    started = parse_time(ro.get("startedAt")) or now
    step_started = parse_time(ro.get("stepStartedAt")) or now
    timeout = spec.rollout.ready_timeout_seconds
    steps = spec.rollout.canary_steps
    stage = ro.get("stage")
    verdict, gate = gate_verdict(spec, obs)

    if ro.get("strategy") == "KubeRay":
        if stage == "Starting":
            if obs.stable.failed:
                return _rollback(spec, st, obs, plan, stable_v, "UpgradeFailed", obs.stable.failed)
            if obs.stable.serving(cand):
                ro.update(stage="Analysing", readyAt=iso(now), weight=100)
                set_condition(st, PROGRESSING, True, "Analysing",
                              f"KubeRay switched to version {cand}; watching the error rate "
                              f"for {spec.rollout.analysis_seconds}s", now, gen)
                plan.event("Switched", f"KubeRay switched traffic to version {cand}")
            elif (now - started).total_seconds() > timeout:
                _rollback(spec, st, obs, plan, stable_v, "NotReady",
                          f"new cluster not Ready within {timeout}s")
            return
        if stage == "Analysing":
            if verdict == FAIL:
                return _rollback(spec, st, obs, plan, stable_v, "ErrorRateExceeded", gate)
            ready_at = parse_time(ro.get("readyAt")) or now
            done_at = ready_at + timedelta(seconds=spec.rollout.analysis_seconds)
            if now < done_at:
                return
            if verdict == WAIT:
                return _no_verdict(spec, st, obs, plan, stable_v, done_at, gate)
            _promote_done(st, obs, plan, stable_v)
        return

    # Canary
    if stage in ("Starting", "Stepping"):
        if obs.canary.failed:
            return _rollback(spec, st, obs, plan, stable_v, "CanaryFailed", obs.canary.failed)
        if not obs.canary.serving(cand):
            if (now - started).total_seconds() > timeout:
                _rollback(spec, st, obs, plan, stable_v, "CanaryNotReady",
                          f"canary not Ready within {timeout}s")
            return
        if stage == "Starting":
            ro.update(stage="Stepping", step=0, weight=steps[0].weight, stepStartedAt=iso(now))
            set_condition(st, PROGRESSING, True, "CanaryStep",
                          f"version {cand} takes {steps[0].weight}% of traffic (step 1/"
                          f"{len(steps)})", now, gen)
            plan.event("CanaryStep", f"version {cand} Ready; {steps[0].weight}% of traffic")
            return
        if verdict == FAIL:
            return _rollback(spec, st, obs, plan, stable_v, "ErrorRateExceeded", gate)
        step = int(ro.get("step") or 0)
        pause_over = step_started + timedelta(seconds=steps[step].pause_seconds)
        if now < pause_over:
            return
        if verdict == WAIT:
            return _no_verdict(spec, st, obs, plan, stable_v, pause_over, gate)
        if step + 1 < len(steps):
            w = steps[step + 1].weight
            ro.update(step=step + 1, weight=w, stepStartedAt=iso(now))
            set_condition(st, PROGRESSING, True, "CanaryStep",
                          f"version {cand} takes {w}% of traffic (step {step + 2}/{len(steps)}; "
                          f"{gate})", now, gen)
            plan.event("CanaryStep", f"version {cand} healthy ({gate}); {w}% of traffic")
            return
        if not (spec.rollout.auto_promote or obs.promote == cand):
            set_condition(st, PROGRESSING, True, "AwaitingPromotion",
                          f"version {cand} passed every step; annotate shopsense.io/promote="
                          f"{cand} to promote", now, gen)
            return
        ro.update(stage="Promoting", stepStartedAt=iso(now))
        set_condition(st, PROGRESSING, True, "Promoting",
                      f"stable RayService moving to version {cand}", now, gen)
        plan.event("Promoting", f"version {cand} passed the canary ({gate}); updating the "
                   "stable track")
        return
    if stage == "Promoting":
        if obs.stable.serving(cand):
            _promote_done(st, obs, plan, stable_v)
        elif obs.stable.failed or (now - step_started).total_seconds() > timeout:
            _rollback(spec, st, obs, plan, stable_v, "PromotionFailed",
                      obs.stable.failed or f"stable not Ready on {cand} within {timeout}s")


def _summarise(spec: SentimentModelSpec, st: dict, obs: Observation) -> None:
    """Ready and phase from the stable track's health and the other conditions."""
    now, gen = obs.now, obs.generation
    stable_v = st.get("resolvedVersion")
    want_stable, _ = desired_tracks(st)
    serving = obs.stable.exists and obs.stable.ready
    if serving:
        set_condition(st, READY, True, "Serving", f"version {stable_v} serving", now, gen)
    else:
        set_condition(st, READY, False, "RayServiceNotReady",
                      f"RayService for version {want_stable} is not Ready yet", now, gen)
    if not st.get("rollout"):
        if serving and condition(st, PROGRESSING) and is_true(st, PROGRESSING):
            set_condition(st, PROGRESSING, False, "Deployed", f"version {stable_v} deployed",
                          now, gen)
        elif not serving and not condition(st, PROGRESSING):
            set_condition(st, PROGRESSING, True, "Deploying", f"deploying {stable_v}", now, gen)
    if condition(st, DEGRADED) is None:
        set_condition(st, DEGRADED, False, "AsExpected", "", now, gen)
    if is_true(st, DEGRADED):
        st["phase"] = "Degraded"
    elif st.get("rollout") or not serving:
        st["phase"] = "Progressing"
    else:
        st["phase"] = "Ready"


def rayservice_health(obj: dict[str, Any] | None) -> RayServiceHealth:
    """Read a RayService's status the way KubeRay (v1.3+) writes it."""
    if not obj:
        return RayServiceHealth()
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    if "Ready" in conds:
        ready = conds["Ready"].get("status") == "True"
    else:
        ready = status.get("serviceStatus") == "Running"
    upgrading = (conds.get("UpgradeInProgress", {}).get("status") == "True"
                 or bool((status.get("pendingServiceStatus") or {}).get("rayClusterName")))
    gen, seen = meta.get("generation"), status.get("observedGeneration")
    settled = gen is None or (seen is not None and int(seen) >= int(gen))
    failed = None
    for side in ("activeServiceStatus", "pendingServiceStatus"):
        apps = (status.get(side) or {}).get("applicationStatuses") or {}
        for app_name, app in apps.items():
            if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
                failed = f"application {app_name} {app['status']}: {app.get('message', '')}"
    return RayServiceHealth(exists=True, ready=ready, upgrading=upgrading,
                            spec_version=(meta.get("labels") or {}).get(
                                "shopsense.io/model-version"),
                            settled=settled, failed=failed)
