#!/usr/bin/env bash
# Install everything and start the whole suite on this machine: topology applied, four
# services as processes, SQLite files under var/ as the store. Ctrl-C stops it.
source "$(dirname "$0")/lib.sh"
install_venv requirements.lock
if [ -z "${APPEALS_AMQP_URI:-}" ]; then ensure_rabbitmq; fi
exec .venv/bin/appeals up "$@"
