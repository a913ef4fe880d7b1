# Kubeflow Pipelines steps (scrape, synthesize, validate, train, evaluate, register): the
# project on CPU torch; each component runs `shopsense ...` or its Python function here.
# Build from the repository root: docker build -f images/pipeline-step.Dockerfile -t shopsense/pipeline-step:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    SHOPSENSE_HOME=/home/app/.shopsense

RUN groupadd --gid 1000 app && useradd --uid 1000 --gid 1000 --create-home app
WORKDIR /app
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md /app/
COPY shopsense/ /app/shopsense/
COPY services/ /app/services/
COPY operators/ /app/operators/
COPY pipelines/ /app/pipelines/
RUN pip install --no-cache-dir /app

USER 1000:1000
ENTRYPOINT ["shopsense"]
