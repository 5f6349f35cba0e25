# syntax=docker/dockerfile:1
# The DivBase application image for one release. It carries `divbase-migrate` and the Alembic migrations of
# exactly this release: the operator's migration Jobs run this image, so the schema changes always travel with the
# code that needs them (never through ConfigMaps, which would drift from the image). Build from the repository root:
#   docker build -f docker/divbase.Dockerfile --build-arg DIVBASE_RELEASE=2 -t ghcr.io/divbase/divbase:2 .
# The tag must equal DIVBASE_RELEASE: a DivBaseDatabase with spec.version 2 runs <image>:2.
# DIVBASE_APP_REQUIREMENT optionally installs the DivBase application itself (API and Celery workers, e.g.
# `divbase==2.0.0` from your package index) next to the migrations.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG DIVBASE_APP_REQUIREMENT=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY migrations/ migrations/
COPY localcluster/divbase_localcluster/ localcluster/divbase_localcluster/
COPY testsupport/ testsupport/
# The project wheel without extras: SQLAlchemy, Alembic, psycopg and the divbase_migrations package.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade "pip>=24" \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/divbase_operator-*.whl ${DIVBASE_APP_REQUIREMENT} \
 && /opt/venv/bin/divbase-migrate --help > /dev/null \
 && /opt/venv/bin/pip uninstall --yes pip \
 && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
# The release this image is, also in the environment (the migration Jobs pass the same value as --release).
ARG DIVBASE_RELEASE
RUN test -n "${DIVBASE_RELEASE}" || { echo "build with --build-arg DIVBASE_RELEASE=<release>" >&2; exit 1; }
LABEL org.opencontainers.image.title="divbase" \
      org.opencontainers.image.description="DivBase release ${DIVBASE_RELEASE} with divbase-migrate and its migrations" \
      org.opencontainers.image.version="${DIVBASE_RELEASE}" \
      io.divbase.release="${DIVBASE_RELEASE}"
RUN groupadd --system --gid 10001 divbase \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin divbase
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DIVBASE_RELEASE=${DIVBASE_RELEASE}
USER 10001:10001
EXPOSE 8000
# No ENTRYPOINT: the operator sets each container's command (divbase-migrate, divbase-api, divbase-worker).
CMD ["divbase-migrate", "--help"]
