"""Retention: delete the files of a folder that are older than a number of days, and MLflow's old
registered model versions and runs.

Used by maintenance_dag (task logs, validation and drift reports, model versions and runs) and
usable from the CLI. A file's age is its modification time; folders left empty are removed too
(never the root itself)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Pruned:
    """What one pass removed and kept."""

    root: str
    cutoff: float
    removed_files: int = 0
    removed_bytes: int = 0
    removed_dirs: int = 0
    kept_files: int = 0
    errors: list[str] = field(default_factory=list)


def retention_days(name: str, default: float) -> float:
    """A retention in days from the environment variable `name` (a positive number)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if days <= 0:
        raise ValueError(f"{name}={raw!r}: a retention must be a positive number of days")
    return days


def prune_older_than(root: Path, days: float, now: float | None = None) -> Pruned:
    """Delete every file under `root` last modified more than `days` ago, then the empty folders.
    A file that vanishes meanwhile is fine; one that cannot be deleted is listed in `errors`."""
    if days <= 0:
        raise ValueError(f"retention for {root} must be positive, got {days} days")
    cutoff = (time.time() if now is None else now) - days * 86400
    result = Pruned(str(root), cutoff)
    if not root.is_dir():
        return result
    for folder, dirs, files in os.walk(root, topdown=False):
        base = Path(folder)
        for name in files:
            path = base / name
            try:
                stat = path.lstat()
                if stat.st_mtime >= cutoff:
                    result.kept_files += 1
                    continue
                path.unlink()
                result.removed_files += 1
                result.removed_bytes += stat.st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                result.errors.append(f"{path}: {exc}")
        if base != root:
            try:
                base.rmdir()  # only when empty
                result.removed_dirs += 1
            except OSError:
                pass
    return result


@dataclass
class PrunedRuns:
    """What one pass over the MLflow runs deleted (soft: lifecycle stage `deleted`) and kept."""

    cutoff_ms: int
    deleted: list[str] = field(default_factory=list)
    deleted_models: list[str] = field(default_factory=list)
    kept_registered: int = 0
    kept_unfinished: int = 0


def _all_pages(search: Any, **kwargs: Any) -> list[Any]:
    """Every item of a paged MLflow search (all pages first: deleting while paging would shift the
    offset pages under the search)."""
    items, token = [], None
    while True:
        page = search(max_results=1000, page_token=token, **kwargs)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def registered_run_ids(client: object) -> set[str]:
    """Run ids behind every registered model version (of every registered model): their runs hold
    the versions' models, metrics and the decisions recorded on them, so they are never pruned."""
    return {mv.run_id for mv in _all_pages(client.search_model_versions) if mv.run_id}  # type: ignore[attr-defined]


def registered_model_ids(client: object) -> set[str]:
    """The logged models (MLflow 3 `models:/m-...`) behind every registered model version."""
    return {mv.model_id for mv in _all_pages(client.search_model_versions)  # type: ignore[attr-defined]
            if getattr(mv, "model_id", None)}


@dataclass
class PrunedVersions:
    """What one pass over the registered model versions deleted and kept."""

    cutoff_ms: int
    keep_newest: int
    deleted: list[str] = field(default_factory=list)  # "model/version"
    kept_aliased: int = 0
    kept_newest: int = 0
    kept_young: int = 0


def prune_model_versions(client: object, model_names: list[str], days: float, keep_newest: int,
                         now: float | None = None) -> PrunedVersions:
    """Delete (MLflow's `delete_model_version`) the registered versions of `model_names` created more
    than `days` days ago, except every version that holds an alias (`champion`, `previous`, any
    other) and the `keep_newest` newest versions of each model (by version number: the latest
    candidate, perhaps awaiting approval, and the recent ones for audit and manual rollback). The
    runs and logged models of the deleted versions are no longer kept by `prune_mlflow_runs`: run
    it after this. Aliases are read from the registered model itself (a version search may leave
    them out). An MLflow error propagates: nothing is read as "no alias"; a model that does not
    exist has no version."""
    if days <= 0:
        raise ValueError(f"{days!r}: a retention must be a positive number of days")
    if keep_newest < 1:
        raise ValueError(f"{keep_newest!r}: the number of newest versions kept must be at least 1")
    cutoff_ms = int(((now if now is not None else time.time()) - days * 86400) * 1000)
    result = PrunedVersions(cutoff_ms=cutoff_ms, keep_newest=keep_newest)
    for name in model_names:
        if "'" in name:
            raise ValueError(f"registered model name {name!r}: a quote cannot be searched for")
        versions = _all_pages(client.search_model_versions, filter_string=f"name = '{name}'")  # type: ignore[attr-defined]
        if not versions:
            continue
        aliased = {str(v) for v in (client.get_registered_model(name).aliases or {}).values()}  # type: ignore[attr-defined]
        aliased |= {str(v.version) for v in versions if v.aliases}
        newest = {str(v.version) for v in sorted(versions, key=lambda v: int(v.version), reverse=True)[:keep_newest]}
        for version in sorted(versions, key=lambda v: int(v.version)):
            number = str(version.version)
            if number in aliased:
                result.kept_aliased += 1
            elif number in newest:
                result.kept_newest += 1
            elif int(version.creation_timestamp) >= cutoff_ms:
                result.kept_young += 1
            else:
                client.delete_model_version(name, number)  # type: ignore[attr-defined]
                result.deleted.append(f"{name}/{number}")
    return result


def prune_mlflow_runs(client: object, experiment_ids: list[str], days: float,
                      now: float | None = None) -> PrunedRuns:
    """Delete (soft: MLflow's `delete_run`, the run's rows and artifacts stay until `mlflow gc`)
    the runs of `experiment_ids` that started more than `days` days ago, except the runs of
    registered model versions (the champion, `previous` and every other version) and runs that
    have not ended; and the logged models those runs produced (MLflow 3 keeps a model's files
    apart from its run's: `delete_run` leaves them), except models of registered versions. An
    MLflow error propagates: nothing is read as "no registered version"."""
    if days <= 0:
        raise ValueError(f"{days!r}: a retention must be a positive number of days")
    cutoff_ms = int(((now if now is not None else time.time()) - days * 86400) * 1000)
    keep = registered_run_ids(client)
    keep_models = registered_model_ids(client)
    result = PrunedRuns(cutoff_ms=cutoff_ms)
    runs = _all_pages(client.search_runs, experiment_ids=experiment_ids,  # type: ignore[attr-defined]
                      filter_string=f"attributes.start_time < {cutoff_ms}")
    for run in runs:
        if run.info.run_id in keep:
            result.kept_registered += 1
        elif run.info.status in ("RUNNING", "SCHEDULED") or not run.info.end_time:
            result.kept_unfinished += 1
        else:
            client.delete_run(run.info.run_id)  # type: ignore[attr-defined]
            result.deleted.append(run.info.run_id)
    if result.deleted:
        gone = set(result.deleted)
        for model in _all_pages(client.search_logged_models, experiment_ids=experiment_ids):  # type: ignore[attr-defined]
            if model.source_run_id in gone and model.model_id not in keep_models:
                client.delete_logged_model(model.model_id)  # type: ignore[attr-defined]
                result.deleted_models.append(model.model_id)
    return result
