"""Pure rendering: a SentimentModel (spec + status) -> the Kubernetes objects the operator
owns. No I/O here; every function returns plain dicts that tests validate against the
Kubernetes, KubeRay and Gateway API schemas.

Objects per SentimentModel ``NAME`` (track ``stable``), plus ``NAME-canary`` copies while a
canary runs (track ``canary``):

* ``RayService`` NAME: KubeRay runs the Ray cluster and the Serve application
  (``services.inference.app:app_builder``, the resolved version pinned as ``models:/n/V``).
  KubeRay token authentication is on; the dashboard listens on all addresses only with it.
* ``Service`` NAME: port 8000 of the Serve proxies of that track's Ray pods (a stable name for
  in-cluster clients that does not depend on KubeRay's generated cluster names).
* The public route (if enabled): an ``HTTPRoute`` NAME (Gateway API; a canary is a second,
  weighted backendRef) or an ``Ingress`` NAME (plus an ingress-nginx canary Ingress
  ``NAME-canary``). Either one routes only the API's public paths (:data:`PUBLIC_PATHS`):
  never ``/metrics``, the LLM app (``/llm``) or the Serve proxy's own ``/-/`` routes.
* ``NetworkPolicy`` NAME: the Ray pods accept the Serve port only from the Gateway/ingress
  namespaces, Ray's dashboard only from the KubeRay operator, the metrics port only from
  Prometheus, and anything from each other.

Backend ``vllm`` with LoRA (``spec.vllm.lora.enabled``): the stable RayService runs the base
model in ``ray.serve.llm`` with multi-LoRA; each registry version is an adapter id
(``<base model id>:<path of its adapter under the loading path>``), which is all a new version
changes (the Serve config, not the cluster). Its canary is a CPU-only RayService whose API
names the candidate's adapter to the stable RayService's LLM app.
"""

from __future__ import annotations

from typing import Any

import yaml

from operators.sentimentmodel.settings import OperatorSettings, RegistryEntry
from operators.sentimentmodel.spec import API_VERSION, KIND, SentimentModelSpec

APP_IMPORT_PATH = "services.inference.app:app_builder"
LLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"
LLM_ROUTE = "/llm"
MANAGED_BY = "shopsense-operator"
LABEL_MODEL = "shopsense.io/sentimentmodel"
LABEL_TRACK = "shopsense.io/track"
LABEL_VERSION = "shopsense.io/model-version"
STABLE, CANARY = "stable", "canary"
FIELD_MANAGER = "shopsense-operator"
_NON_ROOT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
             "seccompProfile": {"type": "RuntimeDefault"}}
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}
#: What the images write (images/inference-*.Dockerfile: user ray, SHOPSENSE_HOME under its
#: home): each an emptyDir, so the root filesystem can be read-only. /tmp holds Ray's session.
WRITABLE_DIRS = {"tmp": "/tmp", "shopsense-home": "/home/ray/.shopsense",
                 "cache": "/home/ray/.cache"}
API_KEYS_DIR = "/etc/shopsense/auth"
API_KEYS_FILE = f"{API_KEYS_DIR}/keys"
#: The API's public paths, as (Gateway API match type, value): the JSON API, the web page and
#: its assets, the probes and the OpenAPI page. /metrics, /llm and Serve's /-/ routes are not.
PUBLIC_PATHS: tuple[tuple[str, str], ...] = (
    ("PathPrefix", "/v1"), ("PathPrefix", "/ui"), ("Exact", "/"), ("Exact", "/healthz"),
    ("Exact", "/readyz"), ("PathPrefix", "/docs"), ("Exact", "/redoc"),
    ("Exact", "/openapi.json"))
#: Ray's ports in the pods: the Serve proxy, the dashboard (KubeRay talks to it), GCS, the Ray
#: client and the per-node metrics agent.
SERVE_PORT, DASHBOARD_PORT, GCS_PORT, CLIENT_PORT, METRICS_PORT = 8000, 8265, 6379, 10001, 8080
#: Where the pipeline's LLaVA versions keep their PEFT adapter, under the model's artifacts
#: (pipelines/train/llava.py save_bundle ``adapter/``, logged as pyfunc artifact ``bundle``).
LLAVA_ADAPTER_SUBPATH = "artifacts/bundle/adapter"
LORA_SCHEMES = ("s3://", "gs://", "abfss://", "azure://")


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


