# CPU inference: Ray (Serve) + the shopsense inference application, used as the Ray head and
# worker image of RayServices with backend torch on CPU nodes.
# Build from the repository root: docker build -f images/inference-cpu.Dockerfile -t shopsense/inference-cpu:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    SHOPSENSE_HOME=/home/ray/.shopsense

RUN groupadd --gid 1000 ray && useradd --uid 1000 --gid 1000 --create-home ray
WORKDIR /app
# torch first and pinned, CPU wheels only (a looser requirement pulls a multi-GB CUDA build)
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md /app/
COPY shopsense/ /app/shopsense/
COPY services/ /app/services/
COPY operators/ /app/operators/
COPY pipelines/ /app/pipelines/
RUN pip install --no-cache-dir /app

USER 1000:1000
EXPOSE 8000 8265 6379 10001 8080
