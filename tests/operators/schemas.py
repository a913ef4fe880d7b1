"""Strict schema validation of rendered objects, shared by the operator, chart and manifest
tests: built-in kinds with ``kubernetes-validate`` (strict: unknown fields are errors), KubeRay
kinds against the openAPIV3Schema of KubeRay's CRDs (vendored in tests/operators/crds/kuberay), Gateway API
kinds against its CRDs (vendored in tests/operators/crds/gateway-api), our own SentimentModel
against its CRD. CRD schemas are made strict the way ``kubectl apply
--validate=strict`` is: unknown fields are errors unless ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.35.0"


KUBERAY = Path(__file__).with_name("crds") / "kuberay"
GATEWAY_API = Path(__file__).with_name("crds") / "gateway-api"


def strict(schema: Any) -> Any:
    """openAPIV3Schema -> JSON Schema that rejects unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()
               if k not in ("properties", "items", "additionalProperties")}
        if "properties" in schema:
            out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
            if ("additionalProperties" not in schema
                    and not schema.get("x-kubernetes-preserve-unknown-fields")):
                out["additionalProperties"] = False
        if "items" in schema:
            out["items"] = strict(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            out["additionalProperties"] = strict(schema["additionalProperties"])
        elif "additionalProperties" in schema:
            out["additionalProperties"] = schema["additionalProperties"]
        if schema.get("x-kubernetes-int-or-string"):
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def crd_schemas(crd: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    out = {}
    for v in crd["spec"]["versions"]:
        schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
        schema.setdefault("properties", {})["metadata"] = {"type": "object"}
        out[(f"{group}/{v['name']}", kind)] = strict(schema)
    return out


@lru_cache(maxsize=1)
def custom_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for f in ("ray.io_rayservices.yaml", "ray.io_rayclusters.yaml"):
        out.update(crd_schemas(yaml.safe_load((KUBERAY / f).read_text())))
    for f in sorted(GATEWAY_API.glob("*.yaml")):
        out.update(crd_schemas(yaml.safe_load(f.read_text())))
    from operators.sentimentmodel.spec import load_crd

    out.update(crd_schemas(load_crd()))
    return out


#: Kinds from other projects' CRDs whose schemas are not here: checked for shape only.
SHAPE_ONLY = {("monitoring.coreos.com/v1", "ServiceMonitor"),
              ("monitoring.coreos.com/v1", "PodMonitor"),
              ("monitoring.coreos.com/v1", "PrometheusRule"),
              ("kopf.dev/v1", "ClusterKopfPeering"), ("kopf.dev/v1", "KopfPeering"),
              ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy")}


def validate_object(obj: dict[str, Any]) -> None:
    """Raise if ``obj`` would be rejected by a strict API server (schemas only, no CEL)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    assert obj.get("metadata", {}).get("name"), f"{key}: no metadata.name"
    if key in custom_schemas():
        jsonschema.validate(obj, custom_schemas()[key])
        if key == ("ray.io/v1", "RayService"):
            # KubeRay embeds core pod templates: check them with the core schema too (what the
            # API server does when KubeRay creates the pods).
            ray = obj["spec"]["rayClusterConfig"]
            groups = [ray["headGroupSpec"], *ray.get("workerGroupSpecs", [])]
            for i, g in enumerate(groups):
                kubernetes_validate.validate(
                    {"apiVersion": "v1", "kind": "PodTemplate",
                     "metadata": {"name": f"{obj['metadata']['name']}-{i}"},
                     "template": g["template"]}, K8S_VERSION, strict=True)
        return
    if key in SHAPE_ONLY:
        assert set(obj) <= {"apiVersion", "kind", "metadata", "spec", "status"}, key
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
