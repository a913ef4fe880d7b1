"""Rendering: every object the operator writes validates strictly against the Kubernetes,
KubeRay and Gateway API schemas, the Serve config matches the inference application's
``AppArgs``, and what is exposed, mounted and allowed is what the operator means to."""

from __future__ import annotations

import pytest
import yaml

from operators.sentimentmodel import render
from operators.sentimentmodel.settings import OperatorSettings, RegistryEntry
from operators.sentimentmodel.spec import apply_defaults, load_crd, openapi_schema, parse_spec
from tests.operators.schemas import validate_object

CFG = OperatorSettings(registries=[RegistryEntry(name="default", url="http://mlflow.mlflow.svc:5000"),
                                   RegistryEntry(name="gpu", url="http://mlflow:5000")],
                       metrics_port=0,
                       pod_env={"SHOPSENSE_S3_ENDPOINT": "minio.shopsense.svc:9000"},
                       env_from_secrets=["shopsense-opensearch"],
                       gateway_name="shopsense", gateway_namespace="shopsense-gateway",
                       api_keys_secret="shopsense-api-keys")
#: where the registry keeps two LLaVA versions (MLflow 3: <experiment>/models/<m-id>/artifacts)
URIS = {"7": "s3://mlflow/3/models/m-0a1b/artifacts", "8": "s3://mlflow/3/models/m-9f8e/artifacts"}


def all_objects(body, version="4", canary="5", cfg=CFG):
    spec = parse_spec(body["spec"])
    uris = {version: URIS["7"], canary: URIS["8"]}
    return render.render_all(body, spec, cfg, stable=version, canary=(canary, 10),
                             download_uris=uris)


@pytest.mark.parametrize("which", ["cpu_body", "gpu_body"])
def test_every_rendered_object_validates_strictly(which, request):
    body = request.getfixturevalue(which)
    objs = all_objects(body)
    kinds = [o["kind"] for o in objs]
    assert kinds.count("RayService") == 2 and kinds.count("Service") == 2
    routed = body["spec"].get("ingress", {}).get("enabled", False)
    assert kinds.count("HTTPRoute") == int(routed) and kinds.count("NetworkPolicy") == 1
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
    assert list(cols) == ["Model", "Version", "Backend", "Phase", "Ready", "URL", "Age"]
    assert cols["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert cols["URL"] == ".status.endpoint"
    status = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for key in ("observedGeneration", "resolvedVersion", "previousVersion", "phase", "endpoint",
                "conditions", "adapter"):
        assert key in status
    assert status["conditions"]["items"]["required"] == [
        "type", "status", "reason", "message", "lastTransitionTime"]


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
    assert app["args"]["settings_env"]["SHOPSENSE_MODEL_VERSION"] == "4"
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
    """Backend vllm serving the base model (lora off): congruent with the inference service's
    own LLMConfig."""
    from services.inference.backends.vllm import llm_config_dict
    from shopsense.settings import VLLMSettings

    gpu_body["spec"]["vllm"]["lora"] = {"enabled": False}
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
    """api Ingress (clusters without Gateway API): the ingress-nginx canary Ingress."""
    cpu_body["spec"]["ingress"]["api"] = "Ingress"
    spec = parse_spec(cpu_body["spec"])
    ing = render.render_ingress(cpu_body, spec, CFG, track=render.CANARY, weight=50)
    validate_object(ing)
    assert ing["metadata"]["name"] == "reviews-canary"
    assert ing["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/canary": "true",
                                              "nginx.ingress.kubernetes.io/canary-weight": "50"}
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "reviews-canary", "port": {"number": 8000}}
    svc = render.render_service(cpu_body, CFG, track=render.CANARY)
    assert svc["spec"]["selector"] == {"shopsense.io/sentimentmodel": "reviews",
                                       "shopsense.io/track": "canary", "ray.io/serve": "true"}
    assert render.endpoint(cpu_body, spec, CFG) == "http://shopsense.localtest.me/"
    kinds = [o["kind"] for o in all_objects(cpu_body)]
    assert kinds.count("Ingress") == 2 and "HTTPRoute" not in kinds


