"""Column drift of a batch against its reference, as Evidently 0.7 decides it, without importing
Evidently (its import alone takes seconds; a cold ``mlops validate`` must not pay it).

Evidently's ``DataDriftPreset`` picks a test per column (``evidently.legacy.calculations.
stattests.registry._get_default_stattest``): with more than 1000 reference values (the validation
reference has thousands) a numerical column with more than 5 distinct values gets the normed
Wasserstein distance, every other column the Jensen-Shannon distance, both drifting at or above
0.1; infinities and nulls are dropped first. This module computes exactly those statistics with
numpy. For a small reference (Evidently then uses p-value tests) it answers None and the caller
runs Evidently itself. ``tests/data/test_drift_equivalence.py`` proves that the decisions are
Evidently's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: Evidently uses its p-value tests at or below this many reference values.
SMALL_REFERENCE = 1000
THRESHOLD = 0.1
WASSERSTEIN = "Wasserstein distance (normed)"
JENSEN_SHANNON = "Jensen-Shannon distance"


def _clean(series: "pd.Series") -> "pd.Series":
    import numpy as np

    return series.replace([-np.inf, np.inf], np.nan).dropna()


def wasserstein_normed(reference: Any, current: Any) -> float:
    """Wasserstein-1 distance of the two samples divided by the reference's standard deviation
    (at least 0.001), as ``scipy.stats.wasserstein_distance`` / Evidently compute it."""
    import numpy as np

    u = np.sort(np.asarray(reference, dtype="float64"))
    v = np.sort(np.asarray(current, dtype="float64"))
    both = np.sort(np.concatenate((u, v)), kind="mergesort")
    deltas = np.diff(both)
    u_cdf = np.searchsorted(u, both[:-1], "right") / u.size
    v_cdf = np.searchsorted(v, both[:-1], "right") / v.size
    distance = float(np.dot(np.abs(u_cdf - v_cdf), deltas))
    return distance / max(float(np.std(u)), 0.001)


def jensen_shannon(reference: "pd.Series", current: "pd.Series") -> float:
    """Jensen-Shannon distance (natural log) of the value shares of the two samples."""
    import numpy as np

    keys = list(set(reference.unique()) | set(current.unique()))
    ref_counts = reference.value_counts()
    cur_counts = current.value_counts()
    p = np.array([ref_counts.get(k, 0) for k in keys], dtype="float64") / len(reference)
    q = np.array([cur_counts.get(k, 0) for k in keys], dtype="float64") / len(current)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def rel_entr(x: Any, y: Any) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / y[nz])))

    return float(np.sqrt((rel_entr(p, m) + rel_entr(q, m)) / 2.0))


def column_drift(reference: "pd.Series", current: "pd.Series",
                 categorical: bool) -> dict[str, Any] | None:
    """``{method, score, threshold, drifted}`` of one column, or None when Evidently would use
    a test for small references (or a column is empty: Evidently refuses it)."""
    import pandas as pd

    ref, cur = _clean(reference), _clean(current)
    if len(ref) <= SMALL_REFERENCE or cur.empty:
        return None
    distinct = pd.concat([ref, cur]).nunique()
    if not categorical and distinct > 5:
        method, score = WASSERSTEIN, wasserstein_normed(ref, cur)
    else:
        method, score = JENSEN_SHANNON, jensen_shannon(ref, cur)
    return {"method": method, "score": score, "threshold": THRESHOLD,
            "drifted": bool(score >= THRESHOLD)}


def dataset_drift(current: "pd.DataFrame", reference: "pd.DataFrame", categorical: list[str],
                  columns: list[str]) -> dict[str, Any] | None:
    """Drift of the monitored ``columns`` in the shape of :func:`mlops.column_drift.evidently_drift`'s
    result (``share``, ``count``, ``drifted_columns``, ``columns``), or None if a column needs
    Evidently's own tests."""
    scores: dict[str, dict[str, Any]] = {}
    for name in columns:
        is_cat = name in categorical
        cur = current[name].astype("object") if is_cat else current[name].astype("float64")
        ref = reference[name].astype("object") if is_cat else reference[name].astype("float64")
        result = column_drift(ref, cur, is_cat)
        if result is None:
            return None
        scores[name] = result
    drifted = sorted(c for c, r in scores.items() if r["drifted"])
    return {"share": len(drifted) / len(columns) if columns else 0.0, "count": len(drifted),
            "drifted_columns": drifted, "informational_drifted": [], "columns": scores}
