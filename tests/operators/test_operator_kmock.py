"""The operator run in-process (kopf) against kmock's in-memory Kubernetes API, with a real
MLflow server (``mlflow server`` on a real PostgreSQL 15, both on 127.0.0.1) as the registry.

KubeRay is not here: a small stand-in marks RayServices Ready (or failed) the way KubeRay
writes their status. kmock does no schema validation and no garbage collection, so every
object the operator writes is validated here, and deletion is checked through ownerReferences.
Prometheus for the error-rate gate is an httpx MockTransport answering in the documented
``/api/v1/query`` format.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

kopf = pytest.importorskip("kopf")
kmock_lib = pytest.importorskip("kmock")

from operators.sentimentmodel import observe  # noqa: E402
from operators.sentimentmodel.handlers import register  # noqa: E402
from operators.sentimentmodel.kube import KubeClient  # noqa: E402
from operators.sentimentmodel.registry import RegistryClient  # noqa: E402
from operators.sentimentmodel.settings import OperatorSettings, RegistryEntry  # noqa: E402
from tests.operators.schemas import validate_object  # noqa: E402

MODEL = "shopsense-sentiment"
NS = "shop"
SM = "shopsense.io/v1alpha1/sentimentmodels"
RS = "ray.io/v1/rayservices"
SVC = "v1/services"
ING = "networking.k8s.io/v1/ingresses"
ROUTE = "gateway.networking.k8s.io/v1/httproutes"
NETPOL = "networking.k8s.io/v1/networkpolicies"


class ApiServerish(kmock_lib.KubernetesEmulator):
    """kmock plus the few things an API server adds on create that kopf relies on:
    ``generateName`` (kopf's events), ``uid`` and ``resourceVersion``."""

    _counter = 0

    async def _handle(self, request):  # type: ignore[override]
        data = request.data
        if (request.resource is not None and request.method == "POST"
                and isinstance(data, dict)):
            meta = data.setdefault("metadata", {})
            ApiServerish._counter += 1
            n = ApiServerish._counter
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{n:06d}"
            meta.setdefault("uid", f"00000000-0000-4000-8000-{n:012d}")
            meta.setdefault("resourceVersion", str(n))
        return await super()._handle(request)


pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120), pytest.mark.kmock(cls=ApiServerish)]


# -- a real MLflow server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_url(mlflow_server_url):
    """``mlflow server`` on a real PostgreSQL 15, both on 127.0.0.1 (tests/servers.py)."""
    return mlflow_server_url


@pytest.fixture
def registry(mlflow_url, request):
    """A fresh registered model per test (its own name), with versions 1 and 2, champion=1."""
    from mlflow import MlflowClient

    # registry_uri too: otherwise MLFLOW_REGISTRY_URI (set by earlier tests) wins
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    name = f"{MODEL}-{request.node.name.replace('_', '-')[:40]}"
    client.create_registered_model(name)
    for i in (1, 2, 3):
        client.create_model_version(name, source=f"s3://models/{name}/{i}")
    client.set_registered_model_alias(name, "champion", "1")
    return client, name


