#!/bin/bash
# The official redis image's entrypoint contract: a first argument that is an option or a *.conf
# file means `redis-server ARGS`; `redis-server` started as root hands /data to the redis user and
# drops to it (started as another user, e.g. compose's `user: redis`, it runs as that user);
# files are created with umask 0077; protected mode is off unless the config says otherwise (the
# official image compiles Redis with that default: it is reached from other containers). Anything
# else runs as given.
set -euo pipefail
first="${1:-}"
if [ "${first#-}" != "$first" ] || [ "${first%.conf}" != "$first" ]; then
  set -- redis-server "$@"
fi
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find /data \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [ "$(umask)" = 0022 ]; then
  umask 0077
fi
if [ "${1:-}" = redis-server ]; then
  shift
  # Debian's Redis defaults to protected mode on: a first config line turns it off, and the
  # config file given (if any) is included after it, so that the file still decides.
  defaults="$(mktemp /tmp/redis-standin-XXXXXX.conf)"
  echo "protected-mode no" > "$defaults"
  conf="${1:-}"
  if [ -n "$conf" ] && [ "${conf#-}" = "$conf" ]; then
    shift
    echo "include $conf" >> "$defaults"
  fi
  set -- redis-server "$defaults" "$@"
fi
exec "$@"
