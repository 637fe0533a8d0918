"""Training: a scikit-learn pipeline (categorical encoding + histogram gradient boosting),
logged to MLflow and registered as a model version. Rerunning on the same data and parameters
returns the version already registered (tag ``fingerprint``)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import __version__, config, metrics
from mlops.config import Schema, load_schema
from mlops.errors import TrainingError
from mlops.util import WEEK_RE, file_lock, sha256_file, to_jsonable

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def load_table(path: str | Path | None = None) -> "pd.DataFrame":
    """The training table built by the preprocess stage."""
    import pandas as pd

    p = Path(path) if path else config.processed_table()
    if not p.exists():
        raise TrainingError(f"{p}: training table missing; run `mlops preprocess` first")
    return pd.read_parquet(p)


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

    schema = schema or load_schema()
    missing = [c for c in schema.features if c not in df.columns]
    if missing:
        raise TrainingError(f"feature columns missing from the data: {missing}")
    x = df[schema.features].copy()
    for c in schema.categorical:
        x[c] = x[c].astype("object").where(x[c].notna(), np.nan)
    for c in [*schema.numeric, *schema.derived]:
        x[c] = x[c].astype("float64")
    return x


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


def parse_weeks(spec: list[str] | str | None, available: list[str]) -> list[str] | None:
    """Weeks from a list, ``"2013-W01..2013-W26"`` / ``"A:B"`` range or comma list."""
    if spec is None or spec == "" or spec == []:
        return None
    if isinstance(spec, str):
        for sep in ("..", ":"):
            if sep in spec:
                lo, hi = (s.strip() for s in spec.split(sep, 1))
                return [w for w in available if (not lo or w >= lo) and (not hi or w <= hi)]
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [w for w in spec if not WEEK_RE.match(w)]
    if bad:
        raise TrainingError(f"not ISO weeks: {bad}")
    return sorted(set(spec))


def split_weeks(table: "pd.DataFrame", train_weeks: list[str] | str | None,
                holdout_week: str | None) -> tuple[list[str], str]:
    """Default: hold out the newest week, train on every earlier week."""
    available = sorted(table["week"].unique())
    if len(available) < 2 and train_weeks is None:
        raise TrainingError(f"need at least 2 weeks in the training table, have {available}")
    holdout = holdout_week or available[-1]
    if holdout not in available:
        raise TrainingError(f"holdout week {holdout} not in the training table ({available[0]}.."
                            f"{available[-1]})")
    weeks = parse_weeks(train_weeks, available)
    if weeks is None:
        weeks = [w for w in available if w < holdout]
    missing = [w for w in weeks if w not in available]
    if missing:
        raise TrainingError(f"train weeks not in the training table: {missing}")
    if holdout in weeks:
        raise TrainingError(f"holdout week {holdout} is also a training week")
    if not weeks:
        raise TrainingError(f"no training weeks before holdout {holdout}")
    return weeks, holdout


def _fingerprint(table: "pd.DataFrame", schema: Schema, params: dict[str, Any],
                 extra: dict[str, Any]) -> str:
    import pandas as pd

    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(table, index=False).values.tobytes())
    h.update(sha256_file(Path(schema.path)).encode())
    h.update(json.dumps({"params": params, "code": __version__, **extra}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:32]


def _existing(client: Any, fingerprint: str) -> dict[str, Any] | None:
    from mlops.tracking import experiment_id

    runs = client.search_runs([experiment_id(client)],
                              filter_string=f"tags.fingerprint = '{fingerprint}' and "
                                            "attributes.status = 'FINISHED'",
                              max_results=5)
    for run in runs:
        versions = client.search_model_versions(
            f"name = '{config.model_name()}' and run_id = '{run.info.run_id}'")
        if versions:
            v = max(versions, key=lambda mv: int(mv.version))
            return {"run_id": run.info.run_id, "model_version": str(v.version),
                    "metrics": {k: v for k, v in run.data.metrics.items()},
                    "train_weeks": json.loads(run.data.tags.get("train_weeks", "[]")),
                    "holdout_week": run.data.tags.get("holdout_week")}
    return None


def train_model(train_weeks: list[str] | str | None = None, holdout_week: str | None = None,
                max_rows: int | None = None, shuffle_labels: bool = False) -> dict[str, Any]:
    """Fit on past weeks, score the holdout week, log to MLflow and register a version.

    ``max_rows`` caps the training rows (random, seeded); ``shuffle_labels`` permutes the labels
    (a deliberately useless model, for testing deploy and rollback).
    """
    import numpy as np

    schema = load_schema()
    table = load_table()
    weeks, holdout = split_weeks(table, train_weeks, holdout_week)
    train = table[table["week"].isin(weeks)]
    test = table[table["week"] == holdout]
    if max_rows and len(train) > max_rows:
        train = train.sample(n=int(max_rows), random_state=0).sort_index()
    params = dict(config.MODEL_PARAMS)
    fp = _fingerprint(train, schema, params,
                      {"holdout": holdout, "holdout_rows": len(test), "shuffle": shuffle_labels,
                       "weeks": weeks})
    y = train[schema.target_name].to_numpy()
    if shuffle_labels:
        y = np.random.default_rng(0).permutation(y)
    if len(np.unique(y)) < 2:
        raise TrainingError(f"training weeks {weeks[0]}..{weeks[-1]} contain a single class")

    from mlops import tracking

    client = tracking.setup()
    with file_lock("train"):
        found = _existing(client, fp)
        if found:
            return to_jsonable({**found, "reused": True, "fingerprint": fp})
        result = _fit_and_log(client, schema, train, y, test, weeks, holdout, params, fp,
                              max_rows, shuffle_labels)
    metrics.gauge("model.validation_auc", result["metrics"]["roc_auc"])
    return result


def _fit_and_log(client: Any, schema: Schema, train: "pd.DataFrame", y: Any,
                 test: "pd.DataFrame", weeks: list[str], holdout: str, params: dict[str, Any],
                 fp: str, max_rows: int | None, shuffle_labels: bool) -> dict[str, Any]:
    import time

    import mlflow
    import pandas as pd
    import sklearn
    from mlflow.models import infer_signature

    x_train = model_input(train, schema)
    x_test = model_input(test, schema)
    pipe = build_pipeline(schema, params, x_train)
    t0 = time.perf_counter()
    with limited_threads():
        pipe.fit(x_train, y)
        fit_seconds = time.perf_counter() - t0
        proba = pipe.predict_proba(x_test)[:, 1]
    scores = score(test[schema.target_name], proba)
    mlflow_metrics = {k: v for k, v in scores.items() if k not in ("rows",)}
    mlflow_metrics.update({"fit_seconds": fit_seconds, "train_rows": len(x_train),
                           "holdout_rows": len(x_test)})

    tags = {"fingerprint": fp, "holdout_week": holdout, "train_weeks": json.dumps(weeks),
            "train_first_week": weeks[0], "train_last_week": weeks[-1],
            "schema": Path(schema.path).name, "shuffle_labels": str(shuffle_labels).lower(),
            "mlops_version": __version__}
    with mlflow.start_run(run_name=f"train-{weeks[0]}-{weeks[-1]}-holdout-{holdout}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({**params, "model": "HistGradientBoostingClassifier",
                           "train_weeks": f"{weeks[0]}..{weeks[-1]} ({len(weeks)})",
                           "holdout_week": holdout, "max_rows": max_rows,
                           "features": ",".join(schema.features)})
        mlflow.log_metrics(mlflow_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ref = x_train.sample(n=min(config.reference_rows(), len(x_train)), random_state=0)
            ref_path = Path(tmp) / "reference.parquet"
            ref.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), artifact_path="reference")
            mlflow.log_dict({"features": schema.features, "categorical": list(schema.categorical),
                             "target": schema.target_name, "leaking_excluded": list(schema.leaking)},
                            "features.json")
        _log_validation_reports([*weeks, holdout])
        example = x_train.head(5)
        signature = infer_signature(example, pipe.predict_proba(example)[:, 1])
        info = mlflow.sklearn.log_model(
            sk_model=pipe, name="model", signature=signature, input_example=example,
            registered_model_name=config.model_name(), pyfunc_predict_fn="predict_proba",
            # skops format; these are the types our own pipeline needs to load back
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}",
                              f"pandas=={pd.__version__}", f"mlflow=={mlflow.__version__}"])
        version = str(info.registered_model_version)
        run_id = run.info.run_id
    for key in ("fingerprint", "holdout_week", "train_first_week", "train_last_week"):
        client.set_model_version_tag(config.model_name(), version, key, tags[key])
    client.set_model_version_tag(config.model_name(), version, "holdout_roc_auc",
                                 f"{scores['roc_auc']:.6f}")
    return to_jsonable({"run_id": run_id, "model_version": version, "metrics": scores,
                        "train_weeks": weeks, "holdout_week": holdout, "reused": False,
                        "fit_seconds": round(fit_seconds, 3), "train_rows": len(x_train),
                        "fingerprint": fp})


def _log_validation_reports(weeks: list[str]) -> None:
    """Attach the validation reports of the weeks used (JSON of all, HTML of the newest)."""
    import mlflow

    reports = config.reports_dir()
    for week in weeks:
        js = reports / week / "validation.json"
        if js.exists():
            mlflow.log_artifact(str(js), artifact_path=f"validation/{week}")
    html = reports / weeks[-1] / "validation.html"
    if html.exists():
        mlflow.log_artifact(str(html), artifact_path=f"validation/{weeks[-1]}")