def registry_for(spec: SentimentModelSpec, settings: OperatorSettings) -> RegistryEntry | None:
    """The allow-listed registry a SentimentModel uses: the one whose URL it names, else the
    first one; None when it names a URL that is not allowed (or none is configured)."""
    entries = settings.registry_entries()
    if spec.model.registry_url:
        return next((e for e in entries if e.matches(spec.model.registry_url)), None)
    return entries[0] if entries else None


def registry_url(spec: SentimentModelSpec, settings: OperatorSettings) -> str | None:
    entry = registry_for(spec, settings)
    return entry.url if entry else None


def lora_mode(spec: SentimentModelSpec) -> bool:
    return spec.backend == "vllm" and spec.vllm.lora.enabled


def adapter_uri(download_uri: str) -> str:
    """The PEFT adapter folder of a LLaVA version from its artifact location (the registry's
    ``model-versions/get-download-uri``)."""
    return f"{download_uri.rstrip('/')}/{LLAVA_ADAPTER_SUBPATH}"


def lora_location(spec: SentimentModelSpec, download_uri: str) -> tuple[str, str]:
    """(dynamic_lora_loading_path, lora id) of a version's adapter. ray.serve.llm loads adapter
    ``<base model id>:<lora id>`` from ``<loading path>/<lora id>``. The loading path is
    ``spec.vllm.lora.loadingPath``, else the folder that holds the versions: MLflow 3 keeps a
    logged model at ``<experiment>/models/<m-id>/artifacts``, so versions of one experiment
    share ``<experiment>/models``; any other layout shares the parent of the version's
    folder."""
    uri = adapter_uri(download_uri)
    base = spec.vllm.lora.loading_path
    if not base:
        root = download_uri.rstrip("/")
        parts = root.split("/")
        if len(parts) >= 3 and parts[-1] == "artifacts" and parts[-2].startswith("m-"):
            base = "/".join(parts[:-2])
        else:
            base = "/".join(parts[:-1])
    base = base.rstrip("/")
    if not uri.startswith(base + "/"):
        raise ValueError(f"the adapter {uri} is not under the LoRA loading path {base}")
    return base, uri[len(base) + 1:]


def adapter_model_id(spec: SentimentModelSpec, download_uri: str,
                     loading_path: str | None = None) -> str:
    base, lora_id = lora_location(spec, download_uri)
    if loading_path and base != loading_path:
        uri = adapter_uri(download_uri)
        if not uri.startswith(loading_path.rstrip("/") + "/"):
            raise ValueError(f"the adapter {uri} is not under the stable version's LoRA "
                             f"loading path {loading_path}")
        lora_id = uri[len(loading_path.rstrip("/")) + 1:]
    return f"{spec.vllm.model_id}:{lora_id}"


def api_keys_secret(spec: SentimentModelSpec, settings: OperatorSettings) -> str | None:
    return spec.auth.api_keys_secret_name or settings.api_keys_secret


def settings_env(spec: SentimentModelSpec, settings: OperatorSettings, version: str, *,
                 adapter: str | None = None, llm_url: str | None = None) -> dict[str, str]:
    """``SHOPSENSE_*`` variables handed to the replicas through ``AppArgs.settings_env``."""
    env: dict[str, str] = {"SHOPSENSE_MODEL_VERSION": version}
    url = registry_url(spec, settings)
    if url:
        env["SHOPSENSE_MLFLOW_TRACKING_URI"] = url
    r = spec.retrieval
    if r.qdrant_url:
        env["SHOPSENSE_QDRANT_URL"] = r.qdrant_url
    if r.opensearch_url:
        env["SHOPSENSE_OPENSEARCH_URL"] = r.opensearch_url
    env["SHOPSENSE_SERVE__SIMILAR_MODE"] = r.similar_mode
    if api_keys_secret(spec, settings):
        env["SHOPSENSE_AUTH__KEYS_FILE"] = API_KEYS_FILE
    if spec.backend == "vllm":
        v = spec.vllm
        env["SHOPSENSE_VLLM__BASE_URL"] = llm_url or (
            f"http://127.0.0.1:{settings.service_port}{LLM_ROUTE}")
        env["SHOPSENSE_VLLM__MAX_MODEL_LEN"] = str(v.max_model_len)
        if adapter:
            # requests name the version's adapter; answers say which version answered
            env["SHOPSENSE_VLLM__MODEL_ID"] = adapter
            env["SHOPSENSE_VLLM__MODEL_SOURCE"] = pinned_uri(spec, version)
        else:
            env["SHOPSENSE_VLLM__MODEL_ID"] = v.model_id
            if v.model_source:
                env["SHOPSENSE_VLLM__MODEL_SOURCE"] = v.model_source
    return env


