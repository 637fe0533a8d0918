"""The lifecycle's Airflow Assets, declared once: what the DAGs produce (``outlets``) and what
they are scheduled on. Their events carry the week, the version and the decision as ``extra``."""

from __future__ import annotations

from airflow.sdk import Asset

GROUP = "mlops"

#: A week's labelled batch accepted by validation (extra: ``week``).
ACCEPTED_BATCHES = Asset(name="accepted_batches", uri="mlops://flights/accepted_batches", group=GROUP)
#: The training table built by the preprocess stage (extra: ``weeks``).
TRAINING_TABLE = Asset(name="training_table", uri="mlops://flights/training_table", group=GROUP)
#: The registered model's alias ``champion`` (extra: ``version``, ``decision``).
CHAMPION = Asset(name="champion", uri="mlops://flights/champion", group=GROUP)
#: A drift decision that fired (extra: ``week``, ``signals``).
DRIFT = Asset(name="drift", uri="mlops://flights/drift", group=GROUP)
