#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those that are missing, and creates the
# native stack's system users (scripts/system-users.sh).
#   postgresql      private metadata / result-backend / MLflow database (native stack, tests)
#   redis-server    private Celery broker
#   prometheus      scrapes Flower, MLflow, statsd-exporter; ships promtool for rule tests
#   prometheus-pushgateway   receives the ML jobs' results (src/mlops/metrics.py) for Prometheus
#   prometheus-alertmanager  routes the firing alerts to the receiver of .env (ships amtool)
#   prometheus-postgres-exporter, prometheus-redis-exporter, prometheus-process-exporter
#                   the stack's own health on both paths: Airflow's metadata (task states, queue
#                   age, scheduler heartbeat), Celery queue lengths, memory/CPU per component
#   docker-compose  parses and validates docker-compose.celery.yml; drives the compose test
#   python3-venv    to create .venv on a stock Debian Python
#   acl             setfacl: `make up` grants the stack users traversal of a private checkout path
# `scripts/system-deps.sh compose` also installs what the compose test needs (`make test-compose`):
#   docker.io       Debian's Docker engine (dockerd, containerd, runc), started privately by
#                   scripts/compose/engine.py only when no engine answers already
#   mmdebstrap      builds the bookworm root file system of the stand-in base images
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v prometheus-postgres-exporter >/dev/null 2>&1 || missing+=(prometheus-postgres-exporter)
command -v prometheus-redis-exporter >/dev/null 2>&1 || missing+=(prometheus-redis-exporter)
command -v prometheus-process-exporter >/dev/null 2>&1 || missing+=(prometheus-process-exporter)
command -v setfacl >/dev/null 2>&1 || missing+=(acl)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
for group in "$@"; do
  case "$group" in
    compose)
      command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
      command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
      ;;
    *) echo "system-deps: unknown group '$group' (known: compose)" >&2; exit 2 ;;
  esac
done

# The native stack's unprivileged users (no package needed).
bash "$(dirname "$0")/system-users.sh"

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "system-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "system-deps: need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# dpkg may be busy (another install on this machine): wait for its lock instead of failing.
APT_OPTS=(-o DPkg::Lock::Timeout=600)
$SUDO apt-get "${APT_OPTS[@]}" update -qq
# Debian's packages would start their own services on 5432/6379/9090 (and dockerd) where systemd
# runs; the project never uses those instances (it starts private ones on its own ports/socket).
$SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}"
