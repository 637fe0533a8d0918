"""Training: a scikit-learn pipeline (categorical encoding + histogram gradient boosting) fitted
by a *recipe* (``configs/recipes.yaml``: which training weeks, which row weights, which model
parameters), logged to MLflow and registered as a model version. Rerunning on the same data and
recipe reuses the logged run and its version (tag ``fingerprint``)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import __version__, config, metrics
from mlops.config import Schema, load_schema
from mlops.errors import TrainingError
from mlops.model_store import SKOPS_TRUSTED_TYPES
# The shared model helpers live in mlops.modeling (import them from there; fit_threads is re-exported
# here only for code written before the move).
from mlops.modeling import build_pipeline, fit_threads, limited_threads, load_table, model_input, score  # noqa: F401
from mlops.util import WEEK_RE, sha256_file, to_jsonable

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


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


def recipe_weeks(recipe: "config.Recipe", weeks: list[str]) -> list[str]:
    """The training weeks a recipe keeps from the run's training weeks (sorted)."""
    weeks = sorted(weeks)
    return weeks[-recipe.window_weeks:] if recipe.window_weeks else weeks


def _week_start(week: str) -> Any:
    from datetime import date

    year, num = week.split("-W")
    return date.fromisocalendar(int(year), int(num), 1)


def recipe_weights(recipe: "config.Recipe", row_weeks: Any) -> Any:
    """Sample weights of the training rows (None: equal weights)."""
    import numpy as np

    if not recipe.half_life_weeks:
        return None
    weeks = np.asarray(row_weeks)
    newest = _week_start(max(weeks))
    ages = {w: (newest - _week_start(w)).days / 7 for w in set(weeks.tolist())}
    age = np.array([ages[w] for w in weeks], dtype="float64")
    return 0.5 ** (age / recipe.half_life_weeks)


def _hash_frame(frame: "pd.DataFrame") -> bytes:
    import pandas as pd

    return pd.util.hash_pandas_object(frame, index=False).values.tobytes()


