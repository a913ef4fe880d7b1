"""The operator's policy: what a spec that passed the CRD may still not ask for."""

from __future__ import annotations

import httpx
import pytest

from operators.sentimentmodel.policy import problems
from operators.sentimentmodel.registry import (
    ModelVersionNotFound, RegistryClient, RegistryUnavailable, credentials_headers)
from operators.sentimentmodel.settings import OperatorSettings, RegistryEntry
from operators.sentimentmodel.spec import parse_spec

CFG = OperatorSettings(
    metrics_port=0, gateway_name="shopsense",
    registries=[RegistryEntry(name="prod", url="http://mlflow.mlflow.svc:5000")],
    env_from_secrets=["shopsense-minio"], api_keys_secret="shopsense-api-keys")


def reasons(spec: dict, cfg: OperatorSettings = CFG) -> list[str]:
    return [r for r, _ in problems(parse_spec(spec), cfg)]


def test_a_plain_spec_passes():
    assert reasons({"ingress": {"enabled": True}}) == []
    assert reasons({"model": {"registryUrl": "http://MLFLOW.mlflow.svc:5000/"}}) == []


def test_registry_urls_come_from_the_allow_list():
    assert reasons({"model": {"registryUrl": "http://evil.example:5000"}}) == [
        "RegistryNotAllowed"]
    assert reasons({}, OperatorSettings(metrics_port=0)) == ["NoRegistry"]


def test_images_and_secrets_are_limited_by_policy():
    assert reasons({"image": "ghcr.io/shopsense/inference-cpu:0.2.0"}) == []
    assert reasons({"image": "docker.io/attacker/miner:latest"}) == ["ImageNotAllowed"]
    assert reasons({"envFromSecrets": ["shopsense-minio"]}) == []
    assert reasons({"envFromSecrets": ["minio-root"]}) == ["SecretNotAllowed"]
    assert reasons({"auth": {"apiKeysSecretName": "kube-system-token"}}) == ["SecretNotAllowed"]


def test_cluster_capabilities_a_spec_needs():
    none = OperatorSettings(**{**CFG.model_dump(), "gateway_name": None})
    assert reasons({"ingress": {"enabled": True}}, none) == ["NoGateway"]
    assert reasons({"ingress": {"enabled": True, "api": "Ingress", "className": "traefik"}}) == [
        "CanaryNeedsWeights"]
    assert reasons({"ingress": {"enabled": True, "api": "Ingress", "className": "traefik"},
                    "rollout": {"strategy": "KubeRay"}}) == []
    assert reasons({"rollout": {"strategy": "KubeRayIncremental"}}) == [
        "IncrementalUpgradeUnavailable", "NoGatewayClass"]
    on = OperatorSettings(**{**CFG.model_dump(), "kuberay_incremental_upgrade": True,
                             "gateway_class_name": "istio"})
    assert reasons({"rollout": {"strategy": "KubeRayIncremental"}}, on) == []


# -- the registry client: credentials bound per registry, replies never in messages -----------

@pytest.mark.asyncio
async def test_credentials_go_to_their_own_registry_only(tmp_path):
    creds = tmp_path / "prod"
    creds.mkdir()
    (creds / "MLFLOW_TRACKING_TOKEN").write_text("s3cr3t\n")
    prod = RegistryEntry(name="prod", url="http://prod:5000", credentials_dir=str(creds))
    other = RegistryEntry(name="other", url="http://other:5000")
    assert credentials_headers(prod) == {"Authorization": "Bearer s3cr3t"}
    seen = []

    def handler(request):
        seen.append((request.url.host, request.headers.get("authorization")))
        return httpx.Response(200, json={"model_version": {"version": "3", "status": "READY"}})

    client = RegistryClient(transport=httpx.MockTransport(handler),
                            headers={"Authorization": "Bearer env-token"})
    ref = parse_spec({"model": {"uri": "models:/m@champion"}}).model
    assert await client.resolve(ref, registry=prod) == "3"
    assert await client.resolve(ref, registry=other) == "3"
    await client.aclose()
    assert seen == [("prod", "Bearer s3cr3t"), ("other", None)]


@pytest.mark.asyncio
@pytest.mark.parametrize("status,body,exc", [
    (500, {"error_code": "INTERNAL_ERROR", "message": "<script>steal()</script> secret=hunter2"},
     RegistryUnavailable),
    (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "hunter2 not found"},
     ModelVersionNotFound),
    (200, "hunter2 " * 100, RegistryUnavailable),
    (200, {"model_version": {"version": "hunter2"}}, RegistryUnavailable),
])
async def test_registry_replies_never_reach_the_message(status, body, exc):
    def handler(request):
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    client = RegistryClient(transport=httpx.MockTransport(handler))
    ref = parse_spec({"model": {"uri": "models:/m@champion"}}).model
    with pytest.raises(exc) as info:
        await client.resolve(ref, registry=RegistryEntry(name="prod", url="http://prod:5000"))
    await client.aclose()
    assert "hunter2" not in str(info.value) and "script" not in str(info.value)
    assert "prod" in str(info.value)
