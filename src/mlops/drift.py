"""Data drift (Evidently 0.7) of the newest batch against the champion's training reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config, metrics
from mlops.config import Schema, load_schema
from mlops.errors import DriftError
from mlops.util import to_jsonable, write_json

if TYPE_CHECKING:
    import pandas as pd


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
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cats = [c for c in columns if c in schema.categorical]
    nums = [c for c in columns if c not in cats]
    cur = current[columns].copy()
    ref = reference[columns].copy()
    for frame in (cur, ref):
        for c in cats:
            frame[c] = frame[c].astype("object")
        for c in nums:
            frame[c] = frame[c].astype("float64")
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    snapshot = Report([DataDriftPreset(columns=columns, drift_share=drift_share)]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition))
    drifted, scores = [], {}
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
            if is_drift:
                drifted.append(col)
    hits = sorted(c for c in drifted if c in monitored)
    share = len(hits) / len(monitored) if monitored else 0.0
    return snapshot, {"share": share, "count": len(hits), "drifted_columns": hits,
                      "informational_drifted": sorted(c for c in drifted if c not in monitored),
                      "columns": scores}


def _batch_path(week: str | None) -> tuple[str, Path]:
    from mlops import batches

    accepted = batches.accepted_batches()
    if week is None:
        if not accepted:
            raise DriftError(f"no accepted batch in {batches.accepted_dir()} to check for drift")
        return accepted[-1].name.split(".")[0], accepted[-1]
    found = batches.find(week)
    if found is not None:
        return week, found
    raise DriftError(f"batch {week} not found in accepted/ or landing/ under {config.data_dir()}")


def champion_reference() -> tuple["pd.DataFrame", str] | None:
    """The champion's logged training-feature sample (cached by run id), or None."""
    import pandas as pd

    from mlops.registry import get_champion

    champion = get_champion()
    if not champion:
        return None
    cache = config.sub_dir("state") / "reference_cache" / f"{champion['run_id']}.parquet"
    if not cache.exists():
        import mlflow

        cache.parent.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            run_id=champion["run_id"], artifact_path="reference/reference.parquet",
            dst_path=str(cache.parent / f"dl-{champion['run_id']}"))
        Path(local).replace(cache)
    return pd.read_parquet(cache), champion["version"]


def detect_drift(week: str | None = None, drift_share: float | None = None) -> dict[str, Any]:
    """Drift share of a batch (default: the newest accepted one) vs the champion's reference.

    Without a champion the training table (other weeks) is the reference. Writes
    ``reports/<week>/drift.json|.html`` and the ``mlops.drift.*`` gauges.
    """
    from mlops.data import make_features, read_batch

    threshold = config.threshold("drift_share", drift_share)
    schema = load_schema()
    week, path = _batch_path(week)
    current = make_features(read_batch(path, schema), schema)
    ref = champion_reference()
    if ref is not None:
        reference, source = ref[0], f"champion v{ref[1]}"
        champion_version = ref[1]
    else:
        from mlops.train import load_table

        try:
            table = load_table()
        except Exception as exc:
            raise DriftError(f"no champion and no training table to compare {path} with") from exc
        others = table[table["week"] != week]
        if others.empty:
            raise DriftError(f"no reference data other than {week} to compare {path} with")
        reference = others.sample(n=min(config.reference_rows(), len(others)), random_state=0)
        source, champion_version = "training table", None
    columns = drift_columns(schema, list(reference.columns))
    snapshot, res = evidently_drift(current, reference, schema, columns, threshold)
    out_dir = config.reports_dir() / week
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / "drift.html"
    tmp = out_dir / ".drift.html.tmp"
    snapshot.save_html(str(tmp))
    tmp.replace(html)
    detected = res["share"] >= threshold
    result = to_jsonable({
        "batch": week, "path": path, "drift_share": res["share"],
        "drifted_columns": res["drifted_columns"], "drift_detected": detected,
        "informational_drifted_columns": res["informational_drifted"],
        "threshold": threshold, "report_html": html, "report_json": out_dir / "drift.json",
        "reference": source, "champion_version": champion_version, "columns": columns})
    write_json(out_dir / "drift.json", {**result, "column_scores": to_jsonable(res["columns"])})
    metrics.gauge("drift.share", res["share"])
    metrics.gauge("drift.detected", 1 if detected else 0)
    return result
