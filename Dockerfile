# syntax=docker/dockerfile:1

# The base of both stages: any image with python3 (3.11 or later) and pip on its PATH;
# `--build-arg PYTHON_IMAGE=...` picks another one. Both stages must use the same image: the
# virtualenv built in the builder stage links to that image's interpreter
# (/usr/local/bin/python3.12 in the default one, /usr/bin/python3.11 in Debian's python3).
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

###############################################################################
# builder: resolve the locked dependencies and install the project into /app/.venv
###############################################################################
FROM ${PYTHON_IMAGE} AS builder

RUN pip install --no-cache-dir uv==0.13.9

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, so this layer stays cached while only the code (or the README) changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a regular (non-editable) wheel.
# hatchling force-includes alembic/ into the wheel as service/_migrations.
# The wheel's metadata takes README.md as its long description.
COPY README.md alembic.ini ./
COPY service/ ./service/
COPY alembic/ ./alembic/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

###############################################################################
# runtime: the venv, the migrations and nothing else
###############################################################################
FROM ${PYTHON_IMAGE} AS runtime

# OCI annotations; the version is pyproject.toml's (tests/unit/test_docker_files.py keeps them equal).
LABEL org.opencontainers.image.title="backup-monitor" \
      org.opencontainers.image.description="Self-hosted service that watches backup files: inventory, history, cron-aware status, HTTP API and metrics." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 backup-monitor \
    && useradd --system --no-log-init --uid 10001 --gid backup-monitor \
        --home-dir /app --shell /usr/sbin/nologin backup-monitor \
    && mkdir -p /data \
    && chown backup-monitor:backup-monitor /data

WORKDIR /app

COPY --from=builder /app/.venv /app/.venv
# Not needed by the service itself (the migrations ship inside the package as
# service/_migrations); kept so `alembic` can be run by hand from /app.
COPY --from=builder /app/alembic /app/alembic
COPY --from=builder /app/alembic.ini /app/alembic.ini

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL="sqlite+aiosqlite:////data/backup-monitor.db" \
    PORT=8080

VOLUME ["/data"]
EXPOSE 8080

# Numeric uid:gid (= the backup-monitor user above) so that runtimes enforcing
# runAsNonRoot can verify the user without reading /etc/passwd.
USER 10001:10001

# The service listens on PORT (`docker run -e PORT=9000 ...`), and so does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ['PORT'], timeout=4).status == 200 else 1)"]

STOPSIGNAL SIGTERM

ENTRYPOINT ["backup-monitor"]
CMD ["serve", "--host", "0.0.0.0"]
