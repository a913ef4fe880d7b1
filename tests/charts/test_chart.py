"""charts/shopsense: ``helm lint --strict`` and ``helm template`` pass, and every rendered
object validates strictly (Kubernetes schemas, KubeRay/our CRD schemas). Needs the helm binary
that ``make tools`` downloads into .tools/bin (``make test`` does it first)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.operators.schemas import validate_object

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "shopsense"


def _helm() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if not found:
        if os.environ.get("SHOPSENSE_REQUIRE_HELM") == "1":
            pytest.fail("helm is missing: run `make tools`")
        pytest.skip("helm is missing: run `make tools` (make test does)")
    return found


def helm(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess:
    return subprocess.run([_helm(), *args[:1], *(["t"] if args[0] == "template" else []),
                           str(chart), *args[1:]], capture_output=True, text=True, timeout=120)


def render(*sets: str, chart: Path = CHART) -> list[dict]:
    args = ["template", "-n", "shop", "--include-crds"]
    for s in sets:
        args += ["--set", s]
    r = helm(*args, chart=chart)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


ALL_ON = ("monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true",
          "settings.prometheusUrl=http://prometheus.monitoring:9090", "defaultModel.gpu=true",
          "operator.watchNamespaces={shop,staging}", "monitoring.prometheusRule.enabled=true",
          "gateway.tlsSecretName=shopsense-tls")


def test_helm_lint_strict():
    r = helm("lint", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    r = helm("lint", "--strict", *[x for s in ALL_ON for x in ("--set", s)])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("sets", [(), ALL_ON, ("defaultModel.enabled=false",
                                               "serviceAccount.create=false", "rbac.create=false")])
def test_every_rendered_object_validates_strictly(sets):
    docs = render(*sets)
    assert docs
    for d in docs:
        validate_object(d)


def test_defaults_render_the_expected_objects():
    kinds = sorted(d["kind"] for d in render())
    for kind in ("CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole",
                 "ClusterRoleBinding", "SentimentModel", "ClusterKopfPeering", "Service"):
        assert kind in kinds, kind
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(*ALL_ON)}
    assert ("ServiceMonitor", "t-shopsense-operator") in docs
    pm = docs[("PodMonitor", "t-shopsense-inference")]
    assert "shopsense.io/track" in pm["spec"]["podTargetLabels"]
    sm = docs[("SentimentModel", "shopsense")]
    assert sm["spec"]["nodeSelector"] == {"shopsense.io/gpu-pool": "true"}
    assert sm["spec"]["model"]["registryUrl"] == "http://mlflow.mlflow.svc:5000"
    dep = docs[("Deployment", "t-shopsense-operator")]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["SHOPSENSE_OPERATOR_NAMESPACES"]) == ["shop", "staging"]
    assert json.loads(env["SHOPSENSE_OPERATOR_ENV_FROM_SECRETS"]) == [
        "shopsense-minio", "shopsense-mlflow", "shopsense-opensearch"]


def test_operator_env_parses_into_operator_settings(monkeypatch):
    from operators.sentimentmodel.settings import OperatorSettings

    dep = next(d for d in render(*ALL_ON) if d["kind"] == "Deployment")
    for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
        monkeypatch.setenv(e["name"], e["value"])
    cfg = OperatorSettings()
    (entry,) = cfg.registry_entries()
    assert entry.url == "http://mlflow.mlflow.svc:5000"
    assert entry.credentials_dir == "/etc/shopsense/registries/default"
    assert cfg.api_keys_secret == "shopsense-api-keys" and cfg.gateway_name == "shopsense"
    assert cfg.gateway_section == "https" and cfg.secret_allowed("shopsense-minio")
    assert not cfg.secret_allowed("minio-root") and cfg.network_policy
    assert cfg.pod_env["SHOPSENSE_S3_ENDPOINT"] == "minio.minio.svc:9000"
    assert cfg.namespaces == ["shop", "staging"] and cfg.tick_seconds == 30


def test_no_secret_values_in_the_chart():
    assert not [d for d in render(*ALL_ON) if d["kind"] == "Secret"]


def test_rbac_is_least_privilege():
    role = next(d for d in render() if d["kind"] == "ClusterRole")
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert "*" not in {v for vs in verbs.values() for v in vs}
    # watched (their status, instead of polling) and written
    assert verbs[("ray.io", "rayservices")] == {"get", "list", "watch", "create", "patch",
                                                "delete"}
    assert verbs[("shopsense.io", "sentimentmodels/finalizers")] == {"update"}
    assert ("", "secrets") not in verbs and ("", "pods") not in verbs
    assert verbs[("", "events")] == {"create"}


def test_values_schema_rejects_bad_values():
    for bad in ("operator.logFormat=xml", "defaultModel.name=Bad_Name", "bogus=1",
                "settings.mlflowUrl=ftp://x"):
        r = helm("template", "-n", "shop", "--set", bad)
        assert r.returncode != 0, bad
    r = helm("template", "-n", "shop", "--set", "monitoring.podMonitor.enabled=true")
    assert r.returncode != 0 and "settings.prometheusUrl" in r.stderr  # validateConfig


def test_crds_are_identical_to_the_operator_source():
    src = (ROOT / "operators" / "sentimentmodel" / "crd.yaml").read_bytes()
    assert (CHART / "crds" / "shopsense.io_sentimentmodels.yaml").read_bytes() == src
    assert (ROOT / "manifests" / "crds" / "shopsense.io_sentimentmodels.yaml").read_bytes() == src


def test_dashboards_folder_becomes_a_configmap(tmp_path):
    chart = tmp_path / "shopsense"
    shutil.copytree(CHART, chart)
    for f in (chart / "dashboards").glob("*.json"):
        f.unlink()
    assert not [d for d in render(chart=chart) if d["kind"] == "ConfigMap"]
    (chart / "dashboards" / "test-board.json").write_text(json.dumps({"title": "t", "panels": []}))
    cm = next(d for d in render(chart=chart) if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["test-board.json"])["title"] == "t"


# -- helm-unittest suites (charts/shopsense/tests), run through helm template ------------------

from tests.charts import unittest_runner  # noqa: E402

SUITE_CASES = [(f.name, t["it"], suite, t) for f, suite in unittest_runner.load_suites(CHART)
               for t in suite["tests"]]


@pytest.mark.parametrize("suite,test", [(c[2], c[3]) for c in SUITE_CASES],
                         ids=[f"{c[0]}::{c[1]}" for c in SUITE_CASES])
def test_helm_unittest_suite(suite, test):
    assert unittest_runner.run_test(_helm(), CHART, suite, test) == []


def test_the_suite_runner_catches_wrong_expectations():
    suite = {"templates": ["templates/pdb.yaml"]}
    wrong = {"it": "x", "asserts": [{"equal": {"path": "spec.maxUnavailable", "value": 3}},
                                    {"isKind": {"of": "Deployment"}},
                                    {"exists": {"path": "spec.nothing"}},
                                    {"hasDocuments": {"count": 2}},
                                    {"failedTemplate": {}}]}
    problems = unittest_runner.run_test(_helm(), CHART, suite, wrong)
    assert len(problems) == 5, problems
    assert unittest_runner.path_get({"a": [{"n": "x", "v": 1}]}, 'a[?(@.n == "x")].v') == 1
    assert unittest_runner.path_get({"a": {"b.c": 2}}, 'a["b.c"]') == 2
