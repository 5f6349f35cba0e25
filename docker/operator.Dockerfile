# syntax=docker/dockerfile:1
# The divbase-operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/divbase/divbase-operator:0.1.0 .
# Two stages: the first builds the project's wheel and installs it with the `operator` extra into a virtualenv;
# the final stage is the same slim Python base with only that virtualenv - no compiler, no pip, no sources.
# Pin the base by digest in CI (PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:...) for reproducible builds.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): packaging metadata and the Python packages.
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY migrations/ migrations/
COPY localcluster/divbase_localcluster/ localcluster/divbase_localcluster/
COPY testsupport/ testsupport/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade "pip>=24" \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install "$(ls /wheels/divbase_operator-*.whl)[operator]" \
 && /opt/venv/bin/divbase-operator --help > /dev/null \
 && /opt/venv/bin/pip uninstall --yes pip \
 && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="divbase-operator" \
      org.opencontainers.image.description="Gated expand -> deploy -> contract rollouts of DivBase on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID/GID (10001), so Kubernetes can verify runAsNonRoot without a passwd lookup; the chart's
# securityContext uses the same numbers.
RUN groupadd --system --gid 10001 divbase \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin divbase
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 8080: Kopf liveness (/healthz); 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["divbase-operator"]
