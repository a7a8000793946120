#!/usr/bin/env bash
# Install everything and run the whole test suite (unit, integration, end-to-end) against
# the real RabbitMQ and PostgreSQL on this machine. Extra arguments go to pytest.
source "$(dirname "$0")/lib.sh"
install_venv requirements-dev.lock
ensure_rabbitmq
ensure_rabbitmq_management
ensure_postgres
ensure_prometheus
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
