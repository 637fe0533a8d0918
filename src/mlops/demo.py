"""``mlops demo``: the whole lifecycle locally, without Airflow.

Two rounds, like two scheduled runs of the DAGs: first the weeks up to ``first_until`` arrive
(validated, accepted, preprocessed with DVC, a model trained, evaluated and deployed as the first
champion); then the following weeks up to ``until_week`` arrive, a new model is trained on them,
compared with the champion on the newest week, the newest batch is checked for drift against the
champion's training reference, and the new model is deployed only if it wins by the margin.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mlops import config
from mlops.errors import BatchValidationError
from mlops.util import to_jsonable, week_of


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _round(until: str, from_week: str | None) -> dict[str, Any]:
    from mlops.batches import mark_processed, new_batches
    from mlops.data import replay
    from mlops.drift import detect_drift
    from mlops.preprocess import run_preprocess
    from mlops.promotion import deploy, evaluate_candidate
    from mlops.train import train_model
    from mlops.validate import accept_batch, validate_batch

    rep = replay(until_week=until, from_week=from_week)
    _say(f"replayed {len(rep['written'])} new week(s) up to {until} into {rep['landing_dir']}")
    accepted, rejected = [], []
    for path in new_batches():
        week = week_of(path)
        try:
            res = validate_batch(path)
            accept_batch(path)
            accepted.append(week)
            _say(f"{week}: passed validation ({res['seconds']} s), accepted")
        except BatchValidationError as exc:
            rejected.append({"week": week, "error": str(exc)})
            _say(f"{week}: REJECTED: {exc}")
        mark_processed([week])
    pre = run_preprocess()
    _say(f"DVC preprocess (stage ran: {pre['stage_ran']}): {pre['rows']} rows, weeks "
         f"{pre['weeks'][0]}..{pre['weeks'][-1]}")
    trained = train_model()
    _say(f"model version {trained['version']} (recipe {trained['recipe']}, reused="
         f"{trained['reused']}): holdout {trained['holdout_week']} "
         f"roc_auc={trained['metrics']['roc_auc']:.4f}")
    evaluation = evaluate_candidate(trained["version"])
    _say(f"decision: {evaluation['decision']['reason']}")
    drift = detect_drift()
    _say(f"drift of {drift['week']} vs {drift['reference']}: {drift['summary']}; fired: "
         f"{drift['fired'] or 'none'}")
    deployed = deploy(trained["version"], evaluation=evaluation)
    _say(f"deploy v{trained['version']}: {deployed['deployed']} ({deployed['reason']})")
    return {"until": until, "accepted": accepted, "rejected": rejected, "training_table": pre,
            "trained": trained, "evaluation": evaluation, "drift": drift, "deploy": deployed}


def run_demo(until_week: str = "2013-W10", first_until: str | None = "2013-W08",
             from_week: str | None = None) -> dict[str, Any]:
    """Run the lifecycle in one or two rounds; return a summary with the champion's metrics."""
    from mlops.evaluate import evaluate_model
    from mlops.registry import get_champion, get_previous

    t0 = time.perf_counter()
    _say(f"data folder {config.data_dir()}; MLflow {config.tracking_uri()}")
    stops = [w for w in (first_until, until_week) if w and w <= until_week]
    rounds = [_round(stop, from_week) for stop in dict.fromkeys(stops)]
    champion = get_champion()
    previous = get_previous()
    champ_eval = evaluate_model(champion["version"]) if champion else None
    if champ_eval:
        m = champ_eval["metrics"]
        _say(f"champion v{champion['version']} on {champ_eval['holdout_week']}: roc_auc "
             f"{m['roc_auc']:.4f} pr_auc {m['pr_auc']:.4f} f1 {m['f1']:.4f} brier {m['brier']:.4f}")
    return to_jsonable({
        "data_dir": config.data_dir(), "tracking_uri": config.tracking_uri(),
        "model_name": config.model_name(), "rounds": rounds,
        "champion": {"version": champion["version"] if champion else None,
                     "previous_version": previous["version"] if previous else None,
                     "model_uri": champion["model_uri"] if champion else None,
                     "holdout_week": champ_eval["holdout_week"] if champ_eval else None,
                     "metrics": champ_eval["metrics"] if champ_eval else None},
        "seconds": round(time.perf_counter() - t0, 1),
    })