def app_args(spec: SentimentModelSpec, version: str, settings: OperatorSettings, *,
             adapter: str | None = None, llm_url: str | None = None,
             gpus: int | None = None) -> dict[str, Any]:
    """``AppArgs`` of the inference application (services/inference/app.py)."""
    gpus = spec.resources.gpus if gpus is None else gpus
    args: dict[str, Any] = {
        "model_uri": pinned_uri(spec, version),
        "backend": spec.backend,
        "classifier_num_cpus": 1.0,
        "classifier_num_gpus": 1.0 if spec.backend == "torch" and gpus > 0 else 0.0,
        "retrieval": spec.retrieval.enabled,
        "similar_k": spec.retrieval.similar_k,
        "settings_env": settings_env(spec, settings, version, adapter=adapter,
                                     llm_url=llm_url),
    }
    if not spec.autoscaling.enabled:
        args["classifier_replicas"] = spec.replicas
    return args


def llm_config(spec: SentimentModelSpec, loading_path: str | None = None) -> dict[str, Any]:
    """``ray.serve.llm.LLMConfig`` of the LLaVA model (the fields of
    ``services.inference.backends.vllm.llm_config_dict``; a test keeps them congruent), plus
    multi-LoRA when ``loading_path`` is given: adapters are loaded by model id from there."""
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
    if loading_path:
        config["lora_config"] = {"dynamic_lora_loading_path": loading_path,
                                 "max_num_adapters_per_replica": v.lora.max_adapters_per_replica}
        config["engine_kwargs"].update(enable_lora=True, max_lora_rank=v.lora.max_lora_rank,
                                       max_loras=v.lora.max_adapters_per_replica)
    if v.accelerator_type:
        config["accelerator_type"] = v.accelerator_type
    return config


def serve_config(spec: SentimentModelSpec, version: str, settings: OperatorSettings, *,
                 download_uri: str | None = None, track: str = STABLE,
                 stable_download_uri: str | None = None,
                 service_host: str | None = None) -> dict[str, Any]:
    """The Serve config (``serveConfigV2``) as a dict. In LoRA mode ``download_uri`` is the
    version's artifact location; a canary (``track``) runs no LLM of its own and calls the
    stable track's (``service_host``), whose loading path ``stable_download_uri`` sets."""
    adapter = llm_url = loading_path = None
    with_llm = spec.backend == "vllm"
    gpus = None
    if lora_mode(spec) and download_uri:
        loading_path, _ = lora_location(spec, stable_download_uri or download_uri)
        adapter = adapter_model_id(spec, download_uri, loading_path)
        if track == CANARY:
            with_llm, gpus = False, 0
            llm_url = f"http://{service_host}:{settings.service_port}{LLM_ROUTE}"
    app: dict[str, Any] = {
        "name": "shopsense",
        "route_prefix": "/",
        "import_path": APP_IMPORT_PATH,
        "args": app_args(spec, version, settings, adapter=adapter, llm_url=llm_url,
                         gpus=gpus),
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
    if with_llm:
        apps.insert(0, {"name": "llm", "route_prefix": LLM_ROUTE, "import_path": LLM_IMPORT_PATH,
                        "args": {"llm_configs": [llm_config(spec, loading_path)]}})
    return {"proxy_location": "EveryNode",
            "http_options": {"host": "0.0.0.0", "port": settings.service_port},
            "applications": apps}


def _env(spec: SentimentModelSpec, settings: OperatorSettings, version: str | None) -> list[dict]:
    env = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
           # counters as Prometheus counters only (not also as gauges of the same name)
           {"name": "RAY_EXPORT_COUNTER_AS_GAUGE", "value": "0"},
           {"name": "TRITON_CACHE_DIR", "value": f"{WRITABLE_DIRS['cache']}/triton"}]
    if version is not None:
        env.append({"name": "SHOPSENSE_MODEL_VERSION", "value": version})
    env += [{"name": k, "value": v} for k, v in sorted(settings.pod_env.items())]
    return env


