"""Flight-delay model lifecycle: data replay, validation, preprocessing, training, evaluation,
drift detection and MLflow-registry deployment, each step a function and an `mlops` command."""

__version__ = "0.1.0"
