"""Settings of the ML package: data folders, MLflow, thresholds and the data-set schema.

Every decision threshold is declared once, in :data:`THRESHOLDS`, and has one name everywhere:
the keyword argument of the step that uses it, the Airflow Variable ``mlops_<name>``, the
environment variable ``MLOPS_<NAME>`` and the CLI flag ``--<name>`` (dashes for underscores).
An explicit value (keyword argument, from a Variable or a flag) wins over the environment, which
wins over the default here. Every value is read when it is used, never at import, so tests and
Airflow tasks can change the environment between calls. Paths are resolved at call time too.
"""

from __future__ import annotations

import contextvars
import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError, RecipeError, SchemaError

#: The data set of the running step (a ``mlops.dataset.Dataset``), set per CLI call or per task
#: by ``mlops.dataset.use_dataset``; None: the settings below read the environment.
ACTIVE_DATASET: contextvars.ContextVar[Any] = contextvars.ContextVar("mlops_dataset", default=None)

PACKAGE_DIR = Path(__file__).resolve().parent
# src/mlops/config.py -> repository root (editable install, Airflow bundle, CI checkout).
REPO_ROOT = PACKAGE_DIR.parent.parent


def _env_number(name: str, default: float) -> float:
    """``$name`` as a number, or ``default`` when unset or empty; a clear error otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment {name}={raw!r} is not a number") from exc


class ThresholdError(MlopsError, ValueError):
    """A threshold (or setting) is NaN, infinite or outside its range; names it and its source."""


def checked_number(name: str, value: Any, source: str, low: float, high: float = math.inf) -> float:
    """``value`` as a finite float within [low, high], else ThresholdError naming ``name`` and
    where the value came from (``share > nan`` is always false: a NaN would switch a check off).
    ``source`` is e.g. "environment MLOPS_X", "Airflow Variable mlops_x", "option --x"."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ThresholdError(f"{name}: {source}={value!r} is not a number") from None
    if not math.isfinite(number) or not low <= number <= high:
        span = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"of at least {low:g} (finite)"
        raise ThresholdError(f"{name}: {source}={value!r} is not a number {span}")
    return number


# --- thresholds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """A decision threshold of one lifecycle step, with its single name in every interface."""

    name: str
    default: float
    step: str
    help: str
    # The values that make sense (inclusive); NaN and infinities never do.
    low: float = 0.0
    high: float = 1.0

    @property
    def variable(self) -> str:
        """The Airflow Variable that overrides it for the DAGs."""
        return f"mlops_{self.name}"

    @property
    def env(self) -> str:
        """The environment variable that overrides the default."""
        return f"MLOPS_{self.name.upper()}"

    @property
    def flag(self) -> str:
        """The CLI option of the step's ``mlops`` subcommand."""
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as .env.example and the CLI help write it."""
        return str(int(self.default)) if float(self.default).is_integer() and abs(self.default) >= 1e6 \
            else f"{self.default:g}"

    def check(self, value: Any, source: str) -> float:
        """``value`` if it is a finite number within this threshold's range, else ThresholdError."""
        return checked_number(f"threshold {self.name}", value, source, self.low, self.high)


