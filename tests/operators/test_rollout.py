"""The reconciliation logic as plain functions: observation + status -> next status."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from operators.sentimentmodel.rollout import (
    Observation, RayServiceHealth, condition, decide, desired_tracks, rayservice_health)
from operators.sentimentmodel.spec import parse_spec

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPEC = parse_spec({"rollout": {"canarySteps": [{"weight": 10, "pauseSeconds": 30},
                                                {"weight": 50, "pauseSeconds": 30}],
                               "readyTimeoutSeconds": 300, "maxErrorRate": 0.05,
                               "pollIntervalSeconds": 60}})


def ok(v):
    return RayServiceHealth(exists=True, ready=True, spec_version=v)


def at(s):
    return T0 + timedelta(seconds=s)


def cond(st, t):
    c = condition(st, t)
    return c["status"], c["reason"]


def serving(version):
    st = decide(SPEC, {}, Observation(now=T0, target=version)).status
    return decide(SPEC, st, Observation(now=at(1), stable=ok(version))).status


def test_first_deploy_then_ready():
    plan = decide(SPEC, {}, Observation(now=T0, generation=1, target="3"))
    st = plan.status
    assert st["resolvedVersion"] == "3" and st["phase"] == "Progressing"
    assert desired_tracks(st) == ("3", None)
    assert cond(st, "Ready") == ("False", "Deploying")
    assert [e[1] for e in plan.events] == ["Deploying"]
    st = decide(SPEC, st, Observation(now=at(5), generation=1, stable=ok("3"))).status
    assert st["phase"] == "Ready" and cond(st, "Ready") == ("True", "Serving")
    assert cond(st, "Progressing") == ("False", "Deployed")
    assert st["observedGeneration"] == 1


def test_registry_down_before_first_deploy_is_pending_and_backs_off():
    st = decide(SPEC, {}, Observation(now=T0, registry_error="connection refused")).status
    assert st["phase"] == "Pending" and "resolvedVersion" not in st
    assert cond(st, "RegistryAvailable") == ("False", "RegistryUnavailable")
    assert st["registry"]["nextCheckTime"] == "2026-01-01T00:02:00Z"  # 60 s * 2
    st = decide(SPEC, st, Observation(now=at(120), registry_error="connection refused")).status
    assert st["registry"]["failures"] == 2
    assert st["registry"]["nextCheckTime"] == "2026-01-01T00:06:00Z"  # + 60 s * 4


def test_registry_outage_changes_nothing_that_serves():
    st = serving("3")
    plan = decide(SPEC, st, Observation(now=at(60), registry_error="HTTP 503", stable=ok("3")))
    new = plan.status
    assert desired_tracks(new) == ("3", None) and new["phase"] == "Ready"
    assert cond(new, "Ready") == ("True", "Serving")
    assert "HTTP 503" in condition(new, "RegistryAvailable")["message"]
    assert [e[:2] for e in plan.events] == [("Warning", "RegistryUnavailable")]
    # only the first failure in a row posts an event
    again = decide(SPEC, new, Observation(now=at(200), registry_error="HTTP 503", stable=ok("3")))
    assert again.events == []
    back = decide(SPEC, again.status, Observation(now=at(500), target="3", stable=ok("3")))
    assert cond(back.status, "RegistryAvailable")[0] == "True"
    assert back.status["registry"]["failures"] == 0


def test_canary_steps_then_promotion():
    st = serving("3")
    st = decide(SPEC, st, Observation(now=at(10), target="4", stable=ok("3"))).status
    assert st["rollout"]["stage"] == "Starting" and st["candidateVersion"] == "4"
    assert desired_tracks(st) == ("3", ("4", 0))
    # canary not ready yet: wait
    st = decide(SPEC, st, Observation(now=at(20), stable=ok("3"))).status
    assert st["rollout"]["stage"] == "Starting"
    st = decide(SPEC, st, Observation(now=at(30), stable=ok("3"), canary=ok("4"))).status
    assert desired_tracks(st) == ("3", ("4", 10))
    # pause not over: same step
    st = decide(SPEC, st, Observation(now=at(40), stable=ok("3"), canary=ok("4"),
                                      error_rate=0.01)).status
    assert st["rollout"]["weight"] == 10
    st = decide(SPEC, st, Observation(now=at(61), stable=ok("3"), canary=ok("4"),
                                      error_rate=0.01)).status
    assert desired_tracks(st) == ("3", ("4", 50))
    st = decide(SPEC, st, Observation(now=at(92), stable=ok("3"), canary=ok("4"),
                                      error_rate=0.0)).status
    assert st["rollout"]["stage"] == "Promoting" and desired_tracks(st) == ("4", ("4", 50))
    # stable still upgrading (KubeRay's pending cluster): wait
    upgrading = RayServiceHealth(exists=True, ready=True, upgrading=True, spec_version="4")
    st = decide(SPEC, st, Observation(now=at(100), stable=upgrading, canary=ok("4"))).status
    assert st["rollout"]["stage"] == "Promoting"
    plan = decide(SPEC, st, Observation(now=at(150), stable=ok("4"), canary=ok("4")))
    st = plan.status
    assert st["resolvedVersion"] == "4" and st["previousVersion"] == "3"
    assert "rollout" not in st and desired_tracks(st) == ("4", None)
    assert st["phase"] == "Ready" and cond(st, "Degraded") == ("False", "Promoted")
    assert [e[1] for e in plan.events] == ["Promoted"]


def test_error_rate_over_threshold_rolls_back_and_is_not_retried():
    st = serving("3")
    st = decide(SPEC, st, Observation(now=at(10), target="4", stable=ok("3"))).status
    st = decide(SPEC, st, Observation(now=at(20), stable=ok("3"), canary=ok("4"))).status
    plan = decide(SPEC, st, Observation(now=at(25), stable=ok("3"), canary=ok("4"),
                                        error_rate=0.31))
    st = plan.status
    assert desired_tracks(st) == ("3", None) and st["rejectedVersion"] == "4"
    assert cond(st, "Degraded") == ("True", "ErrorRateExceeded")
    assert "0.3100" in condition(st, "Degraded")["message"]
    assert st["phase"] == "Degraded" and cond(st, "Ready")[0] == "True"
    assert plan.events[0][:2] == ("Warning", "RolledBack")
    st = decide(SPEC, st, Observation(now=at(100), target="4", stable=ok("3"))).status
    assert "rollout" not in st  # the rejected version is not tried again
    st = decide(SPEC, st, Observation(now=at(200), target="5", stable=ok("3"))).status
    assert st["rollout"]["version"] == "5"


def test_canary_never_ready_times_out_and_failed_app_rolls_back_at_once():
    st = decide(SPEC, serving("3"), Observation(now=at(10), target="4", stable=ok("3"))).status
    waiting = decide(SPEC, st, Observation(now=at(200), stable=ok("3"))).status
    assert waiting["rollout"]["stage"] == "Starting"
    st2 = decide(SPEC, st, Observation(now=at(311), stable=ok("3"))).status
    assert cond(st2, "Degraded") == ("True", "CanaryNotReady")
    failed = RayServiceHealth(exists=True, failed="application shopsense DEPLOY_FAILED: boom")
    st3 = decide(SPEC, st, Observation(now=at(20), stable=ok("3"), canary=failed)).status
    assert cond(st3, "Degraded") == ("True", "CanaryFailed")
    assert "DEPLOY_FAILED" in condition(st3, "Degraded")["message"]


def test_alias_back_at_stable_clears_degraded():
    st = decide(SPEC, serving("3"), Observation(now=at(10), target="4", stable=ok("3"))).status
    st = decide(SPEC, st, Observation(now=at(400), stable=ok("3"))).status
    assert st["phase"] == "Degraded"
    st = decide(SPEC, st, Observation(now=at(500), target="3", stable=ok("3"))).status
    assert st["phase"] == "Ready" and cond(st, "Degraded") == ("False", "AliasAtStable")


def test_manual_promotion_waits_for_the_annotation():
    spec = parse_spec({"rollout": {"autoPromote": False,
                                   "canarySteps": [{"weight": 20, "pauseSeconds": 0}]}})
    st = decide(spec, {}, Observation(now=T0, target="1")).status
    st = decide(spec, st, Observation(now=at(1), stable=ok("1"))).status
    st = decide(spec, st, Observation(now=at(2), target="2", stable=ok("1"))).status
    st = decide(spec, st, Observation(now=at(3), stable=ok("1"), canary=ok("2"))).status
    st = decide(spec, st, Observation(now=at(4), stable=ok("1"), canary=ok("2"))).status
    assert cond(st, "Progressing") == ("True", "AwaitingPromotion")
    st = decide(spec, st, Observation(now=at(5), stable=ok("1"), canary=ok("2"),
                                      promote="2")).status
    assert st["rollout"]["stage"] == "Promoting"


def test_kuberay_strategy_switch_analyse_promote_or_roll_back():
    spec = parse_spec({"rollout": {"strategy": "KubeRay", "analysisSeconds": 60}})
    st = decide(spec, {}, Observation(now=T0, target="1")).status
    st = decide(spec, st, Observation(now=at(1), stable=ok("1"))).status
    st = decide(spec, st, Observation(now=at(2), target="2", stable=ok("1"))).status
    assert desired_tracks(st) == ("2", None)  # the RayService itself is patched
    pending = RayServiceHealth(exists=True, ready=True, upgrading=True, spec_version="2")
    st = decide(spec, st, Observation(now=at(30), stable=pending)).status
    assert st["rollout"]["stage"] == "Starting"
    started = decide(spec, st, Observation(now=at(60), stable=ok("2"))).status
    assert started["rollout"]["stage"] == "Analysing"
    done = decide(spec, started, Observation(now=at(121), stable=ok("2"), error_rate=0.0)).status
    assert done["resolvedVersion"] == "2" and done["previousVersion"] == "1"
    bad = decide(spec, started, Observation(now=at(90), stable=ok("2"), error_rate=0.5)).status
    assert desired_tracks(bad) == ("1", None) and bad["rejectedVersion"] == "2"


def test_decide_is_idempotent():
    st = decide(SPEC, serving("3"), Observation(now=at(10), target="4", stable=ok("3"))).status
    obs = Observation(now=at(20), stable=ok("3"), canary=ok("4"))
    once = decide(SPEC, st, obs).status
    assert decide(SPEC, once, Observation(now=at(20), stable=ok("3"),
                                          canary=ok("4"))).status == once


def test_rayservice_health_reads_kuberay_status():
    rs = {"metadata": {"generation": 2, "labels": {"shopsense.io/model-version": "4"}},
          "status": {"observedGeneration": 2,
                     "conditions": [{"type": "Ready", "status": "True"},
                                    {"type": "UpgradeInProgress", "status": "False"}],
                     "activeServiceStatus": {"applicationStatuses": {
                         "shopsense": {"status": "RUNNING"}}}}}
    assert rayservice_health(rs).serving("4")
    rs["metadata"]["generation"] = 3
    assert not rayservice_health(rs).serving("4")  # KubeRay has not seen the new spec yet
    rs["status"]["observedGeneration"] = 3
    rs["status"]["pendingServiceStatus"] = {"rayClusterName": "x", "applicationStatuses": {
        "shopsense": {"status": "DEPLOY_FAILED", "message": "ImportError"}}}
    h = rayservice_health(rs)
    assert h.upgrading and "DEPLOY_FAILED: ImportError" in h.failed
    assert not rayservice_health(None).exists