def _env_from(spec: SentimentModelSpec, settings: OperatorSettings) -> list[dict]:
    names = list(dict.fromkeys([*settings.env_from_secrets, *spec.env_from_secrets]))
    return [{"secretRef": {"name": n}} for n in names]


def _container(name: str, spec: SentimentModelSpec, settings: OperatorSettings,
               version: str | None, res: Any, gpus: int, ports: list[dict], image: str,
               keys_secret: str | None) -> dict[str, Any]:
    requests = {"cpu": str(res.cpu), "memory": str(res.memory)}
    limits = dict(requests)
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    mounts = [{"name": vol, "mountPath": path} for vol, path in WRITABLE_DIRS.items()]
    if keys_secret:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "resources": {"requests": requests, "limits": limits},
        "env": _env(spec, settings, version),
        "ports": ports,
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": mounts,
    }
    env_from = _env_from(spec, settings)
    if env_from:
        c["envFrom"] = env_from
    return c


def _volumes(keys_secret: str | None) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = [{"name": vol, "emptyDir": {}} for vol in WRITABLE_DIRS]
    if keys_secret:
        vols.append({"name": "api-keys", "secret": {
            "secretName": keys_secret, "defaultMode": 0o440,
            "items": [{"key": "keys", "path": "keys"}]}})
    return vols


def upgrade_strategy(spec: SentimentModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    if spec.rollout.strategy == "KubeRayIncremental":
        inc = spec.rollout.incremental
        return {"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
            "gatewayClassName": inc.gateway_class_name or settings.gateway_class_name or "",
            "stepSizePercent": inc.step_size_percent,
            "intervalSeconds": inc.interval_seconds,
            "maxSurgePercent": inc.max_surge_percent}}
    return {"type": "NewCluster"}


def render_rayservice(body: dict[str, Any], spec: SentimentModelSpec, version: str,
                      settings: OperatorSettings, *, track: str = STABLE,
                      download_uri: str | None = None,
                      stable_download_uri: str | None = None) -> dict[str, Any]:
    """The KubeRay RayService serving ``version``. The version label sits on the pod templates,
    so a new version changes ``rayClusterConfig`` and KubeRay's ``NewCluster`` upgrade brings
    up a fresh cluster and switches traffic only once it is healthy (the KubeRay strategy).
    In LoRA mode the version is only in the Serve config: KubeRay updates the applications in
    place on the same GPU cluster."""
    meta = body["metadata"]
    name = meta["name"]
    lora = lora_mode(spec)
    by_adapter = lora and track == CANARY
    pod_version = None if lora else version
    pod_labels = labels(name, track, pod_version)
    keys_secret = api_keys_secret(spec, settings)
    gpus = 0 if by_adapter else spec.resources.gpus
    image = settings.image if by_adapter else image_for(spec, settings)
    volumes = _volumes(keys_secret)
    head_ports = [{"containerPort": GCS_PORT, "name": "gcs-server"},
                  {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
                  {"containerPort": CLIENT_PORT, "name": "client"},
                  {"containerPort": settings.service_port, "name": "serve"},
                  {"containerPort": METRICS_PORT, "name": "metrics"}]
    worker_ports = [{"containerPort": settings.service_port, "name": "serve"},
                    {"containerPort": METRICS_PORT, "name": "metrics"}]
    head_pod: dict[str, Any] = {
        "securityContext": dict(_NON_ROOT),
        "containers": [_container("ray-head", spec, settings, pod_version, spec.resources.head,
                                  0, head_ports, image, keys_secret)],
        "volumes": volumes,
    }
    worker_pod: dict[str, Any] = {
        "securityContext": dict(_NON_ROOT),
        "containers": [_container("ray-worker", spec, settings, pod_version,
                                  spec.resources.head if by_adapter else spec.resources.worker,
                                  gpus, worker_ports, image, keys_secret)],
        "volumes": volumes,
    }
    if spec.node_selector and not by_adapter:
        worker_pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations and not by_adapter:
        worker_pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True)
                                     for t in spec.tolerations]
    w = spec.workers
    worker_group: dict[str, Any] = {
        "groupName": "gpu-workers" if gpus else "cpu-workers",
        "replicas": 1 if by_adapter else w.replicas,
        "minReplicas": 1 if by_adapter else w.min_replicas,
        "maxReplicas": 1 if by_adapter else max(w.max_replicas, w.replicas, w.min_replicas),
        "rayStartParams": {},
        "template": {"metadata": {"labels": pod_labels}, "spec": worker_pod},
    }
    config = serve_config(spec, version, settings, download_uri=download_uri, track=track,
                          stable_download_uri=stable_download_uri,
                          service_host=f"{name}.{meta['namespace']}.svc")
    incremental = spec.rollout.strategy == "KubeRayIncremental" and track == STABLE
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
            "upgradeStrategy": upgrade_strategy(spec, settings) if track == STABLE
            else {"type": "NewCluster"},
            "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": settings.ray_version,
                # incremental upgrades scale by target_capacity: they need the autoscaler
                "enableInTreeAutoscaling": spec.autoscaling.enabled or incremental,
                # KubeRay's token authentication (a generated Secret; KubeRay and Ray's own
                # processes use it): the dashboard may listen beyond localhost only with it
                "authOptions": {"mode": "token"},
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


