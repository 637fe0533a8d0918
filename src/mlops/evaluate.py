"""Evaluation on a time-based holdout week, compared with the current champion."""

from __future__ import annotations

from typing import Any

from mlops import config
from mlops.config import load_schema
from mlops.errors import RegistryError
from mlops.util import to_jsonable


def load_version(version: str | int) -> Any:
    """The sklearn pipeline of a registered version."""
    import mlflow

    from mlops import tracking

    client = tracking.setup()
    try:
        client.get_model_version(config.model_name(), str(version))
    except Exception as exc:
        raise RegistryError(f"model {config.model_name()} has no version {version}: {exc}") from exc
    return mlflow.sklearn.load_model(f"models:/{config.model_name()}/{version}")


def _holdout_of(version: str) -> str | None:
    from mlops import tracking

    client = tracking.setup()
    mv = client.get_model_version(config.model_name(), str(version))
    return (mv.tags or {}).get("holdout_week")


def evaluate_model(version: str | int, holdout_week: str | None = None,
                   deploy_margin: float | None = None) -> dict[str, Any]:
    """ROC AUC, PR AUC, F1 and Brier of ``version`` on the holdout week (default: the week it was
    held out on), and of the current champion on the same rows.

    ``beats_champion`` is true when there is no champion, or the candidate's ROC AUC exceeds the
    champion's by at least ``deploy_margin`` (see :data:`mlops.config.THRESHOLDS`).
    """
    from mlops.registry import get_champion
    from mlops.train import limited_threads, load_table, model_input, score

    margin = config.threshold("deploy_margin", deploy_margin)
    schema = load_schema()
    version = str(version)
    model = load_version(version)
    table = load_table()
    holdout = holdout_week or _holdout_of(version) or sorted(table["week"].unique())[-1]
    rows = table[table["week"] == holdout]
    if rows.empty:
        raise RegistryError(f"holdout week {holdout} has no rows in {config.processed_table()}")
    x = model_input(rows, schema)
    y = rows[schema.target_name]
    with limited_threads():
        scores = score(y, model.predict_proba(x)[:, 1])

    champion = get_champion()
    champ_version = champion["version"] if champion else None
    champ_scores = None
    # A champion trained on the holdout week has an unfair advantage; say so in the result.
    champ_last = (champion or {}).get("tags", {}).get("train_last_week")
    champ_first = (champion or {}).get("tags", {}).get("train_first_week")
    champion_saw_holdout = bool(champ_first and champ_last and champ_first <= holdout <= champ_last)
    if champion and champ_version != version:
        champ_model = load_version(champ_version)
        with limited_threads():
            champ_scores = score(y, champ_model.predict_proba(x)[:, 1])
    if champion is None:
        beats, reason = True, "no champion yet"
    elif champ_version == version:
        beats, reason = False, "this version is the champion"
    else:
        gain = scores["roc_auc"] - champ_scores["roc_auc"]
        beats = gain >= margin
        reason = (f"roc_auc {scores['roc_auc']:.4f} vs champion {champ_scores['roc_auc']:.4f} "
                  f"(gain {gain:+.4f}, margin {margin})")
    return to_jsonable({"version": version, "holdout_week": holdout, "metrics": scores,
                        "champion_version": champ_version, "champion_metrics": champ_scores,
                        "beats_champion": beats, "margin": margin, "reason": reason,
                        "champion_trained_on_holdout": champion_saw_holdout})
