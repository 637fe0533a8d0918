#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those that are missing, and creates the
# native stack's system users (scripts/system-users.sh).
#   postgresql      private metadata / result-backend / MLflow database (native stack, tests)
#   redis-server    private Celery broker
#   prometheus      scrapes Flower, MLflow, statsd-exporter; ships promtool for rule tests
#   docker-compose  only to parse and validate docker-compose.celery.yml (no engine needed)
#   python3-venv    to create .venv on a stock Debian Python
#   acl             setfacl: `make up` grants the stack users traversal of a private checkout path
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v setfacl >/dev/null 2>&1 || missing+=(acl)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

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
$SUDO apt-get update -qq
# Debian's packages would start their own services on 5432/6379/9090 where systemd runs; the
# project never uses those instances (it starts private ones on its own ports).
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
