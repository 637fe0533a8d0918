"""`python -m stack.mlflow_metrics DIR HOST PORT`: serve MLflow's Prometheus metrics without login.

MLflow (`--expose-prometheus DIR`) writes its metrics as prometheus_client multiprocess files into
DIR and serves them at its own `/metrics`, which its basic-auth app (fail-closed for routes without
a permission check) answers only to admins. This process reads the same files and serves them on
HOST:PORT (127.0.0.1), so Prometheus scrapes without holding any MLflow login. The metrics are
request counts and latencies per endpoint and status: nothing secret.
"""

from __future__ import annotations

import os
import sys
import threading


def main(argv: list[str]) -> int:
    """Serve the multiprocess metrics in argv[0] on argv[1]:argv[2] until stopped."""
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: python -m stack.mlflow_metrics DIR HOST PORT", file=sys.stderr)
        return 2
    directory, host, port = argv[0], argv[1], int(argv[2])
    os.makedirs(directory, exist_ok=True)  # MLflow creates it too; either may start first
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    start_http_server(port, addr=host, registry=registry)
    print(f"serving MLflow's metrics from {directory} on http://{host}:{port}/metrics", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