def _fingerprint(table: "pd.DataFrame", schema: Schema, recipe: "config.Recipe",
                 extra: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(_hash_frame(table))
    h.update(sha256_file(Path(schema.path)).encode())
    h.update(json.dumps({"recipe": recipe.spec(), "code": __version__, **extra}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:32]


# One process often fits the same rows with the same recipe twice (a retraining's recipe on the
# weeks before its validation week is last week's candidate; the year replay does this all the
# time): fitted pipelines are kept by fit fingerprint for the life of the process.
_FITS: "OrderedDict[str, tuple[Any, float]]" = OrderedDict()
_FITS_KEPT = 12


def fit_pipeline(schema: Schema, recipe: "config.Recipe", rows: "pd.DataFrame",
                 y: Any) -> tuple["Pipeline", float, bool]:
    """Fit the recipe's pipeline on ``rows``/``y``; returns (pipeline, fit seconds, reused)."""
    import time

    weights = recipe_weights(recipe, rows["week"])
    key = hashlib.sha256(_hash_frame(rows) + bytes(memoryview(y).tobytes()) + json.dumps(
        {"recipe": recipe.spec(), "code": __version__}, sort_keys=True).encode()).hexdigest()
    if key in _FITS:
        _FITS.move_to_end(key)
        pipe, seconds = _FITS[key]
        return pipe, seconds, True
    x = model_input(rows, schema)
    pipe = build_pipeline(schema, recipe.model_params, x)
    t0 = time.perf_counter()
    with limited_threads():
        pipe.fit(x, y, **({} if weights is None else {"model__sample_weight": weights}))
    seconds = time.perf_counter() - t0
    _FITS[key] = (pipe, seconds)
    while len(_FITS) > _FITS_KEPT:
        _FITS.popitem(last=False)
    return pipe, seconds, False


def _labels(rows: "pd.DataFrame", schema: Schema, shuffle_labels: bool) -> Any:
    import numpy as np

    y = rows[schema.target_name].to_numpy()
    return np.random.default_rng(0).permutation(y) if shuffle_labels else y


def _cap(rows: "pd.DataFrame", max_rows: int | None) -> "pd.DataFrame":
    if max_rows and len(rows) > max_rows:
        return rows.sample(n=int(max_rows), random_state=0).sort_index()
    return rows


def _predict(pipe: "Pipeline", rows: "pd.DataFrame", schema: Schema) -> dict[str, float]:
    with limited_threads():
        proba = pipe.predict_proba(model_input(rows, schema))[:, 1]
    return score(rows[schema.target_name], proba)


def validation_rows(table: "pd.DataFrame", schema: Schema, recipe: "config.Recipe",
                    weeks: list[str], max_rows: int | None) -> tuple[
                        "pd.DataFrame", "pd.DataFrame", list[str]]:
    """(fit rows, validation rows, fit weeks) of a recipe's validation.

    The validation week is the newest training week. By default it is predicted whole by the
    recipe fitted on the training weeks before it. With the data set's
    ``retraining.validation_tail`` (a share) only the week's last rows are validated on, and the
    recipe is fitted on the rows before them: its weeks counted up to the validation week, whose
    first rows (its *head*) are the newest it learns from. After an abrupt drift the newest
    training week is the only one of the new concept; validating on its tail lets a recipe that
    learns from it show it (a batch's rows are in time order; the table keeps that order).
    """
    import pandas as pd

    validation = max(weeks)
    week = table[table["week"] == validation]
    tail = schema.validation_tail
    if not tail:
        before = recipe_weeks(recipe, [w for w in weeks if w < validation])
        return _cap(table[table["week"].isin(before)], max_rows), week, before
    cut = int(round(len(week) * (1.0 - tail)))
    kept = recipe_weeks(recipe, weeks)
    older = table[table["week"].isin([w for w in kept if w != validation])]
    fit = _cap(pd.concat([older, week.iloc[:cut]]), max_rows)
    return fit, week.iloc[cut:], kept


def validation_score(table: "pd.DataFrame", schema: Schema, recipe: "config.Recipe",
                     weeks: list[str], max_rows: int | None,
                     shuffle_labels: bool) -> dict[str, Any] | None:
    """The recipe's score on the validation week (:func:`validation_rows`: the newest training
    week, or its tail); None when there is nothing to fit or validate on."""
    rows, held, before = validation_rows(table, schema, recipe, weeks, max_rows)
    if rows.empty or held.empty:
        return None
    y = _labels(rows, schema, shuffle_labels)
    if len(set(y.tolist())) < 2:
        return None
    pipe, seconds, reused = fit_pipeline(schema, recipe, rows, y)
    result = {"week": max(weeks), "train_weeks": before,
              "metrics": _predict(pipe, held, schema),
              "fit_seconds": round(seconds, 3), "fit_reused": reused}
    if schema.validation_tail:
        result["tail"] = schema.validation_tail
    return result


def _existing(client: Any, fingerprint: str) -> dict[str, Any] | None:
    from mlops.tracking import experiment_id

    runs = client.search_runs([experiment_id(client)],
                              filter_string=f"tags.fingerprint = '{fingerprint}' and "
                                            "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=1)
    if not runs:
        return None
    return _result_of(runs[0])


def _result_of(run: Any) -> dict[str, Any]:
    """A training result rebuilt from its MLflow run (tags and metrics)."""
    tags, run_metrics = run.data.tags, run.data.metrics
    holdout = {k: v for k, v in run_metrics.items() if k in _SCORE_KEYS}
    validation = None
    if tags.get("validation_week"):
        validation = {"week": tags["validation_week"],
                      "train_weeks": json.loads(tags.get("validation_train_weeks", "[]")),
                      "metrics": {k[len("validation_"):]: v for k, v in run_metrics.items()
                                  if k.startswith("validation_")
                                  and k[len("validation_"):] in _SCORE_KEYS}}
        if tags.get("validation_tail"):
            validation["tail"] = float(tags["validation_tail"])
    return {"run_id": run.info.run_id, "metrics": holdout, "validation": validation,
            "train_weeks": json.loads(tags.get("train_weeks", "[]")),
            "holdout_week": tags.get("holdout_week"), "recipe": tags.get("recipe"),
            "train_positive_rate": run_metrics.get("train_positive_rate"),
            "train_rows": int(run_metrics.get("train_rows", 0)),
            "fingerprint": tags.get("fingerprint")}


TRAINED_FOR_TAG = "trained_for_"


def mark_trained_for(run_id: str, owner: str, key: str) -> None:
    """Tag the training run ``run_id`` as produced for ``owner``'s run ``key`` (e.g. an Airflow
    DAG and its run id); :func:`trained_run` checks it before anything is registered."""
    from mlops import tracking

    tracking.setup().set_tag(run_id, f"{TRAINED_FOR_TAG}{owner}", key)


def trained_run(run_id: str, owner: str, key: str) -> dict[str, Any]:
    """The training result of ``run_id`` rebuilt from MLflow, only when that run was trained for
    ``owner``'s run ``key`` (:func:`mark_trained_for`): a run id handed over by anything else
    (an edited XCom) is refused with a :class:`TrainingError`, never registered."""
    from mlops import tracking
    from mlops.registry import is_not_found

    client = tracking.setup()
    try:
        run = client.get_run(str(run_id))
    except Exception as exc:
        if is_not_found(exc):
            raise TrainingError(f"training run {run_id!r} does not exist") from exc
        raise
    if run.data.tags.get(f"{TRAINED_FOR_TAG}{owner}") != key:
        raise TrainingError(f"training run {run_id} was not trained for {owner} run {key}: "
                            "refusing to register or evaluate it")
    if run.info.status != "FINISHED" or not run.data.tags.get("fingerprint"):
        raise TrainingError(f"training run {run_id} is not a finished training ({run.info.status})")
    return to_jsonable({**_result_of(run), "version": None})


_SCORE_KEYS = ("roc_auc", "pr_auc", "f1", "brier", "positive_rate", "rows")


def _log_validation(client: Any, run_id: str, validation: dict[str, Any]) -> None:
    client.set_tag(run_id, "validation_week", validation["week"])
    client.set_tag(run_id, "validation_train_weeks", json.dumps(validation["train_weeks"]))
    if validation.get("tail"):
        client.set_tag(run_id, "validation_tail", str(validation["tail"]))
    for key, value in validation["metrics"].items():
        client.log_metric(run_id, f"validation_{key}", float(value))


def fail_abandoned_runs(client: Any, job: str) -> list[str]:
    """Mark FAILED the runs of ``job`` still RUNNING: an earlier attempt of the same job died
    (killed worker, lost MLflow connection) before it could end its run. Only one attempt of a
    job runs at a time (an Airflow task instance's tries never overlap), so none of them is
    alive. Returns their run ids."""
    from mlops.tracking import experiment_id

    runs = client.search_runs([experiment_id(client)],
                              filter_string=f"tags.job = '{job}' and attributes.status = 'RUNNING'")
    for run in runs:
        client.set_tag(run.info.run_id, "abandoned", "an earlier attempt of this job died before ending it")
        client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in runs]


def train_model(train_weeks: list[str] | str | None = None, holdout_week: str | None = None,
                max_rows: int | None = None, shuffle_labels: bool = False,
                recipe: str | None = None, validate: bool = False,
                register: bool = True, job: str | None = None) -> dict[str, Any]:
    """Fit a recipe on past weeks, score the holdout week, log the run to MLflow and (unless
    ``register`` is false) register the model as a version.

    ``train_weeks``/``holdout_week`` select the data (default: every week before the newest,
    which is held out), the recipe (default: the weekly one, ``configs/recipes.yaml``) what it
    keeps of it and how it fits. ``max_rows`` caps the training rows (random, seeded);
    ``shuffle_labels`` permutes the labels (a deliberately useless model, for testing deploy and
    rollback). ``validate`` also scores the recipe on the validation week (the newest training
    week, predicted by the recipe fitted on the weeks before it): a retraining chooses its
    candidate on that score, leaving the holdout week to the comparison with the champion.

    Rerunning on the same data and recipe reuses the logged run (and its version) instead of
    fitting and registering again. ``job`` names what the training belongs to (e.g. an Airflow
    task instance): the run is tagged with it, and a run an earlier attempt of the same job left
    RUNNING is marked FAILED first (:func:`fail_abandoned_runs`).

    Result: ``run_id``, ``version`` (None while unregistered),
    ``recipe``, ``metrics`` (holdout), ``validation``, ``train_weeks``, ``holdout_week``,
    ``fingerprint``, ``reused``.
    """
    from mlops import tracking

    schema = load_schema()
    spec = config.recipe(recipe)
    table = load_table()
    weeks, holdout = split_weeks(table, train_weeks, holdout_week)
    kept = recipe_weeks(spec, weeks)
    train = _cap(table[table["week"].isin(kept)], max_rows)
    test = table[table["week"] == holdout]
    fp = _fingerprint(train, schema, spec,
                      {"holdout": holdout, "holdout_rows": len(test), "shuffle": shuffle_labels,
                       "weeks": kept})
    y = _labels(train, schema, shuffle_labels)
    if len(set(y.tolist())) < 2:
        raise TrainingError(f"training weeks {kept[0]}..{kept[-1]} contain a single class")

    client = tracking.setup()
    if job:
        fail_abandoned_runs(client, job)
    found = _existing(client, fp)
    if found:
        result = {**found, "recipe": spec.name, "reused": True, "fingerprint": fp}
        if validate and not found["validation"]:
            result["validation"] = validation_score(table, schema, spec, weeks, max_rows,
                                                    shuffle_labels)
            if result["validation"]:
                _log_validation(client, found["run_id"], result["validation"])
    else:
        validation = (validation_score(table, schema, spec, weeks, max_rows, shuffle_labels)
                      if validate else None)
        result = _fit_and_log(schema, spec, train, y, test, kept, holdout, fp, max_rows,
                              shuffle_labels, validation, job)
    _push_training(result)
    result = {**result, "version": None}
    if register:
        result = register_candidate(result)
    return to_jsonable(result)


def _push_training(result: dict[str, Any]) -> None:
    """The training run's scores (job ``mlops_training``, one group per recipe)."""
    validation = (result.get("validation") or {}).get("metrics") or {}
    metrics.push("training", [
        metrics.Sample("mlops_training_holdout_roc_auc", result["metrics"].get("roc_auc")),
        metrics.Sample("mlops_training_validation_roc_auc", validation.get("roc_auc")),
        metrics.Sample("mlops_training_rows", result.get("train_rows")),
    ], grouping={"recipe": result["recipe"]})


def register_candidate(trained: dict[str, Any]) -> dict[str, Any]:
    """Register a training result's model as a version (once per fingerprint); the result with
    its ``version``. Airflow runs this in a task of the ``model_registry`` pool."""
    from mlops import registry

    weeks = trained["train_weeks"]
    tags = {"holdout_week": trained["holdout_week"], "train_first_week": weeks[0],
            "train_last_week": weeks[-1], "recipe": trained["recipe"],
            "holdout_roc_auc": f"{trained['metrics']['roc_auc']:.6f}"}
    if trained.get("train_positive_rate") is not None:
        tags["train_positive_rate"] = f"{trained['train_positive_rate']:.6f}"
    if trained.get("validation"):
        tags["validation_week"] = trained["validation"]["week"]
        tags["validation_roc_auc"] = f"{trained['validation']['metrics']['roc_auc']:.6f}"
    done = registry.register(trained["run_id"], trained["fingerprint"], tags)
    return {**trained, "version": done["version"], "registered": done["registered"]}


def _fit_and_log(schema: Schema, spec: "config.Recipe", train: "pd.DataFrame", y: Any,
                 test: "pd.DataFrame", weeks: list[str], holdout: str, fp: str,
                 max_rows: int | None, shuffle_labels: bool,
                 validation: dict[str, Any] | None, job: str | None = None) -> dict[str, Any]:
    import mlflow
    import pandas as pd
    import sklearn
    from mlflow.models import infer_signature

    pipe, fit_seconds, fit_reused = fit_pipeline(schema, spec, train, y)
    scores = _predict(pipe, test, schema)
    x_train = model_input(train, schema)
    positive_rate = float(train[schema.target_name].mean())
    mlflow_metrics = {k: v for k, v in scores.items() if k not in ("rows",)}
    mlflow_metrics.update({"fit_seconds": fit_seconds, "train_rows": len(x_train),
                           "holdout_rows": len(test), "train_positive_rate": positive_rate})
    tags = {"fingerprint": fp, "recipe": spec.name, "holdout_week": holdout,
            "train_weeks": json.dumps(weeks), "train_first_week": weeks[0],
            "train_last_week": weeks[-1], "schema": Path(schema.path).name,
            "shuffle_labels": str(shuffle_labels).lower(), "mlops_version": __version__}
    # The job tag is set when the run is created, so a run whose attempt dies at once carries it.
    with mlflow.start_run(run_name=f"{spec.name}-{weeks[0]}-{weeks[-1]}-holdout-{holdout}",
                          tags={"job": job} if job else None) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({**spec.model_params, "model": "HistGradientBoostingClassifier",
                           "recipe": spec.name, "window_weeks": spec.window_weeks,
                           "half_life_weeks": spec.half_life_weeks,
                           "train_weeks": f"{weeks[0]}..{weeks[-1]} ({len(weeks)})",
                           "holdout_week": holdout, "max_rows": max_rows,
                           "features": ",".join(schema.features)})
        mlflow.log_metrics(mlflow_metrics)
        if validation:
            mlflow.set_tags({"validation_week": validation["week"],
                             "validation_train_weeks": json.dumps(validation["train_weeks"]),
                             **({"validation_tail": str(validation["tail"])}
                                if validation.get("tail") else {})})
            mlflow.log_metrics({f"validation_{k}": float(v)
                                for k, v in validation["metrics"].items()})
        with tempfile.TemporaryDirectory() as tmp:
            ref = x_train.sample(n=min(config.reference_rows(), len(x_train)), random_state=0)
            ref_path = Path(tmp) / "reference.parquet"
            ref.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), artifact_path="reference")
            mlflow.log_dict({"features": schema.features, "categorical": list(schema.categorical),
                             "target": schema.target_name, "leaking_excluded": list(schema.leaking),
                             "recipe": spec.spec()}, "features.json")
        _log_validation_reports([*weeks, holdout])
        example = x_train.head(5)
        signature = infer_signature(example, pipe.predict_proba(example)[:, 1])
        mlflow.sklearn.log_model(
            sk_model=pipe, name="model", signature=signature, input_example=example,
            pyfunc_predict_fn="predict_proba",
            # skops format; these are the types our own pipeline needs to load back
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}",
                              f"pandas=={pd.__version__}", f"mlflow=={mlflow.__version__}"])
        run_id = run.info.run_id
    return {"run_id": run_id, "recipe": spec.name, "metrics": scores, "validation": validation,
            "train_weeks": weeks, "holdout_week": holdout, "reused": False,
            "fit_seconds": round(fit_seconds, 3), "fit_reused": fit_reused,
            "train_rows": len(x_train), "train_positive_rate": positive_rate,
            "fingerprint": fp}


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
