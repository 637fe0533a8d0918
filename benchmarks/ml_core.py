"""Benchmark of the ML core; prints ONE JSON object.

Keys: auc_w27 (train 2013-W01..W26, test W27), baseline_auc_w27 (historical delay rate per
carrier and scheduled hour), rolling (next-week check on a few weeks: model vs baseline),
fit_seconds_w1_44 (fit on W01..W44), peak_rss_mb, validate_seconds (one weekly batch, every
check, warm process) and the context (threads, load average, rows).

Run: .venv/bin/python benchmarks/ml_core.py [--rolling 2013-W28,2013-W29,2013-W30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def baseline_scores(train: pd.DataFrame, test: pd.DataFrame, target: str) -> np.ndarray:
    """Historical delay rate per (carrier, hour), shrunk towards the carrier's and global rate."""
    prior = train[target].mean()
    by_carrier = train.groupby("carrier")[target].agg(["sum", "count"])
    carrier_rate = (by_carrier["sum"] + 20 * prior) / (by_carrier["count"] + 20)
    grp = train.groupby(["carrier", "hour"])[target].agg(["sum", "count"]).reset_index()
    grp["carrier_rate"] = grp["carrier"].map(carrier_rate)
    grp["rate"] = (grp["sum"] + 20 * grp["carrier_rate"]) / (grp["count"] + 20)
    merged = test[["carrier", "hour"]].merge(grp[["carrier", "hour", "rate"]],
                                             on=["carrier", "hour"], how="left")
    fallback = test["carrier"].map(carrier_rate).fillna(prior).to_numpy()
    return merged["rate"].fillna(pd.Series(fallback)).to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rolling", default="2013-W28,2013-W29,2013-W30")
    args = ap.parse_args()

    from sklearn.metrics import roc_auc_score

    from mlops.config import load_schema
    from mlops.data import build_table, load_source, week_labels
    from mlops.train import build_pipeline, fit_threads, limited_threads, model_input

    schema = load_schema()
    target = schema.target_name
    raw = load_source(schema)
    weeks = week_labels(raw, schema)
    table = build_table([(w, raw[weeks == w]) for w in sorted(weeks.unique())], schema)
    x_all = model_input(table, schema)
    y_all = table[target].to_numpy()
    wk = table["week"].to_numpy()
    out: dict[str, object] = {"rows": int(len(table)), "fit_threads": fit_threads(),
                              "load_avg_1m": round(os.getloadavg()[0], 2),
                              "cpus": os.cpu_count()}

    def fit_eval(train_mask: np.ndarray, test_mask: np.ndarray) -> tuple[float, float, float]:
        pipe = build_pipeline(schema, None, x_all[train_mask])
        t0 = time.perf_counter()
        with limited_threads():
            pipe.fit(x_all[train_mask], y_all[train_mask])
            secs = time.perf_counter() - t0
            proba = pipe.predict_proba(x_all[test_mask])[:, 1]
        auc = roc_auc_score(y_all[test_mask], proba)
        base = roc_auc_score(y_all[test_mask],
                             baseline_scores(table[train_mask], table[test_mask], target))
        return float(auc), float(base), secs

    auc, base, _ = fit_eval(wk <= "2013-W26", wk == "2013-W27")
    out["auc_w27"], out["baseline_auc_w27"] = round(auc, 4), round(base, 4)

    rolling = []
    for week in [w.strip() for w in args.rolling.split(",") if w.strip()]:
        a, b, _ = fit_eval(wk < week, wk == week)
        rolling.append({"week": week, "auc": round(a, 4), "baseline_auc": round(b, 4),
                        "margin": round(a - b, 4)})
    out["rolling"] = rolling
    out["rolling_min_margin"] = min(r["margin"] for r in rolling) if rolling else None

    mask44 = wk <= "2013-W44"
    pipe = build_pipeline(schema, None, x_all[mask44])
    t0 = time.perf_counter()
    with limited_threads():
        pipe.fit(x_all[mask44], y_all[mask44])
    out["fit_seconds_w1_44"] = round(time.perf_counter() - t0, 2)
    out["fit_rows_w1_44"] = int(mask44.sum())

    out.update(validate_timing(raw, weeks))
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def validate_timing(raw: pd.DataFrame, weeks: pd.Series) -> dict[str, float]:
    """Validate weekly batches in a scratch data folder with 4 accepted reference weeks."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLOPS_DATA_DIR"] = tmp
        os.environ.pop("MLOPS_STATSD_HOST", None)
        from mlops.validate import accept_batch, validate_batch

        landing = Path(tmp) / "landing"
        landing.mkdir()
        for w in ("2013-W20", "2013-W21", "2013-W22", "2013-W23", "2013-W24", "2013-W25"):
            raw[weeks == w].to_csv(landing / f"{w}.csv", index=False)
        for w in ("2013-W20", "2013-W21", "2013-W22", "2013-W23"):
            validate_batch(landing / f"{w}.csv", checks=["schema", "quality", "anomalies"])
            accept_batch(landing / f"{w}.csv")
        t0 = time.perf_counter()
        first = validate_batch(landing / "2013-W24.csv")  # includes importing Evidently
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = validate_batch(landing / "2013-W25.csv")
        secs = time.perf_counter() - t0
        assert first["status"] == res["status"] == "passed"
        return {"validate_seconds": round(secs, 2), "validate_first_call_seconds": round(first_s, 2),
                "validate_rows": int(res["rows"])}


if __name__ == "__main__":
    sys.exit(main())
