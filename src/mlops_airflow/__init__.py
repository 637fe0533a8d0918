"""Airflow-side glue for the mlops DAGs: default args, failure callback, Variable and Connection
lookups, run-scoped state and the drift-triggering operator.

Nothing heavy is imported at module level: the DAG files import this package while the
dag-processor parses them, and parsing must stay well under a second.
"""

from __future__ import annotations

HEAVY_QUEUE = "heavy"
LIGHT_QUEUE = "light"
OWNER = "mlops"
RETRAINING_DAG_ID = "model_retraining_dag"
# ISO week ids in run conf ("2013-W07"), as the batch files are named.
WEEK_PATTERN = r"^\d{4}-W\d{2}$"
