"""Scores of registered versions on a week of the training table: a candidate and the current
champion on the same rows. Deciding what the scores mean is :mod:`mlops.promotion`'s job."""

from __future__ import annotations

from typing import Any

from mlops import config, registry
from mlops.config import load_schema
from mlops.errors import RegistryError
from mlops.util import to_jsonable

def load_version(version: str | int) -> Any:
    """The verified sklearn pipeline of a registered version (:func:`mlops.model_store.load_version`:
    skops only, the project's trusted types, digest checked; cached per process)."""
    from mlops import model_store

    return model_store.load_version(version)


def score_version(version: str | int, rows: Any) -> dict[str, float]:
    """ROC AUC, PR AUC, F1, Brier of a version on labelled rows of the training table."""
    from mlops.modeling import limited_threads, model_input, score

    schema = load_schema()
    model = load_version(version)
    with limited_threads():
        proba = model.predict_proba(model_input(rows, schema))[:, 1]
    return score(rows[schema.target_name], proba)


def week_rows(week: str) -> Any:
    """The rows of one week of the training table (a RegistryError when it has none)."""
    from mlops.modeling import load_table

    table = load_table()
    rows = table[table["week"] == week]
    if rows.empty:
        raise RegistryError(f"week {week} has no rows in {config.processed_table()}")
    return rows


def evaluate_model(version: str | int, holdout_week: str | None = None) -> dict[str, Any]:
    """ROC AUC, PR AUC, F1 and Brier of ``version`` on the holdout week (default: the week it was
    held out on) and of the current champion on the same rows.

    Result: ``version``, ``holdout_week``, ``metrics``, ``champion_version``,
    ``champion_metrics`` (None without a champion or when the version is the champion) and
    ``champion_trained_on_holdout`` (the champion saw that week: an unfair comparison).
    """
    from mlops.modeling import load_table

    version = str(version)
    info = registry.version_info(version)
    if holdout_week is None:
        holdout_week = info["tags"].get("holdout_week") or sorted(
            load_table()["week"].unique())[-1]
    rows = week_rows(holdout_week)
    scores = score_version(version, rows)
    champion = registry.get_champion()
    champ_version = champion["version"] if champion else None
    champ_scores = None
    tags = (champion or {}).get("tags", {})
    first, last = tags.get("train_first_week"), tags.get("train_last_week")
    champion_saw_holdout = bool(first and last and first <= holdout_week <= last)
    if champion and champ_version != version:
        champ_scores = score_version(champ_version, rows)
    return to_jsonable({"version": version, "holdout_week": holdout_week, "metrics": scores,
                        "recipe": info["tags"].get("recipe"),
                        "champion_version": champ_version, "champion_metrics": champ_scores,
                        "champion_recipe": tags.get("recipe"),
                        "champion_trained_on_holdout": champion_saw_holdout})