def gateway_ref(spec: SentimentModelSpec, settings: OperatorSettings,
                namespace: str) -> dict[str, str] | None:
    """The parentRef of the HTTPRoute: the Gateway the spec names, else the operator's."""
    ing = spec.ingress
    gw = ing.gateway_name or settings.gateway_name
    if not gw:
        return None
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw,
           "namespace": ing.gateway_namespace or settings.gateway_namespace or namespace}
    section = ing.section_name or (settings.gateway_section if not ing.gateway_name else None)
    if section:
        ref["sectionName"] = section
    return ref


def render_httproute(body: dict[str, Any], spec: SentimentModelSpec,
                     settings: OperatorSettings, *, canary_weight: int = 0) -> dict[str, Any]:
    """The HTTPRoute of a model: the public paths to the stable Service and, during a canary
    step, ``canary_weight`` % to the canary's (weighted backendRefs)."""
    meta = body["metadata"]
    name, ns = meta["name"], meta["namespace"]
    ing = spec.ingress
    parent = gateway_ref(spec, settings, ns)
    if parent is None:
        raise ValueError("no Gateway named (spec.ingress.gatewayName or the operator's "
                         "gateway setting)")
    base = ing.path.rstrip("/")
    matches = [{"path": {"type": kind, "value": (base + value) if value != "/" or not base
                         else base}} for kind, value in PUBLIC_PATHS]
    backends = [{"group": "", "kind": "Service", "name": object_name(name, STABLE),
                 "port": settings.service_port, "weight": 100 - canary_weight}]
    if canary_weight > 0:
        backends.append({"group": "", "kind": "Service", "name": object_name(name, CANARY),
                         "port": settings.service_port, "weight": canary_weight})
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "labels": labels(name, STABLE),
                     "ownerReferences": [owner_reference(body)]},
        "spec": {"parentRefs": [parent],
                 "rules": [{"matches": matches, "backendRefs": backends}]},
    }
    if ing.host:
        route["spec"]["hostnames"] = [ing.host]
    return route


def render_ingress(body: dict[str, Any], spec: SentimentModelSpec, settings: OperatorSettings,
                   *, track: str = STABLE, weight: int | None = None) -> dict[str, Any]:
    """The Ingress of a track (api Ingress); the canary one carries ingress-nginx's canary
    annotations (no other controller reads them)."""
    meta = body["metadata"]
    name = meta["name"]
    ing = spec.ingress
    annotations: dict[str, str] = {}
    if track == CANARY:
        annotations = {"nginx.ingress.kubernetes.io/canary": "true",
                       "nginx.ingress.kubernetes.io/canary-weight": str(weight or 0)}
    base = ing.path.rstrip("/")
    backend = {"service": {"name": object_name(name, track),
                           "port": {"number": settings.service_port}}}
    paths = [{"path": (base + value) if value != "/" or not base else base,
              "pathType": "Prefix" if kind == "PathPrefix" else "Exact", "backend": backend}
             for kind, value in PUBLIC_PATHS]
    rule: dict[str, Any] = {"http": {"paths": paths}}
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


