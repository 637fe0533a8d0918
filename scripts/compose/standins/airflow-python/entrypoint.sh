#!/bin/bash
# The official Airflow image's entrypoint contract, as far as the compose file relies on it:
# umask 0002; unless CONNECTION_CHECK_MAX_COUNT is 0, every command first waits until the metadata
# database accepts a connection (CONNECTION_CHECK_MAX_COUNT tries, default 20,
# CONNECTION_CHECK_SLEEP_TIME seconds apart, default 3; then exit 1), so a service without database
# access must turn it off; then `bash ...` and `python ...` run as given, `airflow ...` and anything
# else as `airflow ...` (e.g. `api-server`, `celery worker`). The official image runs
# `airflow db check`; this connects to AIRFLOW__DATABASE__SQL_ALCHEMY_CONN with SQLAlchemy, which
# fails and passes alike (Airflow's default SQLite when unset) at a fifth of the CPU. Not
# reproduced: the broker wait (nc) before `scheduler` and `celery`, the _AIRFLOW_* and
# _PIP_ADDITIONAL_REQUIREMENTS extras.
set -euo pipefail
umask 0002
db_check() {
  python -c 'import os
url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
if url:
    import sqlalchemy
    sqlalchemy.create_engine(url).connect().close()
print("Connection successful.")'
}
max="${CONNECTION_CHECK_MAX_COUNT:-20}"
if [ "$max" -gt 0 ]; then
  left="$max"
  until last="$(db_check 2>&1)"; do
    left=$((left - 1))
    if [ "$left" -le 0 ]; then
      printf 'ERROR! Maximum number of retries (%s) reached.\n\nLast check result:\n$ (connect to AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)\n%s\n' \
        "$max" "$(printf '%s\n' "$last" | tail -n 3)" >&2
      exit 1
    fi
    sleep "${CONNECTION_CHECK_SLEEP_TIME:-3}"
  done
fi
case "${1:-}" in
  bash) shift; exec /bin/bash "$@" ;;
  python) shift; exec python "$@" ;;
  airflow) shift ;;
esac
exec airflow "$@"
