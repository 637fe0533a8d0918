"""The model's shared pieces, used by training, evaluation, drift, monitoring and serving alike:
the training table (:func:`load_table`), the model's input frame (:func:`model_input`), the
pipeline (:func:`build_pipeline`), its scores (:func:`score`) and the thread limit every fit and
prediction runs under (:func:`limited_threads`). Nothing here logs to MLflow or touches the
registry (that is :mod:`mlops.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config
from mlops.config import Schema, load_schema
from mlops.errors import TrainingError
from mlops.util import read_parquet

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


_TABLE: dict[str, tuple[tuple[int, int], "pd.DataFrame"]] = {}


def load_table(path: str | Path | None = None) -> "pd.DataFrame":
    """The training table built by the preprocess stage (read-only: it is cached per process
    until the file changes)."""
    p = Path(path) if path else config.processed_table()
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise TrainingError(f"{p}: training table missing; run `mlops preprocess` first") from None
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _TABLE.get(str(p))
    if cached is None or cached[0] != stamp:
        _TABLE.clear()
        _TABLE[str(p)] = cached = (stamp, read_parquet(p))
    return cached[1]


def fit_threads() -> int:
    """OpenMP threads for fitting/predicting: ``MLOPS_FIT_THREADS``, else the idle cores.

    Gradient boosting's OpenMP barriers spin; on an oversubscribed machine 2 threads were 5x
    slower than 1 (measured here: 18.8 s vs 3.5 s), so only cores that are idle are used.
    """
    import os

    env = os.environ.get("MLOPS_FIT_THREADS")
    if env and env.strip().isdigit() and int(env) > 0:
        return int(env)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        idle = cpus - os.getloadavg()[0]
    except OSError:
        idle = cpus
    return max(1, min(cpus, int(round(idle))))


def limited_threads():  # -> contextlib.AbstractContextManager
    """Context manager limiting OpenMP/BLAS threads to :func:`fit_threads`."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=fit_threads())


def model_input(df: "pd.DataFrame", schema: Schema | None = None) -> "pd.DataFrame":
    """Feature columns in model order; categoricals as object with NaN for missing."""
    import numpy as np
    import pandas as pd

    from mlops.data import few_row_columns

    schema = schema or load_schema()
    missing = [c for c in schema.features if c not in df.columns]
    if missing:
        raise TrainingError(f"feature columns missing from the data: {missing}")
    categorical = set(schema.categorical)
    # One frame from plain arrays (pandas' per-column operations cost more than a single row).
    columns = few_row_columns(df, [c for c in schema.features if c in categorical],
                              [c for c in schema.features if c not in categorical])
    out: dict[str, np.ndarray] = {}
    for c in schema.features:
        column = columns[c]
        if c in categorical:
            out[c] = column.to_numpy(dtype="object", copy=True)
            out[c][pd.isna(out[c])] = np.nan
        elif column.dtype.kind in "iuf":
            out[c] = column.to_numpy(dtype="float64", copy=True)
        else:
            out[c] = column.astype("float64").to_numpy()
    return pd.DataFrame(out, index=df.index)


def build_pipeline(schema: Schema, params: dict[str, Any] | None = None,
                   train: "pd.DataFrame | None" = None) -> "Pipeline":
    """Ordinal encoding of the schema's categories (unknown -> missing) + gradient boosting."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    cats = list(schema.categorical)
    categories = []
    for c in cats:
        known = schema.columns[c].categories
        if not known and train is not None:
            known = sorted(str(v) for v in train[c].dropna().unique())
        categories.append(list(known or []))
    encoder = ColumnTransformer(
        [("cat", OrdinalEncoder(categories=categories, handle_unknown="use_encoded_value",
                                unknown_value=np.nan, encoded_missing_value=np.nan,
                                dtype=np.float64), cats)],
        remainder="passthrough", verbose_feature_names_out=False)
    n_other = len(schema.features) - len(cats)
    model = HistGradientBoostingClassifier(
        categorical_features=[True] * len(cats) + [False] * n_other,
        early_stopping=False, **(params or config.MODEL_PARAMS))
    return Pipeline([("encode", encoder), ("model", model)])


def score(y_true: Any, proba: Any, threshold: float | None = None) -> dict[str, float]:
    """ROC AUC, PR AUC, F1 (at the decision threshold), Brier score, positive rate."""
    import numpy as np
    from sklearn.metrics import (average_precision_score, brier_score_loss, f1_score,
                                 roc_auc_score)

    y = np.asarray(y_true)
    p = np.asarray(proba)
    thr = config.decision_threshold() if threshold is None else threshold
    if len(np.unique(y)) < 2:
        raise TrainingError("holdout has a single class; ROC AUC undefined")
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "f1": float(f1_score(y, (p >= thr).astype(int), zero_division=0)),
            "brier": float(brier_score_loss(y, p)), "positive_rate": float(y.mean()),
            "rows": int(len(y))}