def test_httproute_weights_the_canary_and_validates_strictly(cpu_body):
    import jsonschema

    spec = parse_spec(cpu_body["spec"])
    route = render.render_httproute(cpu_body, spec, CFG, canary_weight=10)
    validate_object(route)
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io",
                                            "kind": "Gateway", "name": "shopsense",
                                            "namespace": "shopsense-gateway"}]
    assert route["spec"]["hostnames"] == ["shopsense.localtest.me"]
    (rule,) = route["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [
        ("reviews", 90), ("reviews-canary", 10)]
    alone = render.render_httproute(cpu_body, spec, CFG)
    assert [(b["name"], b["weight"]) for b in alone["spec"]["rules"][0]["backendRefs"]] == [
        ("reviews", 100)]
    # the schema is strict: an unknown field or a bad match type is rejected
    bad = yaml.safe_load(yaml.safe_dump(route))
    bad["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
    bad = yaml.safe_load(yaml.safe_dump(route))
    bad["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Glob"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
    # the spec's own Gateway wins over the operator's, with its listener
    cpu_body["spec"]["ingress"].update(gatewayName="edge", gatewayNamespace="infra",
                                       sectionName="https")
    spec = parse_spec(cpu_body["spec"])
    route = render.render_httproute(cpu_body, spec, CFG)
    assert route["spec"]["parentRefs"][0] | {} == {
        "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
        "namespace": "infra", "sectionName": "https"}
    assert render.endpoint(cpu_body, spec, CFG) == "https://shopsense.localtest.me/"


def _routed(path: str, matches: list[tuple[str, str]]) -> bool:
    """Gateway API path matching: Exact, or PathPrefix by whole path elements."""
    for kind, value in matches:
        if kind in ("Exact",) and path == value:
            return True
        if kind in ("PathPrefix", "Prefix"):
            v = value.rstrip("/")
            if v == "" or path == v or path.startswith(v + "/"):
                return True
    return False


def test_the_public_route_serves_the_api_and_never_metrics_llm_or_ray(cpu_body, gpu_body):
    """Every public route of the real API is reachable; /metrics, the LLM app, Serve's own
    routes and Ray's ports are not, through the HTTPRoute or the Ingress."""
    from services.inference.api import build_api
    from shopsense.settings import Settings

    app = build_api(service=None, settings=Settings())
    api_paths = {r.path for r in app.routes if hasattr(r, "path")}
    assert "/metrics" in api_paths and "/v1/sentiment" in api_paths
    for body in (cpu_body, gpu_body):
        body["spec"]["ingress"] = {"enabled": True, "host": "x.example"}
        for api in ("Gateway", "Ingress"):
            body["spec"]["ingress"]["api"] = api
            spec = parse_spec(body["spec"])
            routes = [o for o in all_objects(body) if o["kind"] in ("HTTPRoute", "Ingress")]
            for route in routes:
                if route["kind"] == "HTTPRoute":
                    matches = [(m["path"]["type"], m["path"]["value"])
                               for r in route["spec"]["rules"] for m in r["matches"]]
                    ports = {b["port"] for r in route["spec"]["rules"] for b in r["backendRefs"]}
                else:
                    paths = route["spec"]["rules"][0]["http"]["paths"]
                    matches = [(p["pathType"], p["path"]) for p in paths]
                    ports = {p["backend"]["service"]["port"]["number"] for p in paths}
                assert ports == {8000}  # the Serve proxy only: no Ray port
                for path in sorted(api_paths - {"/metrics"}):
                    concrete = path.replace("{name}", "app.js")
                    assert _routed(concrete, matches), (api, path)
                for path in ("/metrics", "/llm", "/llm/v1/chat/completions", "/llm/v1/models",
                             "/-/routes", "/-/healthz", "/metricsz", "/v1x"):
                    assert not _routed(path, matches), (api, path)
            assert spec.ingress.api == api


def test_network_policy_lets_only_the_gateway_kuberay_and_prometheus_in(cpu_body):
    spec = parse_spec(cpu_body["spec"])
    np = render.render_network_policy(cpu_body, spec, CFG)
    validate_object(np)
    assert np["spec"]["podSelector"] == {"matchLabels": {"shopsense.io/sentimentmodel":
                                                         "reviews"}}
    assert np["spec"]["policyTypes"] == ["Ingress"]
    by_port = {}
    for rule in np["spec"]["ingress"]:
        ports = tuple(p["port"] for p in rule.get("ports", [])) or ("any",)
        by_port[ports] = rule["from"]
    # the model's own pods (Ray's internal traffic; a canary calling the stable LLM app)
    assert by_port[("any",)] == [{"podSelector": {"matchLabels": {
        "shopsense.io/sentimentmodel": "reviews"}}}]
    # the Serve port from the Gateway's namespace only
    assert by_port[(8000,)] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "shopsense-gateway"}}}]
    # Ray's dashboard only from the KubeRay operator; the metrics port only from Prometheus
    (kuberay,) = by_port[(8265,)]
    assert kuberay["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name":
                                                           "kuberay"}
    assert kuberay["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    assert set(by_port) == {("any",), (8000,), (8265,), (8080,)}  # no GCS, no Ray client port


def test_ray_token_auth_read_only_pods_and_the_api_keys_file(cpu_body):
    spec = parse_spec(cpu_body["spec"])
    rs = render.render_rayservice(cpu_body, spec, "4", CFG)
    ray = rs["spec"]["rayClusterConfig"]
    assert ray["authOptions"] == {"mode": "token"}
    # the dashboard listens beyond localhost only with token authentication on
    assert ray["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    args = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["settings_env"]["SHOPSENSE_AUTH__KEYS_FILE"] == "/etc/shopsense/auth/keys"
    for group in (ray["headGroupSpec"], *ray["workerGroupSpecs"]):
        pod = group["template"]["spec"]
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert {"/tmp", "/home/ray/.shopsense", "/home/ray/.cache"} <= set(mounts)
        assert mounts["/etc/shopsense/auth"]["readOnly"] is True
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["api-keys"]["secret"] == {"secretName": "shopsense-api-keys",
                                              "defaultMode": 0o440,
                                              "items": [{"key": "keys", "path": "keys"}]}
        # no MinIO root credentials: only the Secrets named by policy, as references
        assert all("secretRef" in e for e in c.get("envFrom", []))
    without = OperatorSettings(**{**CFG.model_dump(), "api_keys_secret": None})
    rs = render.render_rayservice(cpu_body, spec, "4", without)
    args = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert "SHOPSENSE_AUTH__KEYS_FILE" not in args["settings_env"]


def test_kuberay_incremental_upgrade_options(gpu_body):
    gpu_body["spec"]["rollout"] = {"strategy": "KubeRayIncremental",
                                   "incremental": {"stepSizePercent": 5, "intervalSeconds": 10}}
    cfg = OperatorSettings(**{**CFG.model_dump(), "gateway_class_name": "istio",
                              "kuberay_incremental_upgrade": True})
    spec = parse_spec(gpu_body["spec"])
    rs = render.render_rayservice(gpu_body, spec, "7", cfg, download_uri=URIS["7"])
    validate_object(rs)
    assert rs["spec"]["upgradeStrategy"] == {
        "type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {"gatewayClassName": "istio", "stepSizePercent": 5,
                                  "intervalSeconds": 10, "maxSurgePercent": 100}}
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


def test_rendering_is_deterministic(cpu_body):
    assert all_objects(cpu_body) == all_objects(cpu_body)


# -- LLaVA versions as LoRA adapters (ray.serve.llm multi-LoRA) --------------------------------

def test_adapter_ids_come_from_where_the_registry_keeps_each_version(gpu_body):
    spec = parse_spec(gpu_body["spec"])
    base, lora_id = render.lora_location(spec, URIS["7"])
    assert base == "s3://mlflow/3/models"
    assert lora_id == "m-0a1b/artifacts/artifacts/bundle/adapter"
    assert render.adapter_model_id(spec, URIS["7"]) == (
        "llava-hf/llava-v1.6-mistral-7b-hf:m-0a1b/artifacts/artifacts/bundle/adapter")
    assert render.adapter_model_id(spec, URIS["7"]) != render.adapter_model_id(spec, URIS["8"])
    # a version registered from a plain source folder: versions share its parent
    assert render.lora_location(spec, "s3://models/llava/5") == (
        "s3://models/llava", "5/artifacts/bundle/adapter")
    gpu_body["spec"]["vllm"]["lora"] = {"loadingPath": "s3://elsewhere"}
    with pytest.raises(ValueError, match="not under the LoRA loading path"):
        render.lora_location(parse_spec(gpu_body["spec"]), URIS["7"])


def test_the_rendered_llm_app_serves_the_versions_adapter(gpu_body):
    """The LLM app loads adapters from the registry's folder; the API names the version's
    adapter; ray.serve.llm's own LLMConfig accepts the config."""
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    spec = parse_spec(gpu_body["spec"])
    rs = render.render_rayservice(gpu_body, spec, "7", CFG, download_uri=URIS["7"])
    validate_object(rs)
    llm, app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    (config,) = llm["args"]["llm_configs"]
    assert config["lora_config"] == {"dynamic_lora_loading_path": "s3://mlflow/3/models",
                                     "max_num_adapters_per_replica": 4}
    assert config["engine_kwargs"]["enable_lora"] is True
    assert config["engine_kwargs"]["max_lora_rank"] == 16
    parsed = LLMConfig(**config)
    assert parsed.lora_config.dynamic_lora_loading_path == "s3://mlflow/3/models"
    env = app["args"]["settings_env"]
    assert env["SHOPSENSE_VLLM__MODEL_ID"] == render.adapter_model_id(spec, URIS["7"])
    assert env["SHOPSENSE_VLLM__MODEL_SOURCE"] == "models:/shopsense-llava/7"
    # the version is only in the Serve config: the pods (the GPU cluster) do not change
    rs8 = render.render_rayservice(gpu_body, spec, "8", CFG, download_uri=URIS["8"])
    assert rs8["spec"]["rayClusterConfig"] == rs["spec"]["rayClusterConfig"]
    assert rs8["spec"]["serveConfigV2"] != rs["spec"]["serveConfigV2"]
    assert rs8["metadata"]["labels"]["shopsense.io/model-version"] == "8"
    llm8, app8 = yaml.safe_load(rs8["spec"]["serveConfigV2"])["applications"]
    assert llm8 == llm  # the LLM deployment is untouched: no reload of the base model
    assert app8["args"]["settings_env"]["SHOPSENSE_VLLM__MODEL_ID"].endswith(
        "m-9f8e/artifacts/artifacts/bundle/adapter")


def test_a_canary_by_adapter_is_a_small_cpu_cluster_using_the_stable_llm(gpu_body):
    spec = parse_spec(gpu_body["spec"])
    rs = render.render_rayservice(gpu_body, spec, "8", CFG, track=render.CANARY,
                                  download_uri=URIS["8"], stable_download_uri=URIS["7"])
    validate_object(rs)
    (app,) = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]  # no LLM app
    env = app["args"]["settings_env"]
    assert env["SHOPSENSE_VLLM__BASE_URL"] == "http://reviews-llava.shop.svc:8000/llm"
    assert env["SHOPSENSE_VLLM__MODEL_ID"].endswith("m-9f8e/artifacts/artifacts/bundle/adapter")
    ray = rs["spec"]["rayClusterConfig"]
    (group,) = ray["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits and group["groupName"] == "cpu-workers"
    assert group["template"]["spec"]["containers"][0]["image"] == CFG.image
    assert "nodeSelector" not in group["template"]["spec"]


def test_request_bodies_name_the_adapter(gpu_body):
    """The API's vLLM backend, configured from what the operator renders, names the version's
    adapter in each chat-completions request."""
    import httpx
    from PIL import Image

    from services.inference.backends.base import ClassifierInput
    from services.inference.backends.vllm import VLLMBackend
    from shopsense.settings import Settings

    spec = parse_spec(gpu_body["spec"])
    rs = render.render_rayservice(gpu_body, spec, "7", CFG, download_uri=URIS["7"])
    env = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][1]["args"]["settings_env"]
    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        body = __import__("json").loads(request.content)
        seen.append((str(request.url), body))
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": '{"label":"negative"}'}}]})

    settings = Settings(vllm={"base_url": env["SHOPSENSE_VLLM__BASE_URL"],
                              "model_id": env["SHOPSENSE_VLLM__MODEL_ID"],
                              "model_source": env["SHOPSENSE_VLLM__MODEL_SOURCE"]})
    with VLLMBackend(settings, transport=httpx.MockTransport(server)) as backend:
        (out,) = backend.predict_batch([ClassifierInput(text="cracked screen",
                                                        image=Image.new("RGB", (8, 8)))])
        assert backend.model.name == env["SHOPSENSE_VLLM__MODEL_ID"]
        assert backend.model.uri == "models:/shopsense-llava/7"
    assert out.label == "negative"
    url, body = seen[0]
    assert url == "http://127.0.0.1:8000/llm/v1/chat/completions"
    assert body["model"] == render.adapter_model_id(spec, URIS["7"])
