from __future__ import annotations

import copy

import pytest

CPU_BODY = {
    "apiVersion": "shopsense.io/v1alpha1",
    "kind": "SentimentModel",
    "metadata": {"name": "reviews", "namespace": "shop", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                 "generation": 1},
    "spec": {
        "model": {"uri": "models:/shopsense-sentiment@champion",
                  "registryUrl": "http://mlflow.mlflow.svc:5000"},
        "ingress": {"enabled": True, "host": "shopsense.localtest.me"},
        "retrieval": {"qdrantUrl": "http://qdrant.shopsense.svc:6333",
                      "opensearchUrl": "http://opensearch.shopsense.svc:9200", "similarK": 5},
        "envFromSecrets": ["shopsense-minio", "shopsense-mlflow"],
    },
}

GPU_BODY = {
    "apiVersion": "shopsense.io/v1alpha1",
    "kind": "SentimentModel",
    "metadata": {"name": "reviews-llava", "namespace": "shop",
                 "uid": "6fa459ea-ee8a-3ca4-894e-db77e160355e", "generation": 3},
    "spec": {
        "model": {"uri": "models:/shopsense-llava/7", "registryUrl": "http://mlflow:5000"},
        "backend": "vllm",
        "resources": {"gpus": 1, "worker": {"cpu": 8, "memory": "48Gi"}},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2},
        "nodeSelector": {"shopsense.io/gpu-pool": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "vllm": {"acceleratorType": "L4", "maxModelLen": 4096},
        "rollout": {"strategy": "KubeRay"},
    },
}


@pytest.fixture
def cpu_body():
    return copy.deepcopy(CPU_BODY)


@pytest.fixture
def gpu_body():
    return copy.deepcopy(GPU_BODY)
