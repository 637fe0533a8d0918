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
# One slot (airflow/pools.yaml): every task that registers or deletes a model version or moves a
# registry alias runs in it, so such tasks never overlap, on any worker host.
REGISTRY_POOL = "model_registry"


def recipe_names() -> list[str]:
    """Names of the training recipes, read when a DAG file is parsed:
    ``model_retraining_dag.retrain_model`` maps over them. Those of the default data set
    (``MLOPS_DATASET``, else the flights: configs/recipes.yaml) in file order, then those of the
    other data sets of ``configs/`` it lacks (a run skips the recipes its data set does not
    have). Only the light ``mlops.config`` and ``mlops.dataset`` modules are imported."""
    from mlops.dataset import known_names, resolve

    names = list(resolve(None).recipes)
    for other in known_names():
        names += [n for n in resolve(other).recipes if n not in names]
    return names