class Switchable(httpx.AsyncBaseTransport):
    """The real network, or a registry outage (connection refused) when ``down``."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused (simulated outage)", request=request)
        return await self.inner.handle_async_request(request)


# -- kmock, a KubeRay stand-in, the operator ---------------------------------------------------

class FakeKubeRay:
    """Marks RayServices Ready on their version, or failed for versions in ``failing``, by
    PATCHing their status subresource through the API (so watchers see it, as with KubeRay).
    ``paused``: write nothing (a KubeRay that has not got to it yet)."""

    def __init__(self, kmock: Any) -> None:
        self.kmock = kmock
        self.failing: set[str] = set()
        self.paused = False
        self.http = httpx.AsyncClient(base_url=str(kmock.url).rstrip("/"))

    @staticmethod
    def status_for(failed: bool) -> dict[str, Any]:
        if failed:
            return {"conditions": [{"type": "Ready", "status": "False",
                                    "reason": "ServeFailed"}],
                    "activeServiceStatus": {"applicationStatuses": {"shopsense": {
                        "status": "DEPLOY_FAILED", "message": "model did not load"}}}}
        return {"conditions": [{"type": "Ready", "status": "True",
                                "reason": "NonZeroServeEndpoints"}],
                "activeServiceStatus": {"applicationStatuses": {"shopsense": {
                    "status": "RUNNING", "message": None}}}}

    async def run(self) -> None:
        while True:
            for (res, ns, name), obj in list(self.kmock.objects.items()):
                if self.paused or res.plural != "rayservices" or obj.deleted:
                    continue
                raw = obj.raw
                version = raw["metadata"]["labels"]["shopsense.io/model-version"]
                want = self.status_for(version in self.failing)
                have = raw.get("status") or {}
                if [c.get("status") for c in have.get("conditions") or []] != \
                        [c["status"] for c in want["conditions"]]:
                    await self.http.patch(
                        f"/apis/ray.io/v1/namespaces/{ns}/rayservices/{name}/status",
                        json={"status": want},
                        headers={"content-type": "application/merge-patch+json"})
            await asyncio.sleep(0.05)


class Prometheus:
    """``GET /api/v1/query`` in Prometheus' documented response format: the requests query
    answers ``requests``, the 5xx query ``requests * error_rate``."""

    def __init__(self) -> None:
        self.error_rate = 0.0
        self.requests = 500.0
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query = request.url.params["query"]
        self.queries.append(query)
        value = self.requests * (self.error_rate if 'code=~"5.."' in query else 1.0)
        return httpx.Response(200, json={"status": "success", "data": {
            "resultType": "vector",
            "result": [{"metric": {}, "value": [time.time(), str(value)]}]}})


def declare_resources(kmock: Any) -> None:
    info = kmock_lib.ResourceInfo
    kmock.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False)
    kmock.resources["v1/events"] = info(kind="Event", namespaced=True)
    kmock.resources[SM] = info(kind="SentimentModel", namespaced=True, subresources={"status"},
                               verbs={"get", "list", "watch", "patch", "create", "delete"})
    # The operator watches its child RayServices (it does not poll them): watch must be served.
    kmock.resources[RS] = info(kind="RayService", namespaced=True, subresources={"status"},
                               verbs={"get", "list", "watch", "patch", "create", "delete"})
    kmock.resources[SVC] = info(kind="Service", namespaced=True)
    kmock.resources[ING] = info(kind="Ingress", namespaced=True)
    kmock.resources[ROUTE] = info(kind="HTTPRoute", namespaced=True)
    kmock.resources[NETPOL] = info(kind="NetworkPolicy", namespaced=True)


class Harness:
    def __init__(self, kmock: Any, registry_name: str, mlflow_url: str,
                 tick: float = 0.2) -> None:
        self.kmock = kmock
        self.name = registry_name
        self.mlflow_url = mlflow_url
        self.transport = Switchable()
        self.prom = Prometheus()
        self.kuberay = FakeKubeRay(kmock)
        self.cfg = OperatorSettings(tick_seconds=tick, standalone=True, metrics_port=0,
                                    prometheus_url="http://prometheus:9090",
                                    registries=[RegistryEntry(name="test", url=mlflow_url)],
                                    gateway_name="shopsense",
                                    gateway_namespace="shopsense-gateway",
                                    api_keys_secret="shopsense-api-keys")
        self.http = httpx.AsyncClient(base_url=str(kmock.url).rstrip("/"))
        self.uid = 0

    def body(self, name: str = "reviews", **spec: Any) -> dict[str, Any]:
        self.uid += 1
        base = {"model": {"uri": f"models:/{self.name}@champion", "registryUrl": self.mlflow_url},
                "ingress": {"enabled": True, "host": "shop.localtest.me"},
                "rollout": {"pollIntervalSeconds": 1, "readyTimeoutSeconds": 30,
                            "canarySteps": [{"weight": 10, "pauseSeconds": 0},
                                            {"weight": 50, "pauseSeconds": 0}]}}
        base.update(spec)
        # kmock does not play the API server's part: uid, generation and defaults come from us
        return {"apiVersion": "shopsense.io/v1alpha1", "kind": "SentimentModel",
                "metadata": {"name": name, "namespace": NS, "generation": 1,
                             "resourceVersion": "1",
                             "uid": f"00000000-0000-0000-0000-{self.uid:012d}"},
                "spec": base}

    async def create(self, body: dict[str, Any]) -> None:
        validate_object(body)
        r = await self.http.post(f"/apis/shopsense.io/v1alpha1/namespaces/{NS}/sentimentmodels",
                                 json=body)
        assert r.status_code < 300, r.text

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        r = await self.http.patch(
            f"/apis/shopsense.io/v1alpha1/namespaces/{NS}/sentimentmodels/{name}",
            json={"spec": spec, "metadata": {"generation": 2}},
            headers={"content-type": "application/merge-patch+json"})
        assert r.status_code < 300, r.text

    async def delete(self, name: str) -> None:
        r = await self.http.delete(
            f"/apis/shopsense.io/v1alpha1/namespaces/{NS}/sentimentmodels/{name}")
        assert r.status_code < 300, r.text

    def obj(self, res: str, name: str) -> dict[str, Any] | None:
        try:
            o = self.kmock.objects[res, NS, name]
        except KeyError:
            return None
        return None if o.deleted else o.raw

    def status(self, name: str = "reviews") -> dict[str, Any]:
        return (self.obj(SM, name) or {}).get("status") or {}

    def cond(self, type_: str, name: str = "reviews") -> tuple[str, str]:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return c["status"], c["reason"]
        return ("", "")

    def children(self) -> list[dict[str, Any]]:
        out = []
        for (res, ns, name), o in list(self.kmock.objects.items()):
            if res.plural in ("rayservices", "services", "ingresses", "httproutes",
                              "networkpolicies") and not o.deleted:
                out.append(o.raw)
        return out

    def route_writes(self) -> list[tuple[int, ...]]:
        """The backendRef weights of every write to the HTTPRoute, in order."""
        out = []
        for r in list(self.kmock):
            if (r.method in ("POST", "PATCH") and "httproutes" in str(r.url)
                    and isinstance(r.data, dict)):
                rules = (r.data.get("spec") or {}).get("rules") or []
                if rules:
                    out.append(tuple(b["weight"] for b in rules[0]["backendRefs"]))
        return out

    def route_weights(self, name: str = "reviews") -> tuple[int, ...]:
        route = self.obj(ROUTE, name) or {"spec": {"rules": [{"backendRefs": []}]}}
        return tuple(b["weight"] for b in route["spec"]["rules"][0]["backendRefs"])

    def events(self) -> list[str]:
        return [o.raw.get("reason") for (res, _, _), o in list(self.kmock.objects.items())
                if res.plural == "events"]

    async def until(self, check, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}: "
                                     f"status={self.status()}")
            await asyncio.sleep(0.05)

    def assert_children_valid(self, owner_uid: str) -> None:
        for o in self.children():
            validate_object({k: v for k, v in o.items() if k != "status"})
            assert o["metadata"]["ownerReferences"][0]["uid"] == owner_uid


@contextlib.asynccontextmanager
async def operator(kmock, registry_name, mlflow_url, tick: float = 0.2):
    declare_resources(kmock)
    h = Harness(kmock, registry_name, mlflow_url, tick=tick)
    reg = kopf.OperatorRegistry()
    register(reg, h.cfg)

    @kopf.on.login(registry=reg)
    def login_to_kmock(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(kmock.url).rstrip("/"), insecure=True)

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.1
    memo = kopf.Memo(config=h.cfg, kube=KubeClient(str(kmock.url)),
                     mlflow=RegistryClient(transport=h.transport),
                     gate=observe.ErrorRateGate(h.cfg,
                                                transport=httpx.MockTransport(h.prom)))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=reg, settings=settings, memo=memo, clusterwide=True, standalone=True,
        stop_flag=stop, ready_flag=ready))
    kuberay = asyncio.create_task(h.kuberay.run())
    try:
        await asyncio.wait_for(ready.wait(), 20)
        # objects must be created only once the watch stream is open
        await h.until(lambda: any(r.params.get("watch") == "true" and "sentimentmodels"
                                  in str(r.url) for r in list(kmock)), what="the watch")
        yield h
    finally:
        stop.set()
        kuberay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kuberay
        await asyncio.wait_for(task, 20)
        await h.http.aclose()
        await h.kuberay.http.aclose()


async def test_create_deploys_the_champion_and_becomes_ready(kmock, registry, mlflow_url):
    _, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        body = h.body()
        await h.create(body)
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        st = h.status()
        assert st["resolvedVersion"] == "1" and st["phase"] == "Ready"
        assert st["endpoint"] == "http://shop.localtest.me/"
        kinds = sorted(o["kind"] for o in h.children())
        assert kinds == ["HTTPRoute", "NetworkPolicy", "RayService", "Service"]
        h.assert_children_valid(body["metadata"]["uid"])
        rs = h.obj(RS, "reviews")
        assert f"models:/{name}/1" in rs["spec"]["serveConfigV2"]
        await h.until(lambda: "Deploying" in h.events(), what="the Deploying event")
        # idempotent: more ticks write nothing new
        writes = len([r for r in list(kmock) if r.method in ("POST", "PATCH")
                      and "rayservices" in str(r.url)])
        await asyncio.sleep(1.0)
        assert writes == len([r for r in list(kmock) if r.method in ("POST", "PATCH")
                              and "rayservices" in str(r.url)])


async def test_spec_update_rerenders_the_rayservice(kmock, registry, mlflow_url):
    _, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        await h.create(h.body())
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        await h.patch_spec("reviews", {"replicas": 3, "ingress": {"enabled": False}})

        def updated() -> bool:
            rs = h.obj(RS, "reviews")
            return rs is not None and "classifier_replicas: 3" in rs["spec"]["serveConfigV2"]

        await h.until(updated, what="the re-rendered RayService")
        await h.until(lambda: h.obj(ROUTE, "reviews") is None, what="the HTTPRoute removed")
        assert h.status()["resolvedVersion"] == "1"
        h.assert_children_valid(h.obj(SM, "reviews")["metadata"]["uid"])


async def test_new_registry_version_goes_through_the_canary(kmock, registry, mlflow_url):
    client, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        await h.create(h.body())
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        client.set_registered_model_alias(name, "champion", "2")
        await h.until(lambda: h.obj(RS, "reviews-canary") is not None, what="the canary")
        h.assert_children_valid(h.obj(SM, "reviews")["metadata"]["uid"])
        await h.until(lambda: h.status().get("resolvedVersion") == "2", what="promotion")
        st = h.status()
        assert st["previousVersion"] == "1" and st["phase"] == "Ready"
        assert h.cond("Degraded") == ("False", "Promoted")
        assert f"models:/{name}/2" in h.obj(RS, "reviews")["spec"]["serveConfigV2"]
        await h.until(lambda: h.obj(RS, "reviews-canary") is None, what="canary cleanup")
        assert h.obj(SVC, "reviews-canary") is None
        # the traffic went through the HTTPRoute's weights, step by step, then all to stable
        writes = h.route_writes()
        assert writes[0] == (100,) and (90, 10) in writes and (50, 50) in writes
        assert writes.index((90, 10)) < writes.index((50, 50))
        await h.until(lambda: h.route_weights() == (100,), what="the route back to one backend")
        assert any('shopsense_io_track="canary"' in q for q in h.prom.queries)
        await h.until(lambda: {"RolloutStarted", "CanaryStep", "Promoting",
                               "Promoted"} <= set(h.events()), what="the events")


@pytest.mark.parametrize("cause", ["error_rate", "deploy_failed"])
async def test_failed_canary_rolls_back(kmock, registry, mlflow_url, cause):
    client, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        body = h.body()
        body["spec"]["rollout"]["canarySteps"] = [{"weight": 10, "pauseSeconds": 5}]
        await h.create(body)
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        if cause == "error_rate":
            h.prom.error_rate = 0.4
        else:
            h.kuberay.failing.add("3")
        client.set_registered_model_alias(name, "champion", "3")
        await h.until(lambda: h.cond("Degraded")[0] == "True", what="Degraded")
        st = h.status()
        assert h.cond("Degraded")[1] == ("ErrorRateExceeded" if cause == "error_rate"
                                         else "CanaryFailed")
        assert st["resolvedVersion"] == "1" and st["rejectedVersion"] == "3"
        assert st["phase"] == "Degraded" and h.cond("Ready") == ("True", "Serving")
        await h.until(lambda: h.obj(RS, "reviews-canary") is None, what="canary removed")
        assert f"models:/{name}/1" in h.obj(RS, "reviews")["spec"]["serveConfigV2"]
        await h.until(lambda: "RolledBack" in h.events(), what="the RolledBack event")
        if cause == "error_rate":  # it had traffic through the route's weight, then none
            assert (90, 10) in h.route_writes()
        await h.until(lambda: h.route_weights() == (100,), what="all traffic on stable")


async def test_registry_outage_changes_nothing_and_backs_off(kmock, registry, mlflow_url):
    client, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        await h.create(h.body())
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        before = h.obj(RS, "reviews")
        h.transport.down = True
        client.set_registered_model_alias(name, "champion", "2")  # not visible: registry down
        await h.until(lambda: h.cond("RegistryAvailable")[0] == "False", what="the outage")
        await h.until(lambda: (h.status().get("registry") or {}).get("failures", 0) >= 2,
                      what="a retry")
        st = h.status()
        assert "unreachable" in st["registry"]["message"]
        assert h.cond("Ready") == ("True", "Serving") and st["resolvedVersion"] == "1"
        assert h.obj(RS, "reviews")["spec"] == before["spec"]
        assert h.obj(RS, "reviews-canary") is None
        # back off: the next check is further away than the 1 s poll interval
        from operators.sentimentmodel.rollout import parse_time

        gap = (parse_time(st["registry"]["nextCheckTime"])
               - parse_time(st["registry"]["lastCheckTime"])).total_seconds()
        assert gap >= 2 * st["registry"]["failures"] - 0.5
        h.transport.down = False
        await h.until(lambda: h.cond("RegistryAvailable")[0] == "True", timeout=30,
                      what="the registry back")
        await h.until(lambda: h.status().get("resolvedVersion") == "2", timeout=30,
                      what="the delayed rollout")


async def test_delete_leaves_only_owned_objects_for_the_garbage_collector(kmock, registry,
                                                                           mlflow_url):
    _, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        body = h.body()
        await h.create(body)
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        # kopf's own finalizer (it stops the timer first) is the only one; no handler blocks
        sm = h.obj(SM, "reviews")
        assert all(f.startswith("kopf.") for f in sm["metadata"].get("finalizers", []))
        await h.delete("reviews")
        await h.until(lambda: h.obj(SM, "reviews") is None, what="deletion")
        uid = body["metadata"]["uid"]
        # Kubernetes' garbage collector deletes what the SentimentModel owns (kmock has none):
        owned = [o for o in h.children()
                 if any(r["uid"] == uid and r.get("controller")
                        for r in o["metadata"].get("ownerReferences", []))]
        assert len(owned) == len(h.children()) == 4


        def writes() -> int:
            return len([r for r in list(kmock) if r.method in ("POST", "PATCH")
                        and "events" not in str(r.url)])

        before = writes()
        await asyncio.sleep(1.0)  # no handler writes anything after deletion
        assert writes() == before
        assert ("shop", "reviews") not in {
            (s.labels["namespace"], s.labels["name"])
            for m in observe.READY.collect() for s in m.samples}


def test_runs_logged_to_a_tracking_server_keep_their_artifacts_where_the_server_says(
        mlflow_url, mlflow_uris_restored):
    """Not under this machine's home: in a cluster the server's default root is MinIO."""
    from shopsense import registry
    from shopsense.settings import Settings

    s = Settings(mlflow_tracking_uri=mlflow_url)
    exp_id = registry._experiment(s, "artifact-root-check")
    location = registry.client(s).get_experiment(exp_id).artifact_location
    assert location.endswith("/artifacts/" + exp_id) or "mlflow-artifacts:" in location, location
    assert str(s.resolved_home()) not in location


# -- the operator trusts no one; the gate fails closed; RayServices are watched --------------

async def test_children_of_another_owner_are_left_alone_and_said(kmock, registry, mlflow_url):
    _, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        foreign = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "reviews", "namespace": NS,
                                "labels": {"app": "someone-else"}},
                   "spec": {"selector": {"app": "someone-else"},
                            "ports": [{"port": 80, "targetPort": 8080}]}}
        r = await h.http.post(f"/api/v1/namespaces/{NS}/services", json=foreign)
        assert r.status_code < 300, r.text
        await h.create(h.body())
        await h.until(lambda: h.cond("ChildrenOwned") == ("False", "NotOwned"),
                      what="the ownership condition")
        msg = next(c["message"] for c in h.status()["conditions"]
                   if c["type"] == "ChildrenOwned")
        assert "Service shop/reviews" in msg and "left unchanged" in msg
        svc = h.obj(SVC, "reviews")
        assert svc["spec"]["selector"] == {"app": "someone-else"}  # not patched
        assert "ownerReferences" not in svc["metadata"]
        assert not [r for r in list(kmock) if r.method in ("PATCH", "DELETE")
                    and r.url.path.endswith("/services/reviews")]
        await h.until(lambda: "NotOwned" in h.events(), what="the NotOwned event")


async def test_a_registry_outside_the_allow_list_gets_nothing(kmock, registry, mlflow_url):
    _, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        sent = []
        inner = h.transport.inner

        class Spy(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request):
                sent.append(str(request.url))
                return await inner.handle_async_request(request)

        h.transport.inner = Spy()
        body = h.body()
        body["spec"]["model"]["registryUrl"] = "http://registry.attacker.example:5000"
        await h.create(body)
        await h.until(lambda: h.cond("Degraded") == ("True", "RegistryNotAllowed"),
                      what="the policy condition")
        assert h.status()["phase"] == "Failed"
        await asyncio.sleep(0.5)
        assert not [u for u in sent if "attacker" in u]
        assert not h.children()  # nothing rendered
        await h.until(lambda: "InvalidSpec" in h.events(), what="the InvalidSpec event")


async def test_a_spec_the_operator_refuses_gets_a_condition(kmock, registry, mlflow_url):
    _, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        await h.create(h.body(image="docker.io/someone/miner:latest",
                              envFromSecrets=["minio-root"]))
        await h.until(lambda: h.cond("Degraded")[0] == "True", what="Degraded")
        st = h.status()
        assert h.cond("Degraded")[1] == "InvalidSpec" and st["phase"] == "Failed"
        msg = next(c["message"] for c in st["conditions"] if c["type"] == "Degraded")
        assert "docker.io/someone/miner:latest" in msg and "'minio-root'" in msg
        assert not h.children()


async def test_without_prometheus_a_canary_never_promotes(kmock, registry, mlflow_url):
    client, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        h.cfg.prometheus_url = None
        body = h.body()
        body["spec"]["rollout"].update(readyTimeoutSeconds=3,
                                       canarySteps=[{"weight": 10, "pauseSeconds": 0}])
        await h.create(body)
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        client.set_registered_model_alias(name, "champion", "2")
        await h.until(lambda: h.cond("Progressing")[1] == "AwaitingErrorRate",
                      what="the held step")
        assert h.status()["resolvedVersion"] == "1"
        await h.until(lambda: h.cond("Degraded") == ("True", "ErrorRateUnknown"),
                      what="the rollback", timeout=30)
        st = h.status()
        assert st["resolvedVersion"] == "1" and st["rejectedVersion"] == "2"
        assert "no Prometheus configured" in next(
            c["message"] for c in st["conditions"] if c["type"] == "Degraded")


async def test_rayservice_changes_are_watched_not_polled(kmock, registry, mlflow_url):
    """A 60 s clock: readiness still shows within seconds, from the RayService's watch."""
    _, name = registry
    async with operator(kmock, name, mlflow_url, tick=60) as h:
        h.kuberay.paused = True
        await h.create(h.body())
        await h.until(lambda: h.obj(RS, "reviews") is not None, what="the RayService")
        await asyncio.sleep(0.5)
        assert h.cond("Ready")[0] == "False"
        h.kuberay.paused = False  # KubeRay writes the RayService's status
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), timeout=10,
                      what="Ready from the watch")
        # children are written with server-side apply, as the operator's field manager
        applies = [r for r in list(kmock) if r.method == "PATCH"
                   and "rayservices" in str(r.url) and not str(r.url).endswith("/status")]
        assert applies
        for r in applies:
            assert r.params.get("fieldManager") == "shopsense-operator"
            assert {k.lower(): v for k, v in r.headers.items()}["content-type"] == (
                "application/apply-patch+yaml")


