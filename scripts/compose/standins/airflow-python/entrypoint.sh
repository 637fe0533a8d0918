#!/bin/bash
# The official Airflow image's command contract: `bash ...` and `python ...` run as given,
# `airflow ...` and anything else run as `airflow ...` (e.g. `api-server`, `celery worker`).
set -euo pipefail
case "${1:-}" in
  bash) shift; exec /bin/bash "$@" ;;
  python) shift; exec python "$@" ;;
  airflow) shift ;;
esac
exec airflow "$@"
