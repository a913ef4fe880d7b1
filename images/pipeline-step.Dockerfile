# Kubeflow Pipelines steps (scrape, synthesize, validate, train, evaluate, register): the
# project on CPU torch; each component runs `shopsense ...` or its Python function here.
# Build from the repository root: docker build -f images/pipeline-step.Dockerfile -t ghcr.io/shopsense/pipeline-step:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    SHOPSENSE_HOME=/home/app/.shopsense \
    SHOPSENSE_DATA_DIR=/data

# Chromium for the scrape step (Playwright drives Debian's build, as on a laptop). Debian's
# security updates move its version, so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation \
    && rm -rf /var/lib/apt/lists/*

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
