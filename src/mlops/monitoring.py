"""Monitoring of what the prediction service served.

When a week's labelled batch is accepted, the predictions the service logged for that week
(table :data:`mlops.served.TABLE`, read with the read-only login of ``MLOPS_PREDICTIONS_DB_URL``)
are joined with the batch's labels by :func:`mlops.served.row_keys`, and per served version this
computes: the realised ROC AUC, the rows served and the rows labelled (joined), and the drift of
the served score distribution against the champion's scores on its own holdout week (Evidently,
through :func:`mlops.column_drift.column_drift`). The result goes to
``reports/<week>/served.json`` and to the Pushgateway (job ``serving_monitor``).

A row scored several times by one version counts once for that version (its latest score). The
prediction log being unreadable raises :class:`~mlops.errors.PredictionLogError`: an outage is
retried, never read as "nothing was served".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config, metrics
from mlops.config import Schema, load_schema
from mlops.errors import MonitoringError, PredictionLogError
from mlops.served import TABLE, row_keys
from mlops.util import to_jsonable, write_json

if TYPE_CHECKING:
    import pandas as pd

#: The score column the drift of served scores is measured on.
SCORE = "probability"


def _engine_url(url: str) -> Any:
    """The SQLAlchemy URL, with psycopg2 for a bare ``postgresql://`` (SQLAlchemy 2.1 would pick
    psycopg 3, which is not installed)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def read_served(week: str, url: str | None = None) -> "pd.DataFrame":
    """The predictions logged for rows of ``week``: ``model_version``, ``row_key``,
    ``probability``, ``served_at`` (empty frame when none). PredictionLogError when the log
    cannot be read; MonitoringError when no prediction log is configured."""
    import pandas as pd
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    url = url or config.predictions_db_url()
    if not url:
        raise MonitoringError("no prediction log to read: set MLOPS_PREDICTIONS_DB_URL "
                              "(the predictions_reader login of the predictions database)")
    target = _engine_url(url)
    engine = create_engine(target, poolclass=NullPool, connect_args={"connect_timeout": 10})
    query = text(f"SELECT model_version, row_key, probability, served_at FROM {TABLE} "
                 "WHERE week = :week")
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"week": week}).all()
    except SQLAlchemyError as exc:
        where = target.render_as_string(hide_password=True)
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise PredictionLogError(f"prediction log {where}: cannot read week {week}: {detail}") from exc
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=["model_version", "row_key", SCORE, "served_at"])
    frame["model_version"] = frame["model_version"].astype(str)
    frame[SCORE] = frame[SCORE].astype("float64")
    return frame


def labels_of(raw: "pd.DataFrame", schema: Schema) -> "pd.DataFrame":
    """The labelled rows of a raw batch: ``row_key`` and ``label`` (0/1); rows without a label
    (the schema's ``missing: drop``) are left out."""
    import pandas as pd

    from mlops.data import make_target

    keep, y = make_target(raw, schema)
    keys = pd.Series(row_keys(raw, schema), index=raw.index)
    return pd.DataFrame({"row_key": keys[keep].to_numpy(),
                         "label": y[keep].astype(int).to_numpy()})


def latest_per_key(served: "pd.DataFrame", by: tuple[str, ...] = ("model_version",)) -> "pd.DataFrame":
    """One row per (``by`` ..., row key): the latest score (by ``served_at``)."""
    keys = [*by, "row_key"]
    return served.sort_values("served_at", kind="stable").drop_duplicates(keys, keep="last")


