# Shared by scripts/up.sh and scripts/test.sh: a virtualenv from the lock file, and the
# broker and database started when they are installed but down.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_venv() {  # $1: lock file
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$1"
  .venv/bin/python -m pip install -q --no-deps -e .
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {  # host port seconds
  for _ in $(seq 1 "$3"); do port_open "$1" "$2" && return 0; sleep 1; done
  return 1
}

ensure_rabbitmq() {
  port_open 127.0.0.1 5672 && return 0
  if command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ]; then
    echo "RabbitMQ is installed but not running: starting it (rabbitmq-server -detached)"
    as_root rabbitmq-server -detached
    wait_port 127.0.0.1 5672 90 && return 0
    echo "RabbitMQ did not come up on 127.0.0.1:5672 within 90 s; see /var/log/rabbitmq/" >&2
    exit 1
  fi
  cat >&2 <<'MSG'
No RabbitMQ reachable at 127.0.0.1:5672 and none installed.
  Install one:   sudo apt-get install -y rabbitmq-server   (then run this command again)
  or point the suite at yours:   export APPEALS_AMQP_URI=amqp://user:pass@host:5672/vhost
MSG
  exit 1
}

ensure_postgres() {
  port_open 127.0.0.1 5432 && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "PostgreSQL is not installed: installing Debian's postgresql (the tests need it)"
    as_root apt-get update -q && as_root apt-get install -y -q postgresql
  fi
  echo "PostgreSQL is not running: starting it"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port 127.0.0.1 5432 60 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
}

ensure_rabbitmq_management() {
  # The tests also drive the management API (vhosts, provisioning) when it is there.
  port_open 127.0.0.1 15672 && return 0
  if command -v rabbitmq-plugins >/dev/null || [ -x /usr/sbin/rabbitmq-plugins ]; then
    echo "enabling RabbitMQ's management plugin"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null || true
    wait_port 127.0.0.1 15672 60 || echo "management API not up; tests fall back to rabbitmqctl"
  fi
}

ensure_prometheus() {
  # The tests check deploy/prometheus/ with promtool and run a real prometheus server (own
  # port, own temporary data directory) against the suite; Debian's package has both.
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "installing Debian's prometheus (promtool and the server, for the monitoring tests)"
    { as_root apt-get update -q >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prometheus >/dev/null; } ||
      echo "could not install prometheus; the promtool and scrape tests will fail in CI" >&2
  fi
  # Where an init system runs, the package starts its own server on :9090. The tests never
  # use it; stop and disable it so it neither takes the port nor scrapes anything.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  return 0
}
