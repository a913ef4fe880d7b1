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


def measured(rate, requests=500):
    """What the gate reports when Prometheus answered: ``requests`` in the window."""
    return {"error_rate": rate, "requests": requests, "errors": rate * requests}


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
                                      **measured(0.01))).status
    assert st["rollout"]["weight"] == 10
    st = decide(SPEC, st, Observation(now=at(61), stable=ok("3"), canary=ok("4"),
                                      **measured(0.01))).status
    assert desired_tracks(st) == ("3", ("4", 50))
    assert "5 of 500 requests answered 5xx" in condition(st, "Progressing")["message"]
    st = decide(SPEC, st, Observation(now=at(92), stable=ok("3"), canary=ok("4"),
                                      **measured(0.0))).status
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
                                        **measured(0.31)))
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
    st = decide(spec, st, Observation(now=at(4), stable=ok("1"), canary=ok("2"),
                                      **measured(0.0))).status
    assert cond(st, "Progressing") == ("True", "AwaitingPromotion")
    st = decide(spec, st, Observation(now=at(5), stable=ok("1"), canary=ok("2"),
                                      promote="2", **measured(0.0))).status
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
    done = decide(spec, started, Observation(now=at(121), stable=ok("2"),
                                             **measured(0.0))).status
    assert done["resolvedVersion"] == "2" and done["previousVersion"] == "1"
    bad = decide(spec, started, Observation(now=at(90), stable=ok("2"),
                                            **measured(0.5))).status
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


# -- the gate fails closed -------------------------------------------------------------------

def _stepping(spec=SPEC):
    st = decide(spec, serving("3"), Observation(now=at(10), target="4", stable=ok("3"))).status
    st = decide(spec, st, Observation(now=at(20), stable=ok("3"), canary=ok("4"))).status
    assert st["rollout"]["stage"] == "Stepping" and st["rollout"]["weight"] == 10
    return st


def test_no_prometheus_or_an_unreachable_one_never_promotes():
    st = _stepping()
    for note in ("no Prometheus configured", "Prometheus unreachable or unreadable"):
        held = decide(SPEC, st, Observation(now=at(200), stable=ok("3"), canary=ok("4"),
                                            error_rate_note=note)).status
        assert held["rollout"]["weight"] == 10  # the step is held, not passed
        assert cond(held, "Progressing") == ("True", "AwaitingErrorRate")
        assert note in condition(held, "Progressing")["message"]
        # held past readyTimeoutSeconds after the pause: rolled back, never promoted
        late = decide(SPEC, held, Observation(now=at(20 + 30 + 301), stable=ok("3"),
                                              canary=ok("4"), error_rate_note=note)).status
        assert desired_tracks(late) == ("3", None) and late["rejectedVersion"] == "4"
        assert cond(late, "Degraded") == ("True", "ErrorRateUnknown")


def test_too_few_requests_hold_the_step():
    st = _stepping()
    few = decide(SPEC, st, Observation(now=at(200), stable=ok("3"), canary=ok("4"),
                                       **measured(0.0, requests=12))).status
    assert few["rollout"]["weight"] == 10
    assert "too few requests to judge" in condition(few, "Progressing")["message"]
    assert "100 needed" in condition(few, "Progressing")["message"]
    enough = decide(SPEC, few, Observation(now=at(201), stable=ok("3"), canary=ok("4"),
                                           **measured(0.0, requests=100))).status
    assert enough["rollout"]["weight"] == 50


def test_a_broken_canary_is_rolled_back_before_min_requests():
    """10 of 12 requests 5xx: more traffic could not bring the rate under 5 % of 100."""
    st = _stepping()
    obs = Observation(now=at(25), stable=ok("3"), canary=ok("4"), error_rate=10 / 12,
                      requests=12, errors=10)
    assert cond(decide(SPEC, st, obs).status, "Degraded") == ("True", "ErrorRateExceeded")
    # 4 of 12 is under 5 % of the 100 requests still to come: held, not judged yet
    obs = Observation(now=at(25), stable=ok("3"), canary=ok("4"), error_rate=4 / 12,
                      requests=12, errors=4)
    assert "rollout" in decide(SPEC, st, obs).status


def test_skipping_the_gate_is_explicit():
    spec = parse_spec({"rollout": {"skipErrorRateGate": True,
                                   "canarySteps": [{"weight": 10, "pauseSeconds": 0}]}})
    st = _stepping(spec)
    plan = decide(spec, st, Observation(now=at(30), stable=ok("3"), canary=ok("4")))
    assert plan.status["rollout"]["stage"] == "Promoting"
    assert "skipErrorRateGate" in plan.events[-1][2]


def test_kuberay_analysis_waits_for_a_verdict():
    spec = parse_spec({"rollout": {"strategy": "KubeRay", "analysisSeconds": 60,
                                   "readyTimeoutSeconds": 100}})
    st = decide(spec, {}, Observation(now=T0, target="1")).status
    st = decide(spec, st, Observation(now=at(1), stable=ok("1"))).status
    st = decide(spec, st, Observation(now=at(2), target="2", stable=ok("1"))).status
    st = decide(spec, st, Observation(now=at(10), stable=ok("2"))).status
    assert st["rollout"]["stage"] == "Analysing"
    held = decide(spec, st, Observation(now=at(80), stable=ok("2"),
                                        error_rate_note="no Prometheus configured")).status
    assert held["rollout"]["stage"] == "Analysing" and "resolvedVersion" in held
    assert held["resolvedVersion"] == "1"
    late = decide(spec, held, Observation(now=at(10 + 60 + 101), stable=ok("2"),
                                          error_rate_note="no Prometheus configured")).status
    assert late["rejectedVersion"] == "2" and desired_tracks(late) == ("1", None)
