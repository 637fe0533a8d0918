"""The tasks of maintenance_dag: retention of task logs and reports (light workers, which own
those files) and `airflow db clean` (the maintenance worker, the only one holding the metadata
database's login; mlops_airflow.policy keeps every other task off its queue).

Retentions in days come from the environment (LOG_RETENTION_DAYS, REPORT_RETENTION_DAYS,
AIRFLOW_DB_RETENTION_DAYS, MLFLOW_RUN_RETENTION_DAYS, MLFLOW_MODEL_VERSION_RETENTION_DAYS of `.env`;
MLFLOW_KEEP_MODEL_VERSIONS is a count); a run's conf may name others, or `clean_before` (an ISO
timestamp), `dag_ids` and `tables` for the database."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("mlops_airflow")

DEFAULT_DAYS = {"LOG_RETENTION_DAYS": 30.0, "REPORT_RETENTION_DAYS": 90.0, "AIRFLOW_DB_RETENTION_DAYS": 90.0,
                "MLFLOW_RUN_RETENTION_DAYS": 180.0, "MLFLOW_MODEL_VERSION_RETENTION_DAYS": 180.0}


def _days(conf: dict[str, Any], key: str, variable: str) -> float:
    from mlops.retention import retention_days

    raw = conf.get(key)
    if raw is None:
        return retention_days(variable, DEFAULT_DAYS[variable])
    days = float(raw)
    if days <= 0:
        raise ValueError(f"conf {key}={raw!r}: a retention must be a positive number of days")
    return days


def prune_task_logs(conf: dict[str, Any]) -> dict[str, Any]:
    """Delete task logs older than LOG_RETENTION_DAYS (conf `log_retention_days`)."""
    from airflow.configuration import conf as airflow_conf
    from mlops.retention import prune_older_than

    root = Path(airflow_conf.get("logging", "base_log_folder"))
    result = prune_older_than(root, _days(conf, "log_retention_days", "LOG_RETENTION_DAYS"))
    log.info("task logs: %s", result)
    return asdict(result)


def prune_reports(conf: dict[str, Any]) -> dict[str, Any]:
    """Delete validation and drift reports older than REPORT_RETENTION_DAYS (conf
    `report_retention_days`), in the flights' data folder and in every other data set's
    (mlops.dataset.data_roots); the counts are summed over them."""
    from mlops.dataset import data_roots
    from mlops.retention import prune_older_than

    days = _days(conf, "report_retention_days", "REPORT_RETENTION_DAYS")
    passes = [prune_older_than(root / "reports", days) for root in data_roots()]
    total = asdict(passes[0])  # the flights' (its root names the result)
    for other in passes[1:]:
        for key, value in asdict(other).items():
            if isinstance(value, (int, list)):
                total[key] += value
    log.info("reports: %s", total)
    return total


def clean_before(conf: dict[str, Any], now: datetime | None = None) -> datetime:
    """The cut-off of `airflow db clean`: conf `clean_before`, else now minus the retention."""
    if conf.get("clean_before"):
        stamp = datetime.fromisoformat(str(conf["clean_before"]).replace("Z", "+00:00"))
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
    days = _days(conf, "db_retention_days", "AIRFLOW_DB_RETENTION_DAYS")
    return (now or datetime.now(timezone.utc)) - timedelta(days=days)


def db_clean_command(conf: dict[str, Any], now: datetime | None = None) -> list[str]:
    """`airflow db clean` on the retention: no archive tables (they would grow instead)."""
    command = ["airflow", "db", "clean", "--clean-before-timestamp", clean_before(conf, now).isoformat(),
               "--skip-archive", "--yes"]
    if conf.get("dag_ids"):
        command += ["--dag-ids", ",".join(conf["dag_ids"])]
    if conf.get("tables"):
        command += ["--tables", ",".join(conf["tables"])]
    return command


# The maintenance worker's database URL (stack/components.py maintenance_worker; compose:
# airflow-worker-maintenance): Airflow blanks its own variable inside every task.
DB_URL_VAR = "MLOPS_METADATA_DB_URL"


def clean_metadata_db(conf: dict[str, Any]) -> dict[str, Any]:
    """Run `airflow db clean` with the maintenance worker's database login."""
    url = os.environ.get(DB_URL_VAR)
    if not url:
        raise RuntimeError(f"{DB_URL_VAR} is not set: clean_metadata_db runs only on the maintenance worker "
                           f"(queue maintenance)")
    command = db_clean_command(conf)
    log.info("running %s", " ".join(command))
    env = {k: v for k, v in os.environ.items() if k != DB_URL_VAR}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    env.pop("AIRFLOW__CORE__SQL_ALCHEMY_CONN", None)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    output = proc.stdout + proc.stderr
    log.info("%s", output[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db clean failed ({proc.returncode}): {output[-2000:]}")
    failed = uncleaned_tables(output)
    # Airflow 3.3.2 filters the `deadline` table by a dag_id column it lacks when --dag-ids is given.
    tolerated = {"deadline"} if conf.get("dag_ids") else set()
    if failed - tolerated:
        raise RuntimeError(f"airflow db clean could not clean {sorted(failed)}: {output[-2000:]}")
    return {"clean_before": command[command.index("--clean-before-timestamp") + 1], "dag_ids": conf.get("dag_ids"),
            "tables": conf.get("tables"), "not_cleaned": sorted(failed)}


_UNCLEANED = re.compile(r"not cleaned due to errors: \[([^\]]*)\]")


def uncleaned_tables(output: str) -> set[str]:
    """The tables `airflow db clean` reports it could not clean (it exits 0 unless asked not to)."""
    return {name.strip().strip("'\"") for match in _UNCLEANED.finditer(output) for name in match.group(1).split(",")
            if name.strip()}


# The maintenance worker's MLflow login (stack/components.py maintenance_worker; compose:
# airflow-worker-maintenance): MANAGE on every data set's experiment and registered model (MANAGE
# is the only permission that may delete a run or a model version). The pipeline's own login
# (Connection mlflow_default) has EDIT, which can delete neither.
MLFLOW_USER_VAR = "MLOPS_MLFLOW_MAINTENANCE_USER"
MLFLOW_PASSWORD_VAR = "MLOPS_MLFLOW_MAINTENANCE_PASSWORD"
KEEP_VERSIONS_VAR = "MLFLOW_KEEP_MODEL_VERSIONS"
DEFAULT_KEEP_VERSIONS = 10


def keep_model_versions(conf: dict[str, Any]) -> int:
    """How many newest versions of each registered model always stay: conf
    `mlflow_keep_model_versions`, else MLFLOW_KEEP_MODEL_VERSIONS, else 10 (at least 1)."""
    raw = conf.get("mlflow_keep_model_versions")
    name = "conf mlflow_keep_model_versions"
    if raw is None:
        raw, name = (os.environ.get(KEEP_VERSIONS_VAR, "").strip() or DEFAULT_KEEP_VERSIONS), KEEP_VERSIONS_VAR
    try:
        count = int(str(raw))
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{name}={raw!r}: the number of newest model versions kept must be a whole number >= 1")
    return count


def stack_mlflow_resources(client: Any) -> tuple[list[str], list[str]]:
    """(experiment ids, registered model names) of every data set of configs/ (mlops.dataset): the
    flights' from the process settings, each other's from its file. An experiment not created yet
    is left out (it has no run); an MLflow error propagates."""
    from mlops.dataset import DEFAULT_DATASET, known_names, resolve

    experiments: list[str] = []
    models: list[str] = []
    for name in [DEFAULT_DATASET, *(n for n in known_names() if n != DEFAULT_DATASET)]:
        dataset = resolve(name)
        experiment = client.get_experiment_by_name(dataset.experiment_name)
        if experiment is not None and experiment.experiment_id not in experiments:
            experiments.append(experiment.experiment_id)
        if dataset.model_name not in models:
            models.append(dataset.model_name)
    return experiments, models


def prune_mlflow_runs(conf: dict[str, Any]) -> dict[str, Any]:
    """With the maintenance worker's MLflow login, for every data set's registered model and
    experiment: first delete the registered versions older than MLFLOW_MODEL_VERSION_RETENTION_DAYS
    (conf `mlflow_model_version_retention_days`) that hold no alias and are not among the newest
    MLFLOW_KEEP_MODEL_VERSIONS (conf `mlflow_keep_model_versions`); then delete (soft, MLflow
    `delete_run`) the runs older than MLFLOW_RUN_RETENTION_DAYS (conf `mlflow_run_retention_days`)
    that no registered version references any more, and their logged models. Versions first, so
    that the runs of the versions just deleted go in the same pass."""
    from mlops import tracking
    from mlops.retention import prune_mlflow_runs as prune
    from mlops.retention import prune_model_versions

    from mlops_airflow.config import configure_mlflow

    user, password = os.environ.get(MLFLOW_USER_VAR), os.environ.get(MLFLOW_PASSWORD_VAR)
    if not user or not password:
        raise RuntimeError(f"{MLFLOW_USER_VAR}/{MLFLOW_PASSWORD_VAR} are not set: prune_mlflow_runs runs only on the "
                           f"maintenance worker (queue maintenance)")
    version_days = _days(conf, "mlflow_model_version_retention_days", "MLFLOW_MODEL_VERSION_RETENTION_DAYS")
    keep = keep_model_versions(conf)
    days = _days(conf, "mlflow_run_retention_days", "MLFLOW_RUN_RETENTION_DAYS")
    configure_mlflow()  # the tracking URI (checked to be this stack's own), then our login instead
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    client = tracking.setup()
    experiments, models = stack_mlflow_resources(client)
    versions = prune_model_versions(client, models, version_days, keep)
    log.info("registered versions of %s older than %s days: deleted %d (%s); kept %d with an alias, %d newest "
             "(%d per model), %d younger", ", ".join(models), version_days, len(versions.deleted),
             ", ".join(versions.deleted), versions.kept_aliased, versions.kept_newest, keep, versions.kept_young)
    result = prune(client, experiments, days)
    log.info("MLflow runs older than %s days: deleted %d (%s) and their logged models (%s), kept %d of registered "
             "versions, %d unfinished", days, len(result.deleted), ", ".join(result.deleted),
             ", ".join(result.deleted_models), result.kept_registered, result.kept_unfinished)
    return {"days": days, "deleted": len(result.deleted), "deleted_runs": result.deleted,
            "deleted_models": result.deleted_models,
            "kept_registered": result.kept_registered, "kept_unfinished": result.kept_unfinished,
            "version_days": version_days, "keep_versions": keep, "deleted_versions": versions.deleted,
            "kept_aliased_versions": versions.kept_aliased, "kept_newest_versions": versions.kept_newest,
            "kept_young_versions": versions.kept_young}
