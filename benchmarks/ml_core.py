"""Benchmark of the ML core; prints ONE JSON object.

Keys: auc_w27 (train 2013-W01..W26, test W27), baseline_auc_w27 (historical delay rate per
carrier and scheduled hour), rolling (next-week check on a few weeks: model vs baseline),
fit_seconds_w1_44 (fit on W01..W44), peak_rss_mb, validate_seconds (one genuine weekly batch,
every check, warm process; target <= 1.5 s), validate_cold_seconds (the same as a fresh
`mlops validate` command; target <= 4 s), validate_cold_html_seconds (with --html: Evidently's
report written too), their *_cpu_seconds, and the context (threads, load average, rows).
validate_100mb_peak_ratio: the peak memory one validation adds to its process (over the process
after its imports) on a 100 MB batch, as a multiple of the file's size (target <= 3), with
validate_100mb_file_mb, validate_100mb_peak_mb and validate_100mb_seconds.

Run: .venv/bin/python benchmarks/ml_core.py [--rolling 2013-W28,2013-W29,2013-W30] [--only validate|memory]
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
    ap.add_argument("--only", choices=["validate", "memory"], help="only the validation timings / peak memory")
    args = ap.parse_args()
    if args.only == "memory":
        from mlops.config import load_schema
        from mlops.data import load_source, week_labels

        schema = load_schema()
        raw = load_source(schema)
        print(json.dumps(validation_memory(raw, week_labels(raw, schema))))
        return
    if args.only == "validate":
        from mlops.config import load_schema
        from mlops.data import load_source, week_labels

        schema = load_schema()
        raw = load_source(schema)
        print(json.dumps({**validate_timing(raw, week_labels(raw, schema)),
                          "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))
        return

    from sklearn.metrics import roc_auc_score

    from mlops.config import load_schema
    from mlops.data import build_table, load_source, week_labels
    from mlops.modeling import build_pipeline, fit_threads, limited_threads, model_input

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
    out.update(validation_memory(raw, weeks))
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def validate_timing(raw: pd.DataFrame, weeks: pd.Series) -> dict[str, float]:
    """Validate genuine weekly batches in a scratch data folder with 4 accepted reference weeks:
    warm in-process (validate_seconds, target <= 1.5 s) and as cold ``mlops validate`` commands
    (validate_cold_seconds, target <= 4 s; with --html, which imports Evidently for its report)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLOPS_", "AIRFLOW__METRICS__"))}
        env["MLOPS_DATA_DIR"] = tmp
        os.environ.update(MLOPS_DATA_DIR=tmp)
        for key in [k for k in os.environ if k.startswith("MLOPS_") and k != "MLOPS_DATA_DIR"]:
            os.environ.pop(key)
        from mlops.validate import accept_batch, validate_batch

        landing = Path(tmp) / "landing"
        landing.mkdir()
        for w in ("2013-W20", "2013-W21", "2013-W22", "2013-W23", "2013-W24", "2013-W25",
                  "2013-W26", "2013-W27"):
            raw[weeks == w].to_csv(landing / f"{w}.csv", index=False)
        for w in ("2013-W20", "2013-W21", "2013-W22", "2013-W23"):
            validate_batch(landing / f"{w}.csv")
            accept_batch(landing / f"{w}.csv")
        t0 = time.perf_counter()
        first = validate_batch(landing / "2013-W24.csv")
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = validate_batch(landing / "2013-W25.csv")
        secs = time.perf_counter() - t0
        assert first["status"] == res["status"] == "passed"
        mlops = str(Path(sys.executable).with_name("mlops"))
        cold: dict[str, float] = {}
        for key, week, extra in (("validate_cold", "2013-W26", []),
                                 ("validate_cold_html", "2013-W27", ["--html"])):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([mlops, "validate", str(landing / f"{week}.csv"), *extra],
                                  env=env, capture_output=True, text=True, cwd=tmp)
            cold[f"{key}_seconds"] = round(time.perf_counter() - t0, 2)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cold[f"{key}_cpu_seconds"] = round(after.ru_utime + after.ru_stime
                                               - before.ru_utime - before.ru_stime, 2)
            assert proc.returncode == 0, proc.stderr
        return {"validate_seconds": round(secs, 2),
                "validate_first_call_seconds": round(first_s, 2),
                "validate_rows": int(res["rows"]), **cold}


# Run in a fresh process: its RSS after the imports is the base, ru_maxrss the peak.
_MEMORY_PROBE = """
import json, os, resource, sys, time
from mlops.errors import BatchValidationError
from mlops.validate import validate_batch
import pandas, numpy, sklearn  # noqa: F401 (loaded before the base is taken)
base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
t0 = time.perf_counter()
try:
    status = validate_batch(sys.argv[1], max_batch_bytes=float(sys.argv[2]))["status"]
except BatchValidationError as exc:
    status = "failed: " + exc.check
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "seconds": time.perf_counter() - t0, "status": status}))
"""


def validation_memory(raw: pd.DataFrame, weeks: pd.Series, target_mb: int = 100) -> dict[str, object]:
    """Peak memory of one validation of a ``target_mb`` MB batch (genuine rows of one week,
    repeated: every check up to the duplicate checks runs on it), in a fresh process."""
    import subprocess

    week = raw[weeks == "2013-W30"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "landing" / "2013-W30.csv"
        path.parent.mkdir()
        one = week.to_csv(index=False)
        copies = target_mb * 10**6 // len(one) + 1
        pd.concat([week] * copies, ignore_index=True).to_csv(path, index=False)
        size = path.stat().st_size
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        env["MLOPS_DATA_DIR"] = str(Path(tmp) / "data")
        proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(2 * size)], env=env,
                              capture_output=True, text=True, cwd=tmp)
        assert proc.returncode == 0, proc.stderr
        probe = json.loads(proc.stdout.strip().splitlines()[-1])
    added = probe["peak"] - probe["base"]
    return {"validate_100mb_file_mb": round(size / 2**20, 1), "validate_100mb_peak_mb": round(added / 2**20, 1),
            "validate_100mb_peak_ratio": round(added / size, 2), "validate_100mb_seconds": round(probe["seconds"], 1),
            "validate_100mb_status": probe["status"]}


if __name__ == "__main__":
    sys.exit(main())
