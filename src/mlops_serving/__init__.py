"""The prediction service: serves the registered model behind alias ``champion`` over HTTP,
follows the alias, logs every prediction to PostgreSQL and exposes Prometheus metrics.

One module per job: :mod:`.settings` (configuration from the environment), :mod:`.holder` (the
model in service, its polling of the alias and the atomic swap), :mod:`.rows` (request rows:
validation and scoring through the package's own feature code), :mod:`.compiled` (the served
pipeline's predict_proba without sklearn's per-call overhead), :mod:`.batching` (concurrent
requests scored in one frame), :mod:`.predlog` (the durable prediction log), :mod:`.metrics` and
:mod:`.app` (the FastAPI app; ``uvicorn mlops_serving.app:app``). It imports :mod:`mlops`; nothing in :mod:`mlops` imports it.
"""
