# syntax=docker/dockerfile:1
#
# One image for the whole suite: the command picks the service.
#   docker build -t enterprise-appeals .
#   docker run --rm enterprise-appeals                      # appeals run intake
#   docker run --rm -e APPEALS_SERVICE_PORT=8002 enterprise-appeals appeals run dispatch
#   docker run --rm enterprise-appeals appeals topology apply
# docker-compose.yml runs all of it (RabbitMQ, PostgreSQL, topology, the four services).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 appeals \
    && useradd --system --uid 10001 --gid appeals --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin appeals

# Pinned third-party dependencies first: this layer is reused while only our code changes.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock

# Then the suite itself (appeals_common + services, and the `appeals` command).
WORKDIR /tmp/src
COPY pyproject.toml ./
COPY appeals_common ./appeals_common
COPY services ./services
RUN pip install --no-deps . && rm -rf /tmp/src

WORKDIR /app
COPY config ./config
RUN mkdir -p /app/var && chown appeals:appeals /app/var

# Installed into site-packages, the package cannot find config/ next to itself: say where it is.
# The default database is SQLite under /app/var (one file per service); compose sets PostgreSQL.
# APPEALS_SERVICE_PORT is only read by the HEALTHCHECK below: set it to the port of the
# service the container runs (8001 intake, 8002 dispatch, 8003 supervision, 8004 reporting).
ENV APPEALS_CONFIG_DIR=/app/config \
    APPEALS_DATABASE_URL=sqlite:////app/var/{service}.db \
    APPEALS_HTTP_HOST=0.0.0.0 \
    APPEALS_SERVICE_PORT=8001

USER appeals

EXPOSE 8001 8002 8003 8004

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('APPEALS_SERVICE_PORT', '8001'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4).status == 200 else 1)"]

CMD ["appeals", "run", "intake"]
