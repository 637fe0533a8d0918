"""The service's Prometheus metrics (names fixed in the interfaces with the monitoring)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("mlops_serving_requests", "POST /predict requests by HTTP status", ["status"])
DURATION = Histogram("mlops_serving_request_duration_seconds", "POST /predict latency (seconds)",
                     buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ROWS = Counter("mlops_serving_rows", "rows scored")
SCORE = Histogram("mlops_serving_score", "served delay probabilities",
                  buckets=tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,))
MODEL_VERSION = Gauge("mlops_serving_model_version", "registered version served (0: none)")
REGISTRY_CHAMPION = Gauge("mlops_serving_registry_champion_version",
                          "version the alias champion named at the last successful check (0: none)")
CHECK_AGE = Gauge("mlops_serving_registry_check_age_seconds",
                  "seconds since the last successful check of the champion alias")
LOAD_FAILURES = Counter("mlops_serving_model_load_failures",
                        "new versions refused (load, digest or warm-up failed); the old one kept serving")
LOG_DROPPED = Counter("mlops_serving_prediction_log_dropped", "predictions not written to the log")
LOG_PENDING = Gauge("mlops_serving_prediction_log_pending_rows", "predictions queued for the log")
LOG_WRITTEN = Counter("mlops_serving_prediction_log_written", "predictions written to the log")
