"""Rendering: every object the operator writes validates strictly against the Kubernetes and
KubeRay schemas, and the Serve config matches the inference application's ``AppArgs``."""

from __future__ import annotations

import pytest
import yaml

from operators.sentimentmodel import render
from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import apply_defaults, load_crd, openapi_schema, parse_spec
from tests.operators.schemas import validate_object

CFG = OperatorSettings(registry_url="http://mlflow.default:5000", metrics_port=0,
                       pod_env={"SHOPSENSE_S3_ENDPOINT": "minio.shopsense.svc:9000"},
                       env_from_secrets=["shopsense-opensearch"])


def all_objects(body, version="4", canary="5"):
    spec = parse_spec(body["spec"])
    return (render.render_track(body, spec, version, CFG)
            + render.render_track(body, spec, canary, CFG, track=render.CANARY, weight=10))


@pytest.mark.parametrize("which", ["cpu_body", "gpu_body"])
def test_every_rendered_object_validates_strictly(which, request):
    body = request.getfixturevalue(which)
    objs = all_objects(body)
    kinds = [o["kind"] for o in objs]
    assert kinds.count("RayService") == 2 and kinds.count("Service") == 2
    for obj in objs:
        validate_object(obj)
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref == {"apiVersion": "shopsense.io/v1alpha1", "kind": "SentimentModel",
                       "name": body["metadata"]["name"], "uid": body["metadata"]["uid"],
                       "controller": True, "blockOwnerDeletion": True}


def test_the_sentimentmodel_itself_validates(cpu_body, gpu_body):
    for body in (cpu_body, gpu_body):
        validate_object(body)
        validate_object({**body, "spec": apply_defaults(openapi_schema()["properties"]["spec"],
                                                        body["spec"])})


def test_schema_rejects_unknown_and_out_of_range_fields(cpu_body):
    import jsonschema

    bad = dict(cpu_body, spec={**cpu_body["spec"], "replicaz": 2})
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
    bad = dict(cpu_body, spec={**cpu_body["spec"], "backend": "onnx"})
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
    bad = dict(cpu_body, spec={**cpu_body["spec"], "rollout": {"maxErrorRate": 2}})
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
    bad = dict(cpu_body, spec={**cpu_body["spec"], "model": {"uri": "s3://bucket/model"}})
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)


def test_crd_shape_printer_columns_and_status():
    crd = load_crd()
    validate_object(crd)
    v = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Namespaced" and "sm" in crd["spec"]["names"]["shortNames"]
    assert v["subresources"] == {"status": {}}
    cols = {c["name"]: c["jsonPath"] for c in v["additionalPrinterColumns"]}
    assert list(cols) == ["Model", "Version", "Backend", "Phase", "Ready", "Age"]
    assert cols["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    status = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for key in ("observedGeneration", "resolvedVersion", "previousVersion", "phase", "endpoint",
                "conditions"):
        assert key in status


def test_defaults_from_the_crd_parse_into_the_typed_spec():
    spec = parse_spec({})
    assert spec.model.uri == "models:/shopsense-sentiment@champion"
    assert spec.backend == "torch" and spec.replicas == 1
    assert [s.weight for s in spec.rollout.canary_steps] == [10, 50]
    assert spec.rollout.canary_steps[0].pause_seconds == 60
    assert spec.rollout.strategy == "Canary" and spec.rollout.auto_promote
    # defaulting fills nested items too (pauseSeconds inside user-given steps)
    spec = parse_spec({"rollout": {"canarySteps": [{"weight": 25}]}})
    assert spec.rollout.canary_steps[0].pause_seconds == 60


def test_serve_config_pins_the_resolved_version_and_matches_appargs(cpu_body):
    from services.inference.app import AppArgs

    spec = parse_spec(cpu_body["spec"])
    rs = render.render_rayservice(cpu_body, spec, "4", CFG)
    cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = cfg["applications"]
    assert app["import_path"] == "services.inference.app:app_builder"
    args = app["args"]
    assert args["model_uri"] == "models:/shopsense-sentiment/4"
    assert set(args) <= set(AppArgs.model_fields), set(args) - set(AppArgs.model_fields)
    parsed = AppArgs(**args)
    assert parsed.similar_k == 5 and parsed.classifier_replicas == 1
    env = args["settings_env"]
    assert env["SHOPSENSE_QDRANT_URL"] == "http://qdrant.shopsense.svc:6333"
    assert env["SHOPSENSE_OPENSEARCH_URL"] == "http://opensearch.shopsense.svc:9200"
    assert env["SHOPSENSE_MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert head["metadata"]["labels"]["shopsense.io/model-version"] == "4"
    c = head["spec"]["containers"][0]
    assert {"secretRef": {"name": "shopsense-minio"}} in c["envFrom"]
    assert {"secretRef": {"name": "shopsense-opensearch"}} in c["envFrom"]
    assert c["image"] == CFG.image
    assert head["spec"]["securityContext"]["runAsNonRoot"] is True


def test_gpu_vllm_rayservice(gpu_body):
    from services.inference.backends.vllm import llm_config_dict
    from shopsense.settings import VLLMSettings

    spec = parse_spec(gpu_body["spec"])
    rs = render.render_rayservice(gpu_body, spec, "7", CFG)
    group = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    pod = group["template"]["spec"]
    assert group["groupName"] == "gpu-workers"
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and limits["cpu"] == "8"
    assert pod["nodeSelector"] == {"shopsense.io/gpu-pool": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert pod["containers"][0]["image"] == CFG.gpu_image
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
    llm, app = cfg["applications"]
    assert llm["import_path"] == "ray.serve.llm:build_openai_app" and llm["route_prefix"] == "/llm"
    ours = llm["args"]["llm_configs"][0]
    theirs = llm_config_dict(VLLMSettings(model_id=spec.vllm.model_id, accelerator_type="L4",
                                          max_model_len=4096), min_replicas=1, max_replicas=2)
    assert ours == theirs  # congruent with the inference service's own LLMConfig
    assert app["args"]["backend"] == "vllm" and "classifier_replicas" not in app["args"]
    assert app["deployments"][0]["num_replicas"] == "auto"
    assert app["deployments"][0]["autoscaling_config"]["max_replicas"] == 2
    assert app["args"]["settings_env"]["SHOPSENSE_VLLM__BASE_URL"] == "http://127.0.0.1:8000/llm"


def test_canary_ingress_and_services(cpu_body):
    spec = parse_spec(cpu_body["spec"])
    ing = render.render_ingress(cpu_body, spec, CFG, track=render.CANARY, weight=50)
    assert ing["metadata"]["name"] == "reviews-canary"
    assert ing["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/canary": "true",
                                              "nginx.ingress.kubernetes.io/canary-weight": "50"}
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "reviews-canary", "port": {"number": 8000}}
    svc = render.render_service(cpu_body, CFG, track=render.CANARY)
    assert svc["spec"]["selector"] == {"shopsense.io/sentimentmodel": "reviews",
                                       "shopsense.io/track": "canary", "ray.io/serve": "true"}
    assert render.endpoint(cpu_body, spec, CFG) == "http://shopsense.localtest.me/"


def test_rendering_is_deterministic(cpu_body):
    assert all_objects(cpu_body) == all_objects(cpu_body)
