#!/usr/bin/env bash
# Creates the system users the native stack runs its programs as, only those that are missing
# (run by `make install` through scripts/system-deps.sh, and by `make up` when they are absent):
#   mlops         the control plane: Airflow api-server, scheduler, dag-processor, triggerer,
#                 the task-log server, Flower, MLflow, Prometheus, Redis
#   mlops-worker  the Celery workers, and so every task
#   mlops-shared  group of both, for the folders both need (task logs, the ML data folder)
#   mlops-serving the prediction service (not in mlops-shared: it reads no data folder)
# No home, no login shell, no password. stack/config.py names the same.
set -euo pipefail

CONTROL_USER=mlops
WORKER_USER=mlops-worker
SHARED_GROUP=mlops-shared
SERVING_USER=mlops-serving

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "system-users: need root or sudo to create users $CONTROL_USER, $WORKER_USER" >&2; exit 1; }
  SUDO="sudo"
fi
getent group "$SHARED_GROUP" >/dev/null || { $SUDO groupadd --system "$SHARED_GROUP"; echo "system-users: created group $SHARED_GROUP"; }
for user in "$CONTROL_USER" "$WORKER_USER"; do
  if ! getent passwd "$user" >/dev/null; then
    $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --groups "$SHARED_GROUP" "$user"
    echo "system-users: created user $user (groups: $user, $SHARED_GROUP)"
  elif ! id -nG "$user" | tr ' ' '\n' | grep -qx "$SHARED_GROUP"; then
    $SUDO usermod -a -G "$SHARED_GROUP" "$user"
    echo "system-users: added $user to group $SHARED_GROUP"
  fi
done
if ! getent passwd "$SERVING_USER" >/dev/null; then
  $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVING_USER"
  echo "system-users: created user $SERVING_USER (group: $SERVING_USER)"
fi