#: Steps that take thresholds: ``validate`` (mlops validate), ``drift`` (mlops drift),
#: ``deploy`` (mlops evaluate / deploy).
THRESHOLDS: dict[str, Threshold] = {t.name: t for t in (
    # 50 times a genuine weekly batch of the flights data (1.3 MB): a file this big is no
    # delivery of this feed, and reading it would cost the worker several times its size.
    Threshold("max_batch_bytes", 67108864, "validate",
              "largest batch file, in bytes, that is read at all (a bigger one is refused before "
              "reading)", low=1.0, high=math.inf),
    Threshold("max_null_share", 0.1, "validate",
              "maximum share of nulls per column (the schema may set its own per column)"),
    Threshold("max_duplicate_share", 0.01, "validate", "maximum share of duplicated rows"),
    Threshold("max_unknown_category_share", 0.01, "validate",
              "maximum share of rows with a category the schema does not list, per column"),
    Threshold("max_out_of_range_share", 0.0, "validate",
              "maximum share of values outside the schema's range, per column"),
    Threshold("max_outlier_share", 0.05, "validate",
              "maximum share of extreme outliers per numeric feature (beyond 3x the 1-99 % span "
              "of the reference, on each side)"),
    # Weekly batches drift a little by season: only a massive shift is treated as a broken feed.
    Threshold("max_drift_share", 0.8, "validate",
              "share of drifted columns (batch vs recently accepted batches) that rejects a batch"),
    # Compared with the batches the distribution check uses as its reference (the accepted
    # weeks just before this one). Genuine 2013 weeks stay within a factor 2.6 of the odds and
    # 0.93-1.07 of the daily volume; a feed restricted to one airport (a third of the flights)
    # is a drifted but genuine batch, hence the wide volume floor.
    Threshold("max_target_odds_ratio", 4.0, "validate",
              "largest factor by which the batch's odds of a positive label may differ from "
              "those of the recently accepted batches, either way", low=1.0, high=math.inf),
    # Genuine 2013 days have at least 0.67 of their week's median day (Thanksgiving).
    Threshold("min_day_row_ratio", 0.25, "validate",
              "smallest ratio of the rows on an expected day of a batch (time.expected_days) to "
              "the batch's median day: a day cut short"),
    Threshold("min_row_count_ratio", 0.25, "validate",
              "smallest ratio of the batch's rows per day (over its whole week within the data "
              "set's date range, not the days present) to that of the recently accepted batches"),
    Threshold("max_row_count_ratio", 2.0, "validate",
              "largest ratio of the batch's rows per day to that of the recently accepted "
              "batches", low=1.0, high=math.inf),
    # The drift defaults are chosen with benchmarks/lifecycle.py (see the README): retraining
    # fires on some weeks of 2013, not on most, and never on a resample of the reference.
    Threshold("drift_share", 0.3, "drift",
              "share of drifted decision columns (batch vs the champion's training reference) "
              "at or above which data drift is declared (above 1: never)", high=math.inf),
    Threshold("auc_drop", 0.06, "drift",
              "drop of the champion's ROC AUC on the batch below its ROC AUC on its own holdout "
              "week at training time, at or above which model drift is declared (above 1: never)",
              high=math.inf),
    Threshold("label_shift", 0.2, "drift",
              "absolute difference between the batch's delayed rate and the champion's training "
              "rows' delayed rate at or above which label drift is declared (above 1: never)",
              high=math.inf),
    Threshold("deploy_margin", 0.005, "deploy",
              "ROC AUC by which a candidate must beat the champion on the holdout to be deployed "
              "(-1: any candidate)", low=-1.0),
)}


def thresholds_of(step: str) -> list[Threshold]:
    """The thresholds a step takes, in declaration order."""
    found = [t for t in THRESHOLDS.values() if t.step == step]
    if not found:
        raise ValueError(f"no thresholds for step {step!r}; steps: "
                         f"{sorted({t.step for t in THRESHOLDS.values()})}")
    return found


def threshold(name: str, value: float | None = None, source: str | None = None) -> float:
    """The value of threshold ``name``: ``value`` when given, else ``MLOPS_<NAME>``, else its
    default; NaN, infinities and values outside its range are a ThresholdError naming it and
    where the value came from (``source``, by default "keyword argument <name>")."""
    spec = THRESHOLDS.get(name)
    if spec is None:
        raise TypeError(f"unknown threshold {name!r}; known: {sorted(THRESHOLDS)}")
    if value is not None:
        return spec.check(value, source or f"keyword argument {name}")
    raw = os.environ.get(spec.env)
    if raw is None or raw.strip() == "":
        dataset = ACTIVE_DATASET.get()
        return dataset.threshold_defaults.get(name, spec.default) if dataset else spec.default
    return spec.check(raw.strip(), f"environment {spec.env}")


def resolve_thresholds(step: str, given: dict[str, float | None]) -> dict[str, float]:
    """Every threshold of ``step``, from ``given`` (keyword arguments, None = not given), the
    environment or the defaults. A name the step does not take is a TypeError."""
    names = [t.name for t in thresholds_of(step)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"unknown thresholds for {step}: {unknown}; known: {names}")
    return {name: threshold(name, given.get(name)) for name in names}


