"""Pure rendering: a SentimentModel (spec + a resolved model version) -> the Kubernetes objects
the operator owns. No I/O here; every function returns plain dicts that tests validate against
the Kubernetes and KubeRay schemas.

Objects per SentimentModel ``NAME`` (track ``stable``), plus ``NAME-canary`` copies while a
canary runs (track ``canary``):

* ``RayService`` NAME: KubeRay runs the Ray cluster and the Serve application
  (``services.inference.app:app_builder``, the resolved version pinned as ``models:/n/V``).
* ``Service`` NAME: port 8000 of the Serve proxies of that track's Ray pods (a stable name for
  in-cluster clients that does not depend on KubeRay's generated cluster names).
* ``Ingress`` NAME (if enabled), and during a canary an ingress-nginx canary Ingress
  ``NAME-canary`` carrying ``canary-weight``.
"""

from __future__ import annotations

from typing import Any

import yaml

from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import API_VERSION, KIND, SentimentModelSpec

APP_IMPORT_PATH = "services.inference.app:app_builder"
LLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"
LLM_ROUTE = "/llm"
MANAGED_BY = "shopsense-operator"
LABEL_MODEL = "shopsense.io/sentimentmodel"
LABEL_TRACK = "shopsense.io/track"
LABEL_VERSION = "shopsense.io/model-version"
STABLE, CANARY = "stable", "canary"
_NON_ROOT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
             "seccompProfile": {"type": "RuntimeDefault"}}
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def object_name(name: str, track: str) -> str:
    return name if track == STABLE else f"{name}-{track}"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def labels(name: str, track: str, version: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": "shopsense-inference",
           "app.kubernetes.io/instance": name,
           "app.kubernetes.io/component": "inference",
           "app.kubernetes.io/managed-by": MANAGED_BY,
           LABEL_MODEL: name, LABEL_TRACK: track}
    if version is not None:
        out[LABEL_VERSION] = version
    return out


def selector(name: str, track: str) -> dict[str, str]:
    """Pods of one track; ``ray.io/serve`` is set by KubeRay on pods whose proxy is healthy."""
    return {LABEL_MODEL: name, LABEL_TRACK: track, "ray.io/serve": "true"}


def pinned_uri(spec: SentimentModelSpec, version: str) -> str:
    name, _, _ = spec.model.parts
    return f"models:/{name}/{version}"


def uses_gpu(spec: SentimentModelSpec) -> bool:
    return spec.resources.gpus > 0 or spec.backend == "vllm"


def image_for(spec: SentimentModelSpec, settings: OperatorSettings) -> str:
    if spec.image:
        return spec.image
    return settings.gpu_image if uses_gpu(spec) else settings.image


def registry_url(spec: SentimentModelSpec, settings: OperatorSettings) -> str | None:
    return spec.model.registry_url or settings.registry_url


def settings_env(spec: SentimentModelSpec, settings: OperatorSettings) -> dict[str, str]:
    """``SHOPSENSE_*`` variables handed to the replicas through ``AppArgs.settings_env``."""
    env: dict[str, str] = {}
    url = registry_url(spec, settings)
    if url:
        env["SHOPSENSE_MLFLOW_TRACKING_URI"] = url
    r = spec.retrieval
    if r.qdrant_url:
        env["SHOPSENSE_QDRANT_URL"] = r.qdrant_url
    if r.opensearch_url:
        env["SHOPSENSE_OPENSEARCH_URL"] = r.opensearch_url
    env["SHOPSENSE_SERVE__SIMILAR_MODE"] = r.similar_mode
    if spec.backend == "vllm":
        v = spec.vllm
        env["SHOPSENSE_VLLM__BASE_URL"] = f"http://127.0.0.1:{settings.service_port}{LLM_ROUTE}"
        env["SHOPSENSE_VLLM__MODEL_ID"] = v.model_id
        env["SHOPSENSE_VLLM__MAX_MODEL_LEN"] = str(v.max_model_len)
        if v.model_source:
            env["SHOPSENSE_VLLM__MODEL_SOURCE"] = v.model_source
    return env


def app_args(spec: SentimentModelSpec, version: str, settings: OperatorSettings) -> dict[str, Any]:
    """``AppArgs`` of the inference application (services/inference/app.py)."""
    args: dict[str, Any] = {
        "model_uri": pinned_uri(spec, version),
        "backend": spec.backend,
        "classifier_num_cpus": 1.0,
        "classifier_num_gpus": 1.0 if spec.backend == "torch" and spec.resources.gpus > 0 else 0.0,
        "retrieval": spec.retrieval.enabled,
        "similar_k": spec.retrieval.similar_k,
        "settings_env": settings_env(spec, settings),
    }
    if not spec.autoscaling.enabled:
        args["classifier_replicas"] = spec.replicas
    return args


