"""Drift of the newest batch against the champion, on three signals:

* **data**: Evidently 0.7 data drift of the decision columns against the champion's training
  reference (the feature sample logged with the model); fires when the share of drifted columns
  reaches ``drift_share``;
* **model**: the champion's ROC AUC on the batch (every batch arrives labelled) against the ROC
  AUC it had on its own holdout week at training time; fires when it dropped by ``auc_drop`` or
  more;
* **label**: the batch's delayed rate against the delayed rate of the champion's training rows;
  fires when they differ by ``label_shift`` or more (either way).

Retraining is due when any signal fires. The result says which fired and by how much; it is
written to ``reports/<week>/drift.json`` and, with the Evidently report, to ``drift.html``.
Without a champion the training table (other weeks) is the data and label reference and the
model signal cannot be measured.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config, metrics, registry
from mlops.column_drift import column_drift, html_safe_categories
from mlops.config import Schema, load_schema
from mlops.errors import DriftError
from mlops.util import atomic_write_text, to_jsonable, write_json

if TYPE_CHECKING:
    import pandas as pd

SIGNALS = ("data", "model", "label")


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


def batch_of(week: str | None) -> tuple[str, Path]:
    """``(week id, batch path)``: the newest accepted batch, or the batch of ``week``
    (accepted first, else landing)."""
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


def reference_sample(run_id: str) -> "pd.DataFrame":
    """The training-feature sample logged by a training run (cached by run id)."""
    import pandas as pd

    cache = config.sub_dir("state") / "reference_cache" / f"{run_id}.parquet"
    if not cache.exists():
        import mlflow

        cache.parent.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="reference/reference.parquet",
            dst_path=str(cache.parent / f"dl-{run_id}-{os.getpid()}"))
        Path(local).replace(cache)
    return pd.read_parquet(cache)


def data_signal(current: "pd.DataFrame", reference: "pd.DataFrame", schema: Schema,
                drift_share: float) -> tuple[Any, dict[str, Any]]:
    """Data drift of the decision columns; returns the Evidently snapshot and the signal."""
    columns = drift_columns(schema, list(reference.columns))
    snapshot, res = evidently_drift(current, reference, schema, columns, drift_share)
    return snapshot, {
        "fired": res["share"] >= drift_share, "share": res["share"], "threshold": drift_share,
        "drifted_columns": res["drifted_columns"], "columns": columns,
        "informational_drifted_columns": res["informational_drifted"],
        "column_scores": res["columns"]}


def model_signal(roc_auc: float | None, reference_roc_auc: float | None, auc_drop: float,
                 reference_week: str | None = None,
                 served: dict[str, Any] | None = None) -> dict[str, Any]:
    """Model drift: the champion's ROC AUC on the batch vs on its own holdout week.

    ``source`` says what the ROC AUC was measured on: ``served`` (the probabilities the
    prediction service logged for the batch's rows; ``served`` holds their ``rows_labelled``
    and ``versions``) or ``replayed`` (the champion scoring the batch now).
    """
    base = {"roc_auc": roc_auc, "reference_roc_auc": reference_roc_auc,
            "reference_week": reference_week, "threshold": auc_drop,
            "source": "served" if served else "replayed",
            "served_rows": served["rows_labelled"] if served else None,
            "served_versions": served["versions"] if served else None}
    if roc_auc is None or reference_roc_auc is None:
        return {**base, "fired": False, "drop": None,
                "note": "no champion" if reference_roc_auc is None else "batch has one class"}
    drop = reference_roc_auc - roc_auc
    return {**base, "fired": drop >= auc_drop, "drop": drop}


def label_signal(rate: float, reference_rate: float | None, label_shift: float) -> dict[str, Any]:
    """Label drift: the batch's delayed rate vs the reference's (absolute difference)."""
    base = {"rate": rate, "reference_rate": reference_rate, "threshold": label_shift}
    if reference_rate is None:
        return {**base, "fired": False, "difference": None, "note": "no reference rate"}
    diff = rate - reference_rate
    return {**base, "fired": abs(diff) >= label_shift, "difference": diff}


def summary(signals: dict[str, dict[str, Any]]) -> str:
    """One line per signal: value, threshold, fired or not."""
    d, m, lab = signals["data"], signals["model"], signals["label"]
    parts = [f"data: share {d['share']:.2f} (threshold {d['threshold']})"
             f"{' FIRED' if d['fired'] else ''}"]
    if m.get("drop") is not None:
        parts.append(f"model: roc_auc {m['roc_auc']:.4f} ({m.get('source', 'replayed')}) vs "
                     f"{m['reference_roc_auc']:.4f} at "
                     f"training, drop {m['drop']:+.4f} (threshold {m['threshold']})"
                     f"{' FIRED' if m['fired'] else ''}")
    else:
        parts.append(f"model: not measured ({m.get('note')})")
    if lab.get("difference") is not None:
        parts.append(f"label: delayed rate {lab['rate']:.3f} vs {lab['reference_rate']:.3f}, "
                     f"difference {lab['difference']:+.3f} (threshold {lab['threshold']})"
                     f"{' FIRED' if lab['fired'] else ''}")
    else:
        parts.append(f"label: not measured ({lab.get('note')})")
    return "; ".join(parts)


def _champion_scores(champion: dict[str, Any], raw: "pd.DataFrame",
                     schema: Schema) -> tuple[float | None, float]:
    """The champion's ROC AUC on a raw batch's labelled rows (None: one class) and their
    delayed rate."""
    from mlops.data import make_features, make_target
    from mlops.evaluate import load_version
    from mlops.train import limited_threads, model_input

    keep, y = make_target(raw, schema)
    y = y[keep]
    rate = float(y.mean()) if len(y) else 0.0
    if y.nunique() < 2:
        return None, rate
    from sklearn.metrics import roc_auc_score

    x = model_input(make_features(raw, schema)[keep], schema)
    with limited_threads():
        proba = load_version(champion["version"]).predict_proba(x)[:, 1]
    return float(roc_auc_score(y.to_numpy(), proba)), rate


def _served(week: str, raw: "pd.DataFrame", schema: Schema) -> dict[str, Any] | None:
    """ROC AUC of the predictions served for the batch's rows (``mlops.monitoring``), or None
    when no prediction log is configured or too few labelled rows were served. An unreadable
    log raises (PredictionLogError): the check is retried, not silently replayed."""
    if not config.predictions_db_url():
        return None
    from mlops import monitoring

    return monitoring.served_auc(monitoring.read_served(week), monitoring.labels_of(raw, schema))


def _float_tag(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, TypeError, ValueError):
        return None


def detect_drift(week: str | None = None, drift_share: float | None = None,
                 auc_drop: float | None = None, label_shift: float | None = None) -> dict[str, Any]:
    """The three drift signals of a batch (default: the newest accepted one) against the champion.

    Writes ``reports/<week>/drift.json|.html`` and pushes the ``mlops_drift_*`` metrics. Result keys:
    ``week``, ``batch`` (path), ``reference``, ``champion_version``, ``drift_detected``,
    ``fired`` (names of the signals that fired), ``signals`` (``data``, ``model``, ``label``),
    ``summary``, ``report_html``, ``report_json``.
    """
    from mlops.data import make_features, make_target, read_batch

    th = config.resolve_thresholds("drift", {"drift_share": drift_share, "auc_drop": auc_drop,
                                             "label_shift": label_shift})
    schema = load_schema()
    week, path = batch_of(week)
    raw = read_batch(path, schema)
    current = make_features(raw, schema)
    champion = registry.get_champion()
    if champion is not None:
        reference = reference_sample(champion["run_id"])
        source = f"champion v{champion['version']}"
        tags = champion["tags"]
        auc, rate = _champion_scores(champion, raw, schema)
        served = _served(week, raw, schema)
        if served is not None:
            auc = served["roc_auc"]
        ref_auc, ref_rate = _float_tag(tags, "holdout_roc_auc"), _float_tag(tags, "train_positive_rate")
        ref_week = tags.get("holdout_week")
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
        source = "training table"
        keep, y = make_target(raw, schema)
        auc, rate = None, float(y[keep].mean()) if keep.any() else 0.0
        served = None
        ref_auc, ref_rate, ref_week = None, float(others[schema.target_name].mean()), None
    snapshot, data = data_signal(current, reference, schema, th["drift_share"])
    signals = {"data": data,
               "model": model_signal(auc, ref_auc, th["auc_drop"], ref_week, served),
               "label": label_signal(rate, ref_rate, th["label_shift"])}
    fired = [name for name in SIGNALS if signals[name]["fired"]]
    out_dir = config.reports_dir() / week
    out_dir.mkdir(parents=True, exist_ok=True)
    result = to_jsonable({
        "week": week, "batch": path, "reference": source,
        "champion_version": champion["version"] if champion else None,
        "drift_detected": bool(fired), "fired": fired,
        "signals": {k: {kk: vv for kk, vv in v.items() if kk != "column_scores"}
                    for k, v in signals.items()},
        "summary": summary(signals),
        "report_html": out_dir / "drift.html", "report_json": out_dir / "drift.json"})
    write_html(out_dir / "drift.html", result, snapshot)
    write_json(out_dir / "drift.json", {**result, "column_scores": to_jsonable(
        data["column_scores"])})
    _push_drift(signals, bool(fired))
    return result


def _push_drift(signals: dict[str, dict[str, Any]], detected: bool) -> None:
    """The verdict, the three signals and the champion's ROC AUC on the batch (job
    ``mlops_drift``; a signal that was not measured has no value)."""
    measured = {"data": signals["data"]["share"], "model": signals["model"].get("drop"),
                "label": (None if signals["label"].get("difference") is None
                          else abs(signals["label"]["difference"]))}
    samples = [metrics.Sample("mlops_drift_detected", 1 if detected else 0),
               metrics.Sample("mlops_drift_share", signals["data"]["share"]),
               metrics.Sample("mlops_drift_champion_roc_auc", signals["model"].get("roc_auc"))]
    for name in SIGNALS:
        label = {"signal": name}
        samples += [metrics.Sample("mlops_drift_signal_fired", 1 if signals[name]["fired"] else 0, label),
                    metrics.Sample("mlops_drift_signal_value", measured[name], label),
                    metrics.Sample("mlops_drift_signal_threshold", signals[name]["threshold"], label)]
    metrics.push("drift", samples)


def signals_html(result: dict[str, Any]) -> str:
    """The three signals as an HTML section (put before the Evidently report)."""
    rows = []
    for name in SIGNALS:
        sig = result["signals"][name]
        if name == "data":
            value = f"share of drifted columns {sig['share']:.3f}: {', '.join(sig['drifted_columns']) or 'none'}"
        elif name == "model":
            value = (f"ROC AUC {sig['roc_auc']:.4f} vs {sig['reference_roc_auc']:.4f} on its "
                     f"holdout {sig.get('reference_week')}: drop {sig['drop']:+.4f}"
                     if sig.get("drop") is not None else f"not measured: {sig.get('note')}")
        else:
            value = (f"delayed rate {sig['rate']:.3f} vs {sig['reference_rate']:.3f}: "
                     f"difference {sig['difference']:+.3f}"
                     if sig.get("difference") is not None else f"not measured: {sig.get('note')}")
        rows.append(f"<tr><td>{name}</td><td>{html.escape(value)}</td>"
                    f"<td>{sig['threshold']}</td><td>{'FIRED' if sig['fired'] else 'no'}</td></tr>")
    verdict = ("retraining due: " + ", ".join(result["fired"])) if result["fired"] else "no drift"
    return (f"<section id='mlops-drift-signals' style='font-family:sans-serif;margin:1em'>"
            f"<h1>Drift of {html.escape(result['week'])} vs {html.escape(result['reference'])}: "
            f"{html.escape(verdict)}</h1><p>{html.escape(str(result['batch']))}</p>"
            f"<table border='1' cellpadding='4'><tr><th>signal</th><th>value</th>"
            f"<th>threshold</th><th>fired</th></tr>{''.join(rows)}</table></section>")


def write_html(path: Path, result: dict[str, Any], snapshot: Any) -> None:
    """``drift.html``: the signal table, then Evidently's data-drift report."""
    tmp = path.with_name(f".{path.name}.evidently.tmp")
    snapshot.save_html(str(tmp))
    page = tmp.read_text(encoding="utf-8")
    tmp.unlink()
    section = signals_html(result)
    if "<body>" in page:
        page = page.replace("<body>", f"<body>{section}", 1)
    else:
        page = f"<!doctype html><html><body>{section}{page}</body></html>"
    atomic_write_text(path, page)
