#!/bin/bash
# `redis-server ARGS` as the redis user in /data; protected mode off (as in the official image,
# which is reached from other containers); later ARGS still override it.
set -euo pipefail
if [ "${1:-}" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
  if [ "$(id -u)" = 0 ]; then
    chown redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
