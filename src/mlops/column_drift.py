"""The one Evidently wrapper: Evidently 0.7's DataDriftPreset on given columns, each column's
test, score and verdict. The drift signals (:mod:`mlops.drift`, on features), the data validation's
distribution report (:mod:`mlops.validation.checks`) and the monitoring of served scores
(:mod:`mlops.monitoring`, on the probability column) all measure through it; it imports nothing
of the registry, so validation can use it without depending on model drift."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import Schema


_PLAIN_CATEGORY = re.compile(r"^[A-Za-z0-9 _.,:+-]{0,64}$")


def html_safe_categories(frame: "pd.DataFrame", schema: Schema, cats: list[str]) -> "pd.DataFrame":
    """``frame`` with every category value that the schema does not list and that is not plain
    text replaced by ``unlisted-<hash>``. Evidently writes category values unescaped into a
    ``<script>`` of its HTML: a batch value ``</script><script>...`` would run in the reports.
    The mapping is one to one, so every statistic (and drift decision) stays the same."""
    import pandas as pd

    def safe(value: object) -> object:
        if value is None or (isinstance(value, float) and value != value):
            return value
        text = str(value)
        if text in listed or _PLAIN_CATEGORY.match(text):
            return value
        return "unlisted-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    out = frame.copy()
    for c in cats:
        listed = set(schema.columns[c].categories or ()) if c in schema.columns else set()
        col = out[c].astype("object")
        uniques = pd.unique(col)
        mapping = {v: safe(v) for v in uniques if v is not None and v == v}
        if any(k != v for k, v in mapping.items()):
            col = col.map(lambda v: mapping.get(v, v) if v is not None and v == v else v)
        out[c] = col
    return out


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


def drift_columns(schema: Schema, available: list[str]) -> list[str]:
    """Feature columns that count in the drift decision (schema ``drift.exclude`` left out)."""
    return [c for c in schema.features if c not in schema.drift_exclude and c in available]


def evidently_drift(current: "pd.DataFrame", reference: "pd.DataFrame", schema: Schema,
                    columns: list[str], drift_share: float,
                    report_all: bool = True) -> tuple[Any, dict[str, Any]]:
    """Run Evidently's DataDriftPreset on every feature (only ``columns`` unless report_all).

    Returns the snapshot and the drift of the monitored ``columns``: ``share``, ``count``,
    ``drifted_columns``, plus the drifted informational (excluded) columns.
    """
    monitored = list(columns)
    columns = [c for c in schema.features if c in current.columns and c in reference.columns
               and (report_all or c in monitored)]
    cats = [c for c in columns if c in schema.categorical]
    current = html_safe_categories(current[columns], schema, cats)
    reference = html_safe_categories(reference[columns], schema, cats)
    snapshot, scores = column_drift(current, reference, [c for c in columns if c not in cats],
                                    cats, drift_share)
    drifted = [c for c, s in scores.items() if s["drifted"]]
    hits = sorted(c for c in drifted if c in monitored)
    share = len(hits) / len(monitored) if monitored else 0.0
    return snapshot, {"share": share, "count": len(hits), "drifted_columns": hits,
                      "informational_drifted": sorted(c for c in drifted if c not in monitored),
                      "columns": scores}