def llm_config(spec: SentimentModelSpec) -> dict[str, Any]:
    """``ray.serve.llm.LLMConfig`` of the LLaVA model (same fields as
    ``services.inference.backends.vllm.llm_config_dict``; a test keeps them congruent)."""
    v = spec.vllm
    a = spec.autoscaling
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": v.model_id,
                                 "model_source": v.model_source or v.model_id},
        "engine_kwargs": {
            "max_model_len": v.max_model_len,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "tensor_parallel_size": v.tensor_parallel_size,
            "limit_mm_per_prompt": {"image": 1},
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        },
        "deployment_config": {"autoscaling_config": {
            "min_replicas": a.min_replicas if a.enabled else spec.replicas,
            "max_replicas": a.max_replicas if a.enabled else spec.replicas,
            "target_ongoing_requests": 32,
        }},
    }
    if v.accelerator_type:
        config["accelerator_type"] = v.accelerator_type
    return config


def serve_config(spec: SentimentModelSpec, version: str,
                 settings: OperatorSettings) -> dict[str, Any]:
    """The Serve config (``serveConfigV2``) as a dict."""
    app: dict[str, Any] = {
        "name": "shopsense",
        "route_prefix": "/",
        "import_path": APP_IMPORT_PATH,
        "args": app_args(spec, version, settings),
    }
    if spec.autoscaling.enabled:
        a = spec.autoscaling
        app["deployments"] = [{
            "name": "Classifier",
            "num_replicas": "auto",
            "autoscaling_config": {"min_replicas": a.min_replicas,
                                   "max_replicas": a.max_replicas,
                                   "target_ongoing_requests": a.target_ongoing_requests},
        }]
    apps = [app]
    if spec.backend == "vllm":
        apps.insert(0, {"name": "llm", "route_prefix": LLM_ROUTE, "import_path": LLM_IMPORT_PATH,
                        "args": {"llm_configs": [llm_config(spec)]}})
    return {"proxy_location": "EveryNode",
            "http_options": {"host": "0.0.0.0", "port": settings.service_port},
            "applications": apps}


def _env(spec: SentimentModelSpec, settings: OperatorSettings, version: str) -> list[dict]:
    env = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
           # counters as Prometheus counters only (not also as gauges of the same name)
           {"name": "RAY_EXPORT_COUNTER_AS_GAUGE", "value": "0"},
           {"name": "SHOPSENSE_MODEL_VERSION", "value": version}]
    env += [{"name": k, "value": v} for k, v in sorted(settings.pod_env.items())]
    return env


def _env_from(spec: SentimentModelSpec, settings: OperatorSettings) -> list[dict]:
    names = list(dict.fromkeys([*settings.env_from_secrets, *spec.env_from_secrets]))
    return [{"secretRef": {"name": n}} for n in names]


def _container(name: str, spec: SentimentModelSpec, settings: OperatorSettings, version: str,
               res: Any, gpus: int, ports: list[dict]) -> dict[str, Any]:
    requests = {"cpu": str(res.cpu), "memory": str(res.memory)}
    limits = dict(requests)
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    c: dict[str, Any] = {
        "name": name,
        "image": image_for(spec, settings),
        "imagePullPolicy": spec.image_pull_policy,
        "resources": {"requests": requests, "limits": limits},
        "env": _env(spec, settings, version),
        "ports": ports,
        "securityContext": dict(_CONTAINER_SECURITY),
        # Ray writes its session files under /tmp/ray: a writable emptyDir.
        "volumeMounts": [{"name": "ray-tmp", "mountPath": "/tmp/ray"}],
    }
    env_from = _env_from(spec, settings)
    if env_from:
        c["envFrom"] = env_from
    return c


