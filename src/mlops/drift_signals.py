"""The drift signals as one table, :data:`SIGNALS`: each entry is a signal's name, its threshold
(declared in :data:`mlops.config.THRESHOLDS`, so it has a CLI flag, an environment variable and an
Airflow Variable), how it is measured and what it compares. Everything that reports signals reads
the table: the drift result and its summary line (:mod:`mlops.drift`), the signal table of
``drift.html``, the ``mlops_drift_signal_*`` metrics and the demo's printout (``stack/demo.py``).
Adding a signal is one entry here (and, if it needs a threshold of its own, its declaration in
``THRESHOLDS``).

A signal's ``measure`` gets the :class:`Evidence` of one batch and its threshold's value and
returns the signal's JSON object: at least ``fired`` and ``threshold``; ``value`` reads from it
the number compared with the threshold (None: not measured, then ``note`` says why) and
``text`` describes that measurement in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.column_drift import drift_columns, evidently_drift

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import Schema


@dataclass
class Evidence:
    """What the signals of one batch are measured from."""

    schema: "Schema"
    raw: "pd.DataFrame"  # the batch as read
    current: "pd.DataFrame"  # the batch's features
    reference: "pd.DataFrame"  # the champion's training sample (or other weeks of the table)
    roc_auc: float | None  # the champion's ROC AUC on the batch (None: not measurable)
    reference_roc_auc: float | None  # ... on its own holdout week (see drift.model_reference)
    reference_week: str | None
    served: dict[str, Any] | None  # the prediction log's ROC AUC, when it measured the batch
    rate: float  # the batch's positive rate
    reference_rate: float | None  # the reference's positive rate
    snapshot: Any = None  # Evidently's snapshot, once the data signal ran (drift.html)


@dataclass(frozen=True)
class Signal:
    """One drift signal: one entry of :data:`SIGNALS`."""

    name: str
    threshold: str  # its threshold's name in mlops.config.THRESHOLDS (step "drift")
    measure: Callable[[Evidence, float], dict[str, Any]]
    description: str  # what ``value`` is (the metric's HELP, the docs)
    value: Callable[[dict[str, Any]], float | None]
    text: Callable[[dict[str, Any]], str]
    # Extra detail for the report and the demo (e.g. which columns drifted).
    detail: Callable[[dict[str, Any]], str] = field(default=lambda sig: "")


def _data(ev: Evidence, drift_share: float) -> dict[str, Any]:
    columns = drift_columns(ev.schema, list(ev.reference.columns))
    ev.snapshot, res = evidently_drift(ev.current, ev.reference, ev.schema, columns, drift_share)
    return {"fired": res["share"] >= drift_share, "share": res["share"], "threshold": drift_share,
            "drifted_columns": res["drifted_columns"], "columns": columns,
            "informational_drifted_columns": res["informational_drifted"],
            "column_scores": res["columns"]}


def _model(ev: Evidence, auc_drop: float) -> dict[str, Any]:
    """The champion's ROC AUC on the batch vs on its own holdout week. ``source`` says what it
    was measured on: ``served`` (the probabilities the prediction service logged for the batch's
    rows) or ``replayed`` (the champion scoring the batch now)."""
    served = ev.served
    base = {"roc_auc": ev.roc_auc, "reference_roc_auc": ev.reference_roc_auc,
            "reference_week": ev.reference_week, "threshold": auc_drop,
            "source": "served" if served else "replayed",
            "served_rows": served["rows_labelled"] if served else None,
            "served_versions": served["versions"] if served else None}
    if ev.roc_auc is None or ev.reference_roc_auc is None:
        return {**base, "fired": False, "drop": None,
                "note": "no champion" if ev.reference_roc_auc is None else "batch has one class"}
    drop = ev.reference_roc_auc - ev.roc_auc
    return {**base, "fired": drop >= auc_drop, "drop": drop}


def _label(ev: Evidence, label_shift: float) -> dict[str, Any]:
    base = {"rate": ev.rate, "reference_rate": ev.reference_rate, "threshold": label_shift}
    if ev.reference_rate is None:
        return {**base, "fired": False, "difference": None, "note": "no reference rate"}
    diff = ev.rate - ev.reference_rate
    return {**base, "fired": abs(diff) >= label_shift, "difference": diff}


SIGNALS: list[Signal] = [
    Signal("data", "drift_share", _data,
           "share of drifted decision columns (Evidently, batch vs the champion's training reference)",
           value=lambda s: s["share"],
           text=lambda s: f"share {s['share']:.2f}",
           detail=lambda s: f"drifted columns: {', '.join(s['drifted_columns']) or 'none'}"),
    Signal("model", "auc_drop", _model,
           "drop of the champion's ROC AUC on the batch below its ROC AUC on its holdout week",
           value=lambda s: s.get("drop"),
           text=lambda s: (f"roc_auc {s['roc_auc']:.4f} ({s.get('source', 'replayed')}) vs "
                           f"{s['reference_roc_auc']:.4f} at training, drop {s['drop']:+.4f}"),
           # The reference is the holdout week, or "validation week W" (mlops.drift.model_reference).
           detail=lambda s: "reference: " + (
               str(s["reference_week"]) if str(s.get("reference_week")).startswith("validation")
               else f"holdout week {s.get('reference_week')}")),
    Signal("label", "label_shift", _label,
           "absolute difference of the batch's positive-label rate (the flights: delayed) from the reference's",
           value=lambda s: None if s.get("difference") is None else abs(s["difference"]),
           text=lambda s: (f"positive rate {s['rate']:.3f} vs {s['reference_rate']:.3f}, "
                           f"difference {s['difference']:+.3f}")),
]


def names() -> list[str]:
    """The signals' names, in table order."""
    return [s.name for s in SIGNALS]


def by_name(name: str) -> Signal:
    """The table entry of signal ``name``."""
    for signal in SIGNALS:
        if signal.name == name:
            return signal
    raise KeyError(f"no drift signal {name!r}; signals: {names()}")


def measure(ev: Evidence, thresholds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Every signal of the table measured on ``ev`` with its threshold from ``thresholds``."""
    return {s.name: s.measure(ev, thresholds[s.threshold]) for s in SIGNALS}


def line(name: str, sig: dict[str, Any]) -> str:
    """One signal in words: ``<name>: <text> (threshold t)[ FIRED]`` or ``<name>: not measured
    (<note>)`` (the drift result's summary is these lines joined)."""
    signal = by_name(name)
    if signal.value(sig) is None:
        return f"{name}: not measured ({sig.get('note')})"
    return f"{name}: {signal.text(sig)} (threshold {sig['threshold']}){' FIRED' if sig['fired'] else ''}"


def described(name: str, sig: dict[str, Any]) -> str:
    """The measurement with its detail, without threshold and verdict (report table, demo)."""
    signal = by_name(name)
    if signal.value(sig) is None:
        return f"not measured: {sig.get('note')}"
    detail = signal.detail(sig)
    return f"{signal.text(sig)}; {detail}" if detail else signal.text(sig)


def metric_help() -> str:
    """HELP of ``mlops_drift_signal_value``: what each signal's value is."""
    return ("Value the signal compares with its threshold ("
            + "; ".join(f"{s.name}: {s.description}" for s in SIGNALS) + ").")
