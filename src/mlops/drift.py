"""Drift of the newest batch against the champion, on three signals:

* **data**: Evidently 0.7 data drift of the decision columns against the champion's training
  reference (the feature sample logged with the model); fires when the share of drifted columns
  reaches ``drift_share``;
* **model**: the champion's ROC AUC on the batch (every batch arrives labelled) against the ROC
  AUC it had on its own holdout week at training time; fires when it dropped by ``auc_drop`` or
  more;
* **label**: the batch's positive-label rate (the flights: delayed) against that of the
  champion's training rows; fires when they differ by ``label_shift`` or more (either way).

The signals are one table, :data:`mlops.drift_signals.SIGNALS` (a new signal is one entry there).
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

from mlops import config, drift_signals, metrics, registry
from mlops.config import Schema, load_schema
from mlops.errors import DriftError
from mlops.util import atomic_write_text, read_parquet, to_jsonable, write_json

if TYPE_CHECKING:
    import pandas as pd


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
    cache = config.sub_dir("state") / "reference_cache" / f"{run_id}.parquet"
    if not cache.exists():
        import mlflow

        cache.parent.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="reference/reference.parquet",
            dst_path=str(cache.parent / f"dl-{run_id}-{os.getpid()}"))
        Path(local).replace(cache)
    return read_parquet(cache)


def summary(signals: dict[str, dict[str, Any]]) -> str:
    """One line per signal of the table: value, threshold, fired or not."""
    return "; ".join(drift_signals.line(name, signals[name]) for name in drift_signals.names())


def resolve_thresholds(given: dict[str, float | None]) -> dict[str, float]:
    """The value of every signal's threshold: ``given`` (keyword arguments, None = not given),
    else ``MLOPS_<NAME>``, else its default (a name no signal takes is a TypeError)."""
    names = list(dict.fromkeys(s.threshold for s in drift_signals.SIGNALS))
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"unknown drift thresholds: {unknown}; known: {names}")
    return {name: config.threshold(name, given.get(name)) for name in names}


def _champion_scores(champion: dict[str, Any], raw: "pd.DataFrame",
                     schema: Schema) -> tuple[float | None, float]:
    """The champion's ROC AUC on a raw batch's labelled rows (None: one class) and their
    positive-label rate."""
    from mlops.data import make_features, make_target
    from mlops.evaluate import load_version
    from mlops.modeling import limited_threads, model_input

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


def model_reference(tags: dict[str, str], how: str = "holdout") -> tuple[float | None, str | None]:
    """The ROC AUC the model signal compares the batch's with, and the week it was measured on,
    from the champion version's tags.

    ``holdout`` (default): its ROC AUC on its own holdout week. ``best_measured`` (the data set's
    ``drift.model_reference``): the higher of that and its validation score, i.e. the quality
    its recipe showed on the week before its holdout. A champion chosen by a retraining right
    after an abrupt drift was fitted on the old concept and scored on the drifted holdout week:
    its holdout score already has the drift in it, and against it alone the model signal goes
    quiet while the champion stays half adapted. Its validation week precedes the drift, so the
    better of the two is the champion's quality before the drift.
    """
    auc, week = _float_tag(tags, "holdout_roc_auc"), tags.get("holdout_week")
    if how == "best_measured":
        val = _float_tag(tags, "validation_roc_auc")
        if val is not None and (auc is None or val > auc):
            return val, f"validation week {tags.get('validation_week')}"
    return auc, week


def detect_drift(week: str | None = None, drift_share: float | None = None,
                 auc_drop: float | None = None, label_shift: float | None = None,
                 **more: float | None) -> dict[str, Any]:
    """The drift signals (:data:`mlops.drift_signals.SIGNALS`) of a batch (default: the newest
    accepted one) against the champion; ``more``: the thresholds of further signals.

    Writes ``reports/<week>/drift.json|.html`` and pushes the ``mlops_drift_*`` metrics. Result keys:
    ``week``, ``batch`` (path), ``reference``, ``champion_version``, ``drift_detected``,
    ``fired`` (names of the signals that fired), ``signals`` (``data``, ``model``, ``label``),
    ``summary``, ``report_html``, ``report_json``.
    """
    from mlops.data import make_features, make_target, read_batch

    th = resolve_thresholds({"drift_share": drift_share, "auc_drop": auc_drop,
                             "label_shift": label_shift, **more})
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
        ref_auc, ref_week = model_reference(tags, schema.model_reference)
        ref_rate = _float_tag(tags, "train_positive_rate")
    else:
        from mlops.modeling import load_table

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
    evidence = drift_signals.Evidence(schema, raw, current, reference, auc, ref_auc, ref_week, served,
                                      rate, ref_rate)
    signals = drift_signals.measure(evidence, th)
    fired = [name for name, sig in signals.items() if sig["fired"]]
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
    write_html(out_dir / "drift.html", result, evidence.snapshot)
    write_json(out_dir / "drift.json", {**result, "column_scores": to_jsonable(
        signals["data"]["column_scores"])})
    _push_drift(signals, bool(fired))
    return result


def _push_drift(signals: dict[str, dict[str, Any]], detected: bool) -> None:
    """The verdict, every signal of the table and the champion's ROC AUC on the batch (job
    ``mlops_drift``; a signal that was not measured has no value)."""
    samples = [metrics.Sample("mlops_drift_detected", 1 if detected else 0),
               metrics.Sample("mlops_drift_share", signals["data"]["share"]),
               metrics.Sample("mlops_drift_champion_roc_auc", signals["model"].get("roc_auc"))]
    value_help = drift_signals.metric_help()
    for signal in drift_signals.SIGNALS:
        sig, label = signals[signal.name], {"signal": signal.name}
        samples += [metrics.Sample("mlops_drift_signal_fired", 1 if sig["fired"] else 0, label),
                    metrics.Sample("mlops_drift_signal_value", signal.value(sig), label, help=value_help),
                    metrics.Sample("mlops_drift_signal_threshold", sig["threshold"], label)]
    metrics.push("drift", samples)


def signals_html(result: dict[str, Any]) -> str:
    """The signals of the table as an HTML section (put before the Evidently report)."""
    rows = []
    for name in drift_signals.names():
        sig = result["signals"][name]
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(drift_signals.described(name, sig))}</td>"
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