async def test_a_llava_promotion_changes_the_adapter_the_app_serves(kmock, registry,
                                                                    mlflow_url):
    """backend vllm with LoRA: a new registry version is a new adapter id in the stable
    RayService's Serve config (its cluster unchanged), after a canary by adapter."""
    import yaml

    client, name = registry
    async with operator(kmock, name, mlflow_url) as h:
        body = h.body(backend="vllm", resources={"gpus": 1},
                      rollout={"pollIntervalSeconds": 1, "readyTimeoutSeconds": 30,
                               "canarySteps": [{"weight": 20, "pauseSeconds": 0}]})
        await h.create(body)
        await h.until(lambda: h.cond("Ready") == ("True", "Serving"), what="Ready")
        uri1 = client.get_model_version_download_uri(name, "1")

        def app_model() -> str:
            config = yaml.safe_load(h.obj(RS, "reviews")["spec"]["serveConfigV2"])
            app = next(a for a in config["applications"] if a["name"] == "shopsense")
            return app["args"]["settings_env"]["SHOPSENSE_VLLM__MODEL_ID"]

        first = app_model()
        assert first.startswith("llava-hf/llava-v1.6-mistral-7b-hf:")
        assert h.status()["adapter"] == first
        cluster = h.obj(RS, "reviews")["spec"]["rayClusterConfig"]
        client.set_registered_model_alias(name, "champion", "2")
        await h.until(lambda: h.obj(RS, "reviews-canary") is not None, what="the canary")
        canary = h.obj(RS, "reviews-canary")
        (capp,) = yaml.safe_load(canary["spec"]["serveConfigV2"])["applications"]
        assert capp["args"]["settings_env"]["SHOPSENSE_VLLM__BASE_URL"] == (
            f"http://reviews.{NS}.svc:8000/llm")  # the stable cluster's LLM, no second GPU
        await h.until(lambda: h.status().get("resolvedVersion") == "2", what="promotion")
        second = app_model()
        assert second != first and h.status()["adapter"] == second
        assert h.obj(RS, "reviews")["spec"]["rayClusterConfig"] == cluster
        assert uri1 and first.endswith("artifacts/bundle/adapter")
        h.assert_children_valid(h.obj(SM, "reviews")["metadata"]["uid"])