def _namespaces(names: list[str]) -> list[dict[str, Any]]:
    return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}}
            for n in names]


def render_network_policy(body: dict[str, Any], spec: SentimentModelSpec,
                          settings: OperatorSettings) -> dict[str, Any]:
    """Who may reach the model's Ray pods (both tracks): each other on any port (Ray's own
    traffic; a canary by adapter calls the stable LLM app), the Serve port only from the
    Gateway / ingress controller namespaces, Ray's dashboard only from the KubeRay operator,
    the metrics port only from Prometheus. Nothing else: not the GCS or Ray client ports."""
    meta = body["metadata"]
    name, ns = meta["name"], meta["namespace"]
    gateway_ns = settings.ingress_namespaces or [
        spec.ingress.gateway_namespace or settings.gateway_namespace or ns]
    tcp = lambda port: [{"protocol": "TCP", "port": port}]  # noqa: E731
    rules = [
        {"from": [{"podSelector": {"matchLabels": {LABEL_MODEL: name}}}]},
        {"from": _namespaces(gateway_ns), "ports": tcp(settings.service_port)},
        {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": settings.kuberay_namespace}},
                   "podSelector": {"matchLabels": {
                       "app.kubernetes.io/name": "kuberay-operator"}}}],
         "ports": tcp(DASHBOARD_PORT)},
    ]
    if settings.prometheus_namespaces:
        rules.append({"from": _namespaces(settings.prometheus_namespaces),
                      "ports": tcp(METRICS_PORT)})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "labels": labels(name, STABLE),
                     "ownerReferences": [owner_reference(body)]},
        "spec": {"podSelector": {"matchLabels": {LABEL_MODEL: name}},
                 "policyTypes": ["Ingress"], "ingress": rules},
    }


def render_all(body: dict[str, Any], spec: SentimentModelSpec, settings: OperatorSettings, *,
               stable: str, canary: tuple[str, int] | None = None,
               download_uris: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every object the operator wants for (stable version, canary version and weight)."""
    uris = download_uris or {}
    stable_uri = uris.get(stable)
    objs = [render_rayservice(body, spec, stable, settings, download_uri=stable_uri),
            render_service(body, settings)]
    weight = 0
    if canary:
        version, weight = canary
        objs += [render_rayservice(body, spec, version, settings, track=CANARY,
                                   download_uri=uris.get(version),
                                   stable_download_uri=stable_uri),
                 render_service(body, settings, track=CANARY)]
    if spec.ingress.enabled:
        if spec.ingress.api == "Gateway":
            objs.append(render_httproute(body, spec, settings, canary_weight=weight))
        else:
            objs.append(render_ingress(body, spec, settings))
            if weight > 0:
                objs.append(render_ingress(body, spec, settings, track=CANARY, weight=weight))
    if settings.network_policy:
        objs.append(render_network_policy(body, spec, settings))
    return objs


def render_track(body: dict[str, Any], spec: SentimentModelSpec, version: str,
                 settings: OperatorSettings, *, track: str = STABLE,
                 weight: int | None = None) -> list[dict[str, Any]]:
    """One track's RayService, Service and (api Ingress, if enabled) Ingress."""
    objs = [render_rayservice(body, spec, version, settings, track=track),
            render_service(body, settings, track=track)]
    if spec.ingress.enabled and spec.ingress.api == "Ingress":
        objs.append(render_ingress(body, spec, settings, track=track, weight=weight))
    return objs


#: (kind, name suffix) of everything render_all may produce: what cleanup looks at.
CHILDREN: tuple[tuple[str, str], ...] = (
    ("RayService", ""), ("RayService", "-canary"), ("Service", ""), ("Service", "-canary"),
    ("HTTPRoute", ""), ("Ingress", ""), ("Ingress", "-canary"), ("NetworkPolicy", ""))


def endpoint(body: dict[str, Any], spec: SentimentModelSpec, settings: OperatorSettings) -> str:
    meta = body["metadata"]
    ing = spec.ingress
    if ing.enabled and ing.host:
        https = (ing.tls_secret_name if ing.api == "Ingress"
                 else (ing.section_name or settings.gateway_section or "") == "https")
        return f"{'https' if https else 'http'}://{ing.host}{ing.path}"
    return f"http://{meta['name']}.{meta['namespace']}.svc:{settings.service_port}"