# --- other settings (read when used) -------------------------------------------------------------
def reference_rows() -> int:
    """Rows of training features kept as the drift reference of a model (``MLOPS_REFERENCE_ROWS``)."""
    return int(checked_number("MLOPS_REFERENCE_ROWS", _env_number("MLOPS_REFERENCE_ROWS", 5000),
                              "environment MLOPS_REFERENCE_ROWS", 1))


def decision_threshold() -> float:
    """Predicted probability at or above which a flight counts as delayed, for F1
    (``MLOPS_DECISION_THRESHOLD``)."""
    return checked_number("MLOPS_DECISION_THRESHOLD", _env_number("MLOPS_DECISION_THRESHOLD", 0.5),
                          "environment MLOPS_DECISION_THRESHOLD", 0.0, 1.0)


#: The check groups of ``mlops validate --checks`` (one data_validation_dag task each). The file,
#: header, schema and temporal checks always run: every other check needs them.
VALIDATION_CHECKS = ("schema", "quality", "distribution", "anomalies")

#: Accepted batches (the newest before the validated one) that make up the validation reference
#: and the history of the label and volume checks.
REFERENCE_WEEKS = 4

# Model hyper-parameters (logged to MLflow; part of the training fingerprint).
# Chosen on 2013-W01..W26 -> W27 (benchmarks/ml_core.py): ROC AUC 0.755; no early stopping, so
# that a fit is deterministic and its time predictable (~13 s for W01..W44 on one busy core).
MODEL_PARAMS: dict[str, Any] = {
    "learning_rate": 0.15,
    "max_iter": 150,
    "max_leaf_nodes": 48,
    "min_samples_leaf": 100,
    "l2_regularization": 1.0,
    "random_state": 42,
}


# --- training recipes ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How a candidate is trained from a run's training weeks (``configs/recipes.yaml``)."""

    name: str
    description: str = ""
    #: keep only the newest N training weeks (None: all of them)
    window_weeks: int | None = None
    #: weight each row 0.5 ** (weeks before the newest training week / half life) (None: equal)
    half_life_weeks: float | None = None
    #: overrides of MODEL_PARAMS
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def model_params(self) -> dict[str, Any]:
        """MODEL_PARAMS with this recipe's overrides."""
        return {**MODEL_PARAMS, **self.params}

    def spec(self) -> dict[str, Any]:
        """What the recipe does (part of a training fingerprint; the description is not)."""
        return {"name": self.name, "window_weeks": self.window_weeks,
                "half_life_weeks": self.half_life_weeks, "params": self.model_params}


def recipes_path() -> Path:
    """The active data set's recipes file (``MLOPS_RECIPES`` without one), else the schema file
    when it has a ``recipes`` section of its own, else ``configs/recipes.yaml`` of the repository."""
    dataset = ACTIVE_DATASET.get()
    env = dataset.recipes_file if dataset else os.environ.get("MLOPS_RECIPES")
    if env:
        return Path(env).expanduser().resolve()
    schema = load_schema()
    if schema.has_recipes:
        return Path(schema.path)
    for cand in (REPO_ROOT / "configs" / "recipes.yaml", PACKAGE_DIR / "configs" / "recipes.yaml"):
        if cand.is_file():
            return cand
    raise RecipeError(f"configs/recipes.yaml not found under {REPO_ROOT}; set MLOPS_RECIPES")


_RECIPE_KEYS = {"description", "window_weeks", "half_life_weeks", "params"}


def _parse_recipes(path: Path, raw: Any) -> dict[str, Recipe]:
    body = raw.get("recipes") if isinstance(raw, dict) else None
    if not isinstance(body, dict) or not body:
        raise RecipeError(f"{path}: expected a non-empty mapping `recipes`")
    out: dict[str, Recipe] = {}
    for name, spec in body.items():
        spec = spec or {}
        where = f"{path}: recipes.{name}"
        if not isinstance(spec, dict) or set(spec) - _RECIPE_KEYS:
            raise RecipeError(f"{where}: keys must be among {sorted(_RECIPE_KEYS)}")
        window, half_life = spec.get("window_weeks"), spec.get("half_life_weeks")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise RecipeError(f"{where}.window_weeks must be a positive integer")
        if half_life is not None and (not isinstance(half_life, (int, float)) or half_life <= 0):
            raise RecipeError(f"{where}.half_life_weeks must be a positive number")
        params = spec.get("params") or {}
        unknown = sorted(set(params) - set(MODEL_PARAMS))
        if not isinstance(params, dict) or unknown:
            raise RecipeError(f"{where}.params: unknown model parameters {unknown}; known: "
                              f"{sorted(MODEL_PARAMS)}")
        out[str(name)] = Recipe(str(name), str(spec.get("description", "")), window,
                                None if half_life is None else float(half_life), dict(params))
    return out


