"""The one Evidently wrapper: Evidently 0.7's DataDriftPreset on given columns, each column's
test, score and verdict. The drift signals (:mod:`mlops.drift`, on features) and the monitoring
of served scores (:mod:`mlops.monitoring`, on the probability column) both measure through it."""

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