def render_rayservice(body: dict[str, Any], spec: SentimentModelSpec, version: str,
                      settings: OperatorSettings, *, track: str = STABLE) -> dict[str, Any]:
    """The KubeRay RayService serving ``version``. The version label sits on the pod templates,
    so a new version changes ``rayClusterConfig`` and KubeRay's ``NewCluster`` upgrade brings
    up a fresh cluster and switches traffic only once it is healthy (the KubeRay strategy)."""
    meta = body["metadata"]
    name = meta["name"]
    pod_labels = labels(name, track, version)
    volumes = [{"name": "ray-tmp", "emptyDir": {}}]
    head_ports = [{"containerPort": 6379, "name": "gcs-server"},
                  {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"},
                  {"containerPort": settings.service_port, "name": "serve"},
                  {"containerPort": 8080, "name": "metrics"}]
    worker_ports = [{"containerPort": settings.service_port, "name": "serve"},
                    {"containerPort": 8080, "name": "metrics"}]
    head_pod: dict[str, Any] = {
        "securityContext": dict(_NON_ROOT),
        "containers": [_container("ray-head", spec, settings, version, spec.resources.head, 0,
                                  head_ports)],
        "volumes": volumes,
    }
    worker_pod: dict[str, Any] = {
        "securityContext": dict(_NON_ROOT),
        "containers": [_container("ray-worker", spec, settings, version, spec.resources.worker,
                                  spec.resources.gpus, worker_ports)],
        "volumes": volumes,
    }
    if spec.node_selector:
        worker_pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        worker_pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True)
                                     for t in spec.tolerations]
    w = spec.workers
    worker_group: dict[str, Any] = {
        "groupName": "gpu-workers" if spec.resources.gpus else "cpu-workers",
        "replicas": w.replicas,
        "minReplicas": w.min_replicas,
        "maxReplicas": max(w.max_replicas, w.replicas, w.min_replicas),
        "rayStartParams": {},
        "template": {"metadata": {"labels": pod_labels}, "spec": worker_pod},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": object_name(name, track),
            "namespace": meta["namespace"],
            "labels": labels(name, track, version),
            "annotations": {"shopsense.io/model-uri": pinned_uri(spec, version)},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": yaml.safe_dump(serve_config(spec, version, settings),
                                            sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": settings.ray_version,
                "enableInTreeAutoscaling": spec.autoscaling.enabled,
                "headGroupSpec": {
                    # The head runs the controller and a proxy, no model replicas.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"metadata": {"labels": pod_labels}, "spec": head_pod},
                },
                "workerGroupSpecs": [worker_group],
            },
        },
    }


def render_service(body: dict[str, Any], settings: OperatorSettings, *,
                   track: str = STABLE) -> dict[str, Any]:
    meta = body["metadata"]
    name = meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": object_name(name, track), "namespace": meta["namespace"],
                     "labels": labels(name, track),
                     "ownerReferences": [owner_reference(body)]},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name, track),
            "ports": [{"name": "http", "port": settings.service_port,
                       "targetPort": settings.service_port, "protocol": "TCP"}],
        },
    }


def render_ingress(body: dict[str, Any], spec: SentimentModelSpec, settings: OperatorSettings,
                   *, track: str = STABLE, weight: int | None = None) -> dict[str, Any]:
    """The Ingress of a track; the canary one carries ingress-nginx's canary annotations."""
    meta = body["metadata"]
    name = meta["name"]
    ing = spec.ingress
    annotations: dict[str, str] = {}
    if track == CANARY:
        annotations = {"nginx.ingress.kubernetes.io/canary": "true",
                       "nginx.ingress.kubernetes.io/canary-weight": str(weight or 0)}
    rule: dict[str, Any] = {"http": {"paths": [{
        "path": ing.path, "pathType": "Prefix",
        "backend": {"service": {"name": object_name(name, track),
                                "port": {"number": settings.service_port}}},
    }]}}
    if ing.host:
        rule["host"] = ing.host
    out: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": object_name(name, track), "namespace": meta["namespace"],
                     "labels": labels(name, track), "ownerReferences": [owner_reference(body)]},
        "spec": {"ingressClassName": ing.class_name, "rules": [rule]},
    }
    if annotations:
        out["metadata"]["annotations"] = annotations
    if ing.tls_secret_name and ing.host:
        out["spec"]["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret_name}]
    return out


def render_track(body: dict[str, Any], spec: SentimentModelSpec, version: str,
                 settings: OperatorSettings, *, track: str = STABLE,
                 weight: int | None = None) -> list[dict[str, Any]]:
    """Everything one track needs: RayService, Service and (if enabled) Ingress."""
    objs = [render_rayservice(body, spec, version, settings, track=track),
            render_service(body, settings, track=track)]
    if spec.ingress.enabled:
        objs.append(render_ingress(body, spec, settings, track=track, weight=weight))
    return objs


def endpoint(body: dict[str, Any], spec: SentimentModelSpec, settings: OperatorSettings) -> str:
    meta = body["metadata"]
    if spec.ingress.enabled and spec.ingress.host:
        scheme = "https" if spec.ingress.tls_secret_name else "http"
        return f"{scheme}://{spec.ingress.host}{spec.ingress.path}"
    return f"http://{meta['name']}.{meta['namespace']}.svc:{settings.service_port}"