def load_recipes(path: str | Path | None = None) -> dict[str, Recipe]:
    """The candidate recipes, in file order; the first one is the weekly recipe."""
    import yaml

    p = Path(path) if path else recipes_path()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{p}: cannot read recipes: {exc}") from exc
    return _parse_recipes(p, raw)


def weekly_recipe() -> Recipe:
    """The recipe of ml_pipeline_dag's weekly ``train``: the first of the file."""
    return next(iter(load_recipes().values()))


def recipe(name: str | None) -> Recipe:
    """The recipe called ``name`` (None: the weekly recipe)."""
    if name is None:
        return weekly_recipe()
    found = load_recipes()
    if name not in found:
        raise RecipeError(f"unknown recipe {name!r}; {recipes_path()} has {list(found)}")
    return found[name]


# --- locations ---------------------------------------------------------------------------------
def data_dir() -> Path:
    """Root of the active data set's data (without one: ``MLOPS_DATA_DIR``, default ``./data``),
    absolute."""
    dataset = ACTIVE_DATASET.get()
    if dataset is not None:
        return Path(dataset.data_dir)
    return base_data_dir()


def base_data_dir() -> Path:
    """The flights' data folder (``MLOPS_DATA_DIR``, default ``./data``), absolute: root of every
    other data set's folder and neighbour of the local MLflow store."""
    return Path(os.environ.get("MLOPS_DATA_DIR") or "data").expanduser().resolve()


def sub_dir(name: str, create: bool = True) -> Path:
    """A sub-folder of the data root (landing, accepted, quarantine, reports, ...)."""
    path = data_dir() / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# The batch folders (landing, accepted, quarantine) and the batch state are owned by
# mlops.batches; reports and the training table are shared by several steps.
def reports_dir() -> Path:
    return sub_dir("reports")


def processed_table() -> Path:
    return sub_dir("processed") / "training.parquet"


def locks_dir() -> Path:
    return sub_dir("state/locks")


def model_name() -> str:
    """The active data set's registered model (without one: ``MLOPS_MODEL_NAME``)."""
    dataset = ACTIVE_DATASET.get()
    if dataset is not None:
        return str(dataset.model_name)
    return os.environ.get("MLOPS_MODEL_NAME") or "flight_delay_classifier"


def experiment_name() -> str:
    """The active data set's MLflow experiment (without one: ``MLOPS_EXPERIMENT``, else the model
    name)."""
    dataset = ACTIVE_DATASET.get()
    if dataset is not None:
        return str(dataset.experiment_name)
    return os.environ.get("MLOPS_EXPERIMENT") or model_name()


def local_store_dir() -> Path:
    """Folder of the default local MLflow store: ``<data folder>-mlflow`` beside the data folder,
    never inside it (tasks write into the data folder; whoever loads a model from the store
    trusts what is there). One store for every data set: beside the flights' folder, which holds
    the others' folders."""
    root = base_data_dir()
    path = root.with_name(root.name + "-mlflow")
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or a local SQLite store in :func:`local_store_dir`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{local_store_dir() / 'mlflow.db'}"