def roc_auc(labels: Any, scores: Any) -> float | None:
    """ROC AUC, or None when the labels hold a single class (or none)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype="float64")))


def version_results(served: "pd.DataFrame", labels: "pd.DataFrame",
                    min_rows: int | None = None) -> dict[str, dict[str, Any]]:
    """Per served version: ``rows_served`` (predictions logged), ``rows_labelled`` (distinct
    rows joined with a label), ``roc_auc`` (None below ``min_rows`` labelled rows or with one
    class), ``positive_rate`` and ``mean_score`` of the labelled rows."""
    min_rows = config.served_min_rows() if min_rows is None else min_rows
    joined = latest_per_key(served).merge(labels, on="row_key", how="inner", validate="many_to_one")
    out: dict[str, dict[str, Any]] = {}
    for version in sorted(served["model_version"].unique(), key=_version_order):
        mine = joined[joined["model_version"] == version]
        auc = roc_auc(mine["label"], mine[SCORE]) if len(mine) >= min_rows else None
        out[version] = {
            "rows_served": int((served["model_version"] == version).sum()),
            "rows_labelled": int(len(mine)),
            "roc_auc": auc,
            "positive_rate": float(mine["label"].mean()) if len(mine) else None,
            "mean_score": float(mine[SCORE].mean()) if len(mine) else None,
            "note": None if auc is not None else (
                f"fewer than {min_rows} labelled rows" if len(mine) < min_rows else "one class"),
        }
    return out


def served_auc(served: "pd.DataFrame", labels: "pd.DataFrame",
               min_rows: int | None = None) -> dict[str, Any] | None:
    """ROC AUC of what was served for the batch's rows (each row's latest score, whichever
    version gave it), or None when fewer than ``min_rows`` labelled rows were served or they hold
    one class. Keys: ``roc_auc``, ``rows_labelled``, ``versions``."""
    min_rows = config.served_min_rows() if min_rows is None else min_rows
    if served.empty:
        return None
    latest = latest_per_key(served, by=())
    joined = latest.merge(labels, on="row_key", how="inner", validate="one_to_one")
    auc = roc_auc(joined["label"], joined[SCORE]) if len(joined) >= min_rows else None
    if auc is None:
        return None
    return {"roc_auc": auc, "rows_labelled": int(len(joined)),
            "versions": sorted(joined["model_version"].unique().tolist(), key=_version_order)}


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if str(version).isdigit() else (1 << 30, str(version))


def holdout_scores(champion: dict[str, Any], schema: Schema) -> "pd.Series | None":
    """The champion's scores on its own holdout week (rows of the training table), or None when
    it names no holdout week or the table no longer has it."""
    import pandas as pd

    from mlops.evaluate import load_version
    from mlops.modeling import limited_threads, load_table, model_input

    week = champion["tags"].get("holdout_week")
    if not week:
        return None
    table = load_table()
    rows = table[table["week"] == week]
    if rows.empty:
        return None
    with limited_threads():
        proba = load_version(champion["version"]).predict_proba(model_input(rows, schema))[:, 1]
    return pd.Series(proba, name=SCORE)


def score_drift(served_scores: "pd.Series", reference: "pd.Series") -> dict[str, Any]:
    """Drift of a version's served scores against the reference scores (Evidently's own test
    for a numeric column of this size): ``method``, ``score``, ``threshold``, ``drifted``."""
    import pandas as pd

    from mlops.column_drift import column_drift

    cur = pd.DataFrame({SCORE: served_scores.to_numpy(dtype="float64")})
    ref = pd.DataFrame({SCORE: reference.to_numpy(dtype="float64")})
    _, scores = column_drift(cur, ref, [SCORE], [], drift_share=0.5)
    return scores[SCORE]


def monitor_served(week: str | None = None, db_url: str | None = None) -> dict[str, Any]:
    """Join the predictions served for ``week`` (default: the newest accepted batch) with its
    accepted labelled batch and measure each served version; write ``reports/<week>/served.json``
    and push the results (job ``serving_monitor``).

    Result keys: ``week``, ``batch``, ``champion_version``, ``reference_week`` (the champion's
    holdout week the score drift compares with), ``rows_served``, ``rows_labelled``,
    ``versions`` (per version: ``rows_served``, ``rows_labelled``, ``roc_auc``,
    ``positive_rate``, ``mean_score``, ``score_drift``), ``report_json``.
    """
    from mlops import batches, registry
    from mlops.data import read_batch

    schema = load_schema()
    if week is None:
        accepted = batches.accepted_batches()
        if not accepted:
            raise MonitoringError(f"no accepted batch in {batches.accepted_dir()} to monitor")
        week = accepted[-1].name.split(".")[0]
    path = batches.accepted_path(week)
    if not path.exists():
        raise MonitoringError(f"{path}: week {week} has no accepted labelled batch to join the "
                              "served predictions with")
    labels = labels_of(read_batch(path, schema), schema)
    served = read_served(week, db_url)
    versions = version_results(served, labels)
    champion = registry.get_champion()
    reference = holdout_scores(champion, schema) if champion and not served.empty else None
    latest = latest_per_key(served)
    for version, result in versions.items():
        mine = latest.loc[latest["model_version"] == version, SCORE]
        result["score_drift"] = (score_drift(mine, reference)
                                 if reference is not None and len(mine) >= 2 else None)
    out = config.reports_dir() / week / "served.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = to_jsonable({
        "week": week, "batch": path,
        "champion_version": champion["version"] if champion else None,
        "reference_week": champion["tags"].get("holdout_week") if champion else None,
        "rows_served": int(len(served)),
        "rows_labelled": int(sum(v["rows_labelled"] for v in versions.values())),
        "versions": versions, "report_json": out})
    write_json(out, result)
    push_results(result)
    return result


def push_results(result: dict[str, Any]) -> bool:
    """Push the per-version results (job ``serving_monitor``; the group holds the latest
    monitored week only)."""
    samples = [metrics.Sample("mlops_served_week_rows", result["rows_served"], {"week": result["week"]})]
    for version, v in result["versions"].items():
        labels = {"version": version, "week": result["week"]}
        drift = v.get("score_drift") or {}
        samples += [
            metrics.Sample("mlops_served_roc_auc", v["roc_auc"], labels),
            metrics.Sample("mlops_served_rows", v["rows_served"], labels),
            metrics.Sample("mlops_served_labelled_rows", v["rows_labelled"], labels),
            metrics.Sample("mlops_served_score_drifted",
                           None if not drift else (1 if drift["drifted"] else 0), labels),
            metrics.Sample("mlops_served_score_drift_value", drift.get("score"), labels),
        ]
    return metrics.push("serving_monitor", samples)


def report_path(week: str) -> Path:
    """Where :func:`monitor_served` writes a week's result."""
    return config.reports_dir() / week / "served.json"
