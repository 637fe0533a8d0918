"""The one Evidently wrapper: Evidently 0.7's DataDriftPreset on given columns, each column's
test, score and verdict. The drift signals (:mod:`mlops.drift`, on features) and the monitoring
of served scores (:mod:`mlops.monitoring`, on the probability column) both measure through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def column_drift(current: "pd.DataFrame", reference: "pd.DataFrame", numerical: list[str],
                 categorical: list[str], drift_share: float) -> tuple[Any, dict[str, Any]]:
    """Evidently's DataDriftPreset on the given columns (any columns, not only features).

    Returns the snapshot and, per column, ``method``, ``score``, ``threshold`` and ``drifted``
    (Evidently's own per-column test and threshold).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*numerical, *categorical]
    cur = current[columns].copy()
    ref = reference[columns].copy()
    for frame in (cur, ref):
        for c in categorical:
            frame[c] = frame[c].astype("object")
        for c in numerical:
            frame[c] = frame[c].astype("float64")
    definition = DataDefinition(numerical_columns=list(numerical),
                                categorical_columns=list(categorical))
    snapshot = Report([DataDriftPreset(columns=columns, drift_share=drift_share)]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition))
    scores = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        kind = str(cfg.get("type", ""))
        if kind.endswith("ValueDrift"):
            col, value = cfg.get("column"), m["value"]
            method, thr = str(cfg.get("method", "")), float(cfg.get("threshold", 0.1))
            # p-value tests drift below the threshold; distances drift at or above it
            is_drift = value < thr if "p_value" in method else value >= thr
            scores[col] = {"method": method, "score": value, "threshold": thr,
                           "drifted": bool(is_drift)}
    return snapshot, scores
