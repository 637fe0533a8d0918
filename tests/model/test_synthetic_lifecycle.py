"""The lifecycle on the synthetic_drift data set (configs/synthetic_drift.yaml): its own data
folder, model name and MLflow store, the functions the DAG tasks call, week by week around
the abrupt drift of 2013-W14. The weekly model is trained and registered; the drift check is
quiet on the weeks before the drift and fires on the drift week (measured by the real
detector against the real champion); the drift-triggered retraining (every recipe of the data
set, the best on the tail of its validation week, compared with the champion on the holdout)
chooses a recipe other than the weekly one and deploys it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlops.config import REPO_ROOT

SCHEMA = REPO_ROOT / "configs" / "synthetic_drift.yaml"
MODEL = "synthetic_drift_classifier"
DRIFT_WEEK = "2013-W14"


def arrive(week: str) -> None:
    """Replay, validate (every check) and accept one week, as data_validation_dag does."""
    from mlops.batches import mark_processed
    from mlops.data import replay
    from mlops.validate import accept_batch, validate_batch

    replay(from_week=week, until_week=week)
    assert validate_batch(week)["status"] == "passed"
    accept_batch(week)
    mark_processed([week])


def retrain() -> dict[str, Any]:
    """model_retraining_dag's tasks in order (benchmarks/lifecycle.py does the same)."""
    from mlops.config import load_recipes
    from mlops.promotion import deploy, evaluate_candidate, select_best
    from mlops.registry import backup_champion, rollback
    from mlops.train import register_candidate, train_model

    backup_champion()
    candidates = [train_model(recipe=name, validate=True, register=False)
                  for name in load_recipes()]
    best = register_candidate(select_best(candidates))
    evaluation = evaluate_candidate(best["version"], holdout_week=best["holdout_week"])
    if evaluation["decision"]["deploy"] and deploy(best["version"], evaluation=evaluation)["deployed"]:
        return {"outcome": "deploy", "best": best, "evaluation": evaluation}
    rollback(evaluation["decision"]["reason"], candidate=best["version"])
    return {"outcome": "rollback", "best": best, "evaluation": evaluation}


@pytest.fixture()
def synthetic(world: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = world.fresh_data_dir(tmp_path, monkeypatch)
    monkeypatch.setenv("MLOPS_SCHEMA", str(SCHEMA))
    monkeypatch.setenv("MLOPS_MODEL_NAME", MODEL)
    monkeypatch.delenv("MLOPS_RECIPES", raising=False)
    return data


def test_drift_fires_on_the_abrupt_week_and_a_retraining_deploys(synthetic: Path) -> None:
    from mlops.config import load_recipes, model_name, recipes_path, threshold, tracking_uri
    from mlops.drift import detect_drift
    from mlops.evaluate import score_version, week_rows
    from mlops.preprocess import run_preprocess
    from mlops.promotion import deploy, evaluate_candidate
    from mlops.registry import champion_version
    from mlops.train import train_model

    assert model_name() == MODEL and str(synthetic) in tracking_uri().replace("-mlflow", "")
    assert recipes_path() == SCHEMA and list(load_recipes())[0] == "weekly"

    # The first pipeline run: W08..W10 trained, W11 held out, registered and deployed.
    for week in ("2013-W08", "2013-W09", "2013-W10", "2013-W11"):
        arrive(week)
    run_preprocess()
    first = train_model()
    assert first["version"] is not None and first["holdout_week"] == "2013-W11"
    assert first["metrics"]["roc_auc"] >= 0.95
    assert evaluate_candidate(first["version"], holdout_week="2013-W11")["decision"]["deploy"]
    assert deploy(first["version"])["deployed"]
    from mlops import tracking

    assert tracking.setup().get_run(first["run_id"]).data.tags["schema"] == SCHEMA.name

    # Quiet before the drift, fired on it: the champion's ROC AUC collapses on the new concept.
    auc_drop = threshold("auc_drop")
    for week in ("2013-W12", "2013-W13", DRIFT_WEEK):
        arrive(week)
        drift = detect_drift(week=week)
        model = drift["signals"]["model"]
        if week < DRIFT_WEEK:
            assert drift["fired"] == [], drift["summary"]
            assert model["drop"] < auc_drop
        else:
            assert "model" in drift["fired"], drift["summary"]
            assert model["drop"] >= auc_drop and model["roc_auc"] < 0.7
    assert champion_version() == first["version"]

    # The retraining the drift triggers. At the drift week itself every candidate would be fitted
    # on the old concept only (the drift week is the holdout), so it is left out here to keep
    # the test short; one week later the newest training week holds the new concept.
    week = "2013-W15"
    arrive(week)
    assert "model" in detect_drift(week=week)["fired"]
    run_preprocess()
    outcome = retrain()
    assert outcome["outcome"] == "deploy", outcome["evaluation"]["decision"]
    # The recipes are validated on the tail of W14 (retraining.validation_tail), each fitted on
    # the rows before it: only a recipe that learns from W14's head alone knows the new concept,
    # and it wins (on the whole of W14, predicted from the weeks before it, every recipe would
    # tie on the old concept and the weekly one would be chosen).
    best = outcome["best"]
    assert best["recipe"] != "weekly", best["validation"]
    assert best["validation"]["week"] == DRIFT_WEEK and best["validation"]["tail"] == 0.5
    assert best["validation"]["metrics"]["roc_auc"] >= 0.9, best["validation"]
    champion = champion_version()
    assert champion == outcome["best"]["version"] != first["version"]
    # Measured apart from the deploy decision: the new champion is far better on the new concept.
    new = score_version(champion, week_rows(week))["roc_auc"]
    old = score_version(first["version"], week_rows(week))["roc_auc"]
    assert new >= old + 0.1, (new, old, outcome["best"]["recipe"])