def artifact_location() -> str | None:
    """Artifact root for a new experiment on a local store (None: the server decides).

    A SQLite store keeps its artifacts beside the database file, never under the caller's cwd.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return (local_store_dir() / "artifacts").as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return None


def pushgateway_url() -> str | None:
    """The Prometheus Pushgateway the ML results go to (``MLOPS_PUSHGATEWAY_URL``), or None when
    metrics are off."""
    return os.environ.get("MLOPS_PUSHGATEWAY_URL", "").strip() or None


def predictions_db_url() -> str | None:
    """SQLAlchemy URL of the prediction log with a read-only login (``MLOPS_PREDICTIONS_DB_URL``,
    e.g. ``postgresql+psycopg2://predictions_reader:...@127.0.0.1:15432/predictions``); None
    when unset (served predictions are then not looked at)."""
    return os.environ.get("MLOPS_PREDICTIONS_DB_URL") or None


def serving_url() -> str:
    """Base URL of the prediction service (``MLOPS_SERVING_URL``, default http://127.0.0.1:8000)."""
    return (os.environ.get("MLOPS_SERVING_URL") or "http://127.0.0.1:8000").rstrip("/")


def served_min_rows() -> int:
    """Labelled served rows a version needs before its realised ROC AUC is reported and the
    drift check's model signal uses served predictions (``MLOPS_SERVED_MIN_ROWS``)."""
    return int(_env_number("MLOPS_SERVED_MIN_ROWS", 50))
def pushgateway_login() -> tuple[str, str] | None:
    """The basic-auth login the ML steps push with (``MLOPS_PUSHGATEWAY_USER`` and
    ``MLOPS_PUSHGATEWAY_PASSWORD``; both stacks' Pushgateways refuse anonymous pushes), or None."""
    user = os.environ.get("MLOPS_PUSHGATEWAY_USER", "").strip()
    return (user, os.environ.get("MLOPS_PUSHGATEWAY_PASSWORD", "")) if user else None


def dvc_template() -> Path:
    """The committed ``dvc.yaml`` (run inside the data folder)."""
    env = os.environ.get("MLOPS_DVC_YAML")
    for cand in ([Path(env)] if env else []) + [REPO_ROOT / "dvc.yaml", PACKAGE_DIR / "dvc.yaml"]:
        if cand.is_file():
            return cand
    raise SchemaError(f"dvc.yaml not found (looked in {REPO_ROOT}); set MLOPS_DVC_YAML")


# --- schema ------------------------------------------------------------------------------------
def schema_path() -> Path:
    """The active data set's schema file (without one: ``MLOPS_SCHEMA`` or ``configs/flights.yaml``
    of the repository, independent of the cwd)."""
    dataset = ACTIVE_DATASET.get()
    if dataset is not None:
        return Path(dataset.schema_file)
    env = os.environ.get("MLOPS_SCHEMA")
    if env:
        return Path(env).expanduser().resolve()
    for cand in (REPO_ROOT / "configs" / "flights.yaml", PACKAGE_DIR / "configs" / "flights.yaml"):
        if cand.is_file():
            return cand
    raise SchemaError(f"schema configs/flights.yaml not found under {REPO_ROOT}; set MLOPS_SCHEMA")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a raw batch as the schema declares it."""

    name: str
    dtype: str
    range: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    max_null_share: float | None = None
    allow_all_null: bool = False
    outlier_check: bool = True


@dataclass(frozen=True)
class Schema:
    """The parsed data-set schema file."""

    path: str
    name: str
    columns: dict[str, ColumnSpec]
    time_column: str
    timezone: str
    target_name: str
    target_column: str
    target_operator: str
    target_threshold: float
    target_missing: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    derived: dict[str, dict[str, str]]
    leaking: tuple[str, ...]
    drift_exclude: tuple[str, ...]
    duplicate_subset: tuple[str, ...] | None
    source: dict[str, Any] = field(default_factory=dict)
    #: First and last local date of the data set (either may be None: open).
    date_range: tuple[date | None, date | None] = (None, None)
    #: Calendar columns, by the part of the local time they must equal (year, month, day, hour).
    time_parts: dict[str, str] = field(default_factory=dict)
    #: Columns identifying one row: unique within a batch and across accepted batches.
    row_key: tuple[str, ...] = ()
    #: What a column the schema does not declare does to a batch: "reject" or "warn".
    extra_columns: str = "reject"
    #: Days of its week (inside the date range) a batch must have rows on: "every", "weekdays"
    #: (Monday to Friday) or "any" (no requirement).
    expected_days: str = "any"
    #: The schema file has a ``recipes`` section (used when MLOPS_RECIPES is not set).
    has_recipes: bool = False
    #: retraining.validation_tail: share of the newest training week (its last rows) a
    #: retraining validates its recipes on, each fitted on the rows before (0: the whole week).
    validation_tail: float = 0.0
    #: drift.model_reference: what the model signal compares the batch's ROC AUC with.
    model_reference: str = "holdout"

    @property
    def calendar_columns(self) -> tuple[str, ...]:
        """Columns that state a position in time: never outlier-checked against a reference."""
        return tuple(self.time_parts.values())

    @property
    def features(self) -> list[str]:
        """Model input columns, in a fixed order."""
        return [*self.categorical, *self.numeric, *self.derived]

    @property
    def raw_feature_columns(self) -> list[str]:
        """Raw batch columns the features are made from."""
        cols = [*self.categorical, *self.numeric]
        for spec in self.derived.values():
            if spec["from"] not in cols:
                cols.append(spec["from"])
        return cols


_DTYPES = {"int", "float", "string", "datetime"}
_DERIVED_PARTS = {"dayofweek", "dayofyear", "hour", "month", "weekofyear"}
_TIME_PARTS = ("year", "month", "day", "hour")
_EXTRA_POLICIES = ("reject", "warn")
#: drift.model_reference: "holdout" (the champion's ROC AUC on its holdout week) or
#: "best_measured" (the higher of that and its validation score, see mlops.drift).
MODEL_REFERENCES = ("holdout", "best_measured")
#: time.expected_days: the weekdays (0 = Monday) a batch must cover, inside the date range.
EXPECTED_DAYS = {"every": (0, 1, 2, 3, 4, 5, 6), "weekdays": (0, 1, 2, 3, 4), "any": ()}


def _parse_date(path: Path, value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise SchemaError(f"{path}: time range: {value!r} is not an ISO date like 2013-01-01") from None


def _parse_schema(path: Path, raw: dict[str, Any]) -> Schema:
    def need(mapping: dict[str, Any], key: str, where: str) -> Any:
        if not isinstance(mapping, dict) or key not in mapping:
            raise SchemaError(f"{path}: missing '{key}' in {where}")
        return mapping[key]

    cols_raw = need(raw, "columns", "the top level")
    columns: dict[str, ColumnSpec] = {}
    for name, spec in cols_raw.items():
        spec = spec or {}
        dtype = spec.get("dtype")
        if dtype not in _DTYPES:
            raise SchemaError(f"{path}: column {name}: dtype must be one of {sorted(_DTYPES)}")
        rng = spec.get("range")
        cats = spec.get("categories")
        columns[name] = ColumnSpec(
            name=name, dtype=dtype,
            range=(float(rng[0]), float(rng[1])) if rng else None,
            categories=tuple(str(c) for c in cats) if cats else None,
            max_null_share=spec.get("max_null_share"),
            allow_all_null=bool(spec.get("allow_all_null", False)),
            outlier_check=bool(spec.get("outlier_check", True)),
        )
    time = need(raw, "time", "the top level")
    target = need(raw, "target", "the top level")
    feats = need(raw, "features", "the top level")
    leaking = tuple(raw.get("leaking") or ())
    derived = {k: dict(v) for k, v in (feats.get("derived") or {}).items()}
    tail = (raw.get("retraining") or {}).get("validation_tail", 0.0)
    if isinstance(tail, bool) or not isinstance(tail, (int, float)) or not 0 <= tail < 1:
        raise SchemaError(f"{path}: retraining.validation_tail is {tail!r}; a share in [0, 1)")
    schema = Schema(
        path=str(path), name=str(raw.get("name", path.stem)), columns=columns,
        time_column=need(time, "column", "time"), timezone=time.get("timezone", "UTC"),
        target_name=need(target, "name", "target"), target_column=need(target, "column", "target"),
        target_operator=target.get("operator", ">"),
        target_threshold=float(need(target, "threshold", "target")),
        target_missing=target.get("missing", "drop"),
        categorical=tuple(feats.get("categorical") or ()),
        numeric=tuple(feats.get("numeric") or ()),
        derived=derived, leaking=leaking,
        drift_exclude=tuple((raw.get("drift") or {}).get("exclude") or ()),
        duplicate_subset=(tuple((raw.get("duplicates") or {}).get("subset"))
                          if (raw.get("duplicates") or {}).get("subset") else None),
        source=dict(raw.get("source") or {}),
        date_range=_time_range(path, time.get("range")),
        time_parts={str(k): str(v) for k, v in (time.get("parts") or {}).items()},
        row_key=tuple(str(c) for c in raw.get("row_key") or ()),
        extra_columns=str((raw.get("header") or {}).get("extra_columns", "reject")),
        expected_days=str(time.get("expected_days", "any")),
        has_recipes="recipes" in raw,
        validation_tail=float(tail),
        model_reference=str((raw.get("drift") or {}).get("model_reference", "holdout")),
    )
    if schema.model_reference not in MODEL_REFERENCES:
        raise SchemaError(f"{path}: drift.model_reference is {schema.model_reference!r}; one of "
                          f"{list(MODEL_REFERENCES)}")
    if schema.expected_days not in EXPECTED_DAYS:
        raise SchemaError(f"{path}: time.expected_days is {schema.expected_days!r}; one of {list(EXPECTED_DAYS)}")
    bad = [c for c in schema.features if c in schema.leaking or c == schema.target_column]
    if bad:
        raise SchemaError(f"{path}: features leak the outcome: {bad}")
    missing = [c for c in [*schema.categorical, *schema.numeric, schema.time_column,
                           schema.target_column] if c not in columns]
    if missing:
        raise SchemaError(f"{path}: features/time/target not declared under columns: {missing}")
    for name, spec in derived.items():
        if spec.get("from") not in columns or spec.get("part") not in _DERIVED_PARTS:
            raise SchemaError(f"{path}: derived feature {name}: needs 'from' (a column) and "
                              f"'part' in {sorted(_DERIVED_PARTS)}")
    bad_parts = sorted(set(schema.time_parts) - set(_TIME_PARTS))
    if bad_parts:
        raise SchemaError(f"{path}: time parts {bad_parts} unknown; known: {list(_TIME_PARTS)}")
    not_int = [c for c in schema.time_parts.values() if columns.get(c) is None
               or columns[c].dtype != "int"]
    if not_int:
        raise SchemaError(f"{path}: time parts must be declared int columns: {not_int}")
    if columns[schema.time_column].dtype != "datetime":
        raise SchemaError(f"{path}: time column {schema.time_column} must have dtype datetime")
    undeclared = [c for c in schema.row_key if c not in columns]
    if undeclared:
        raise SchemaError(f"{path}: row_key columns not declared under columns: {undeclared}")
    if schema.extra_columns not in _EXTRA_POLICIES:
        raise SchemaError(f"{path}: header extra_columns must be one of {list(_EXTRA_POLICIES)}")
    if schema.target_operator not in (">", ">=", "<", "<=", "=="):
        raise SchemaError(f"{path}: target operator {schema.target_operator!r} unsupported")
    if schema.target_missing not in ("drop", "negative", "positive"):
        raise SchemaError(f"{path}: target missing must be drop, negative or positive")
    return schema


def _time_range(path: Path, raw: Any) -> tuple[date | None, date | None]:
    if raw is None:
        return (None, None)
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise SchemaError(f"{path}: time range must be [first, last] local dates")
    first, last = _parse_date(path, raw[0]), _parse_date(path, raw[1])
    if first and last and first > last:
        raise SchemaError(f"{path}: time range starts after it ends: {first} > {last}")
    return (first, last)


@lru_cache(maxsize=8)
def _load_schema_cached(path: str, mtime: float) -> Schema:
    import yaml

    p = Path(path)
    try:
        # The C loader when built (about 10x faster: every `mlops` command reads the schema).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (safe loader)
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaError(f"{p}: cannot read schema: {exc}") from exc
    if not isinstance(raw, dict):
        raise SchemaError(f"{p}: schema must be a mapping")
    return _parse_schema(p, raw)


def load_schema(path: str | Path | None = None) -> Schema:
    """Load (and cache) the data-set schema."""
    p = Path(path) if path else schema_path()
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise SchemaError(f"{p}: schema file not readable: {exc}") from exc
    return _load_schema_cached(str(p), mtime)
