"""``mlops demo``: the whole lifecycle locally, without Airflow."""

from __future__ import annotations

import sys
import time
from typing import Any

from mlops import config
from mlops.errors import BatchValidationError
from mlops.util import to_jsonable, week_of


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def run_demo(until_week: str = "2013-W10", from_week: str | None = None) -> dict[str, Any]:
    """Replay weeks, validate+accept each new batch, preprocess (DVC), train, evaluate, check
    drift, deploy; return a summary with the champion and its metrics."""
    from mlops.data import replay
    from mlops.drift import detect_drift
    from mlops.evaluate import evaluate_model
    from mlops.ingest import mark_processed, new_batches
    from mlops.preprocess import run_preprocess
    from mlops.registry import deploy, get_champion
    from mlops.train import train_model
    from mlops.validate import accept_batch, validate_batch

    t0 = time.perf_counter()
    _say(f"data folder {config.data_dir()}; MLflow {config.tracking_uri()}")
    rep = replay(until_week=until_week, from_week=from_week)
    _say(f"replayed {len(rep['written'])} new week(s) into {rep['landing_dir']}")
    accepted, rejected = [], []
    for path in new_batches():
        week = week_of(path)
        try:
            res = validate_batch(path)
            accept_batch(path)
            accepted.append(week)
            _say(f"{week}: passed ({res['seconds']} s), accepted")
        except BatchValidationError as exc:
            rejected.append({"week": week, "error": str(exc)})
            _say(f"{week}: REJECTED: {exc}")
        mark_processed([week])
    pre = run_preprocess()
    _say(f"training table: {pre['rows']} rows, weeks {pre['weeks'][0]}..{pre['weeks'][-1]}")
    trained = train_model()
    _say(f"model version {trained['model_version']} (reused={trained['reused']}), holdout "
         f"{trained['holdout_week']} roc_auc={trained['metrics']['roc_auc']:.4f}")
    evaluation = evaluate_model(trained["model_version"])
    drift = detect_drift()
    _say(f"drift of {drift['batch']}: share {drift['drift_share']:.2f} "
         f"(threshold {drift['threshold']}) detected={drift['drift_detected']}")
    deployed = deploy(trained["model_version"], evaluation=evaluation)
    _say(f"deploy: {deployed['deployed']} ({deployed['reason']})")
    champion = get_champion()
    summary = {
        "data_dir": config.data_dir(), "tracking_uri": config.tracking_uri(),
        "weeks_replayed": rep["weeks"], "accepted": accepted, "rejected": rejected,
        "training_table": pre, "trained": trained, "evaluation": evaluation, "drift": drift,
        "deploy": deployed,
        "champion": {"version": champion["version"] if champion else None,
                     "holdout_week": evaluation["holdout_week"] if champion else None,
                     "metrics": (evaluation["metrics"] if champion and
                                 champion["version"] == evaluation["version"]
                                 else evaluation.get("champion_metrics")),
                     "model_uri": champion["model_uri"] if champion else None},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return to_jsonable(summary)
