# The SentimentModel operator (kopf). Small: no torch, no Ray; only the operator package.
# Build from the repository root: docker build -f images/operator.Dockerfile -t shopsense/operator:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN pip install --no-cache-dir \
        kopf==1.45.2 httpx==0.28.1 pydantic==2.14.4 pydantic-settings==2.16.3 \
        prometheus-client==0.26.0 PyYAML==6.0.4 typer==0.29.2
COPY operators/ /app/operators/

RUN groupadd --gid 1000 app && useradd --uid 1000 --gid 1000 --no-create-home app
USER 1000:1000
EXPOSE 9090 8081
ENTRYPOINT ["python", "-m", "operators.sentimentmodel"]
CMD ["run"]
