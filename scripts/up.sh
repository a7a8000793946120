#!/usr/bin/env bash
# Install everything and start the whole suite on this machine: topology applied, four
# services as processes, SQLite files under var/ as the store. Ctrl-C stops it.
#
# Without APPEALS_JWT_SECRET this is a development run: it sets APPEALS_DEV_MODE=1, so the
# services accept the built-in (public) development secret, says so, and keeps their HTTP
# ports on 127.0.0.1. Set APPEALS_JWT_SECRET=$(openssl rand -hex 32) for anything else.
source "$(dirname "$0")/lib.sh"
install_venv requirements.lock
if [ -z "${APPEALS_AMQP_URI:-}" ]; then ensure_rabbitmq; fi
if [ -z "${APPEALS_JWT_SECRET:-}" ]; then
  export APPEALS_DEV_MODE=1
  export APPEALS_HTTP_HOST="${APPEALS_HTTP_HOST:-127.0.0.1}"
  cat >&2 <<MSG
up.sh: DEVELOPMENT MODE: APPEALS_JWT_SECRET is not set, so APPEALS_DEV_MODE=1 and the
       services accept the built-in development secret, which anyone with this source
       can sign tokens with. HTTP listens on ${APPEALS_HTTP_HOST} only. Tokens for it:
         APPEALS_DEV_MODE=1 .venv/bin/appeals token --role bureau_staff --subject you
       For anything shared: APPEALS_JWT_SECRET=\$(openssl rand -hex 32) ./scripts/up.sh
MSG
fi
exec .venv/bin/appeals up "$@"
