"""model_retraining_dag (dag.test, real MLflow registry) on the synthetic_drift data set
(MLOPS_SCHEMA=configs/synthetic_drift.yaml, its own data folder and model): the DAG maps over
the data set's own recipes, trains on its features, and deploys the candidate that is best on
the validation week, here across the abrupt drift of 2013-W14 (weeks W13-W16: validation on the tail of W15, the data
set's retraining.validation_tail; holdout W16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.dag_harness import REPO, mapped, ml_env, run_dag, task_states, xcom

MODEL = "synthetic_drift_dag_model"
SCHEMA = REPO / "configs" / "synthetic_drift.yaml"


@pytest.fixture(scope="module")
def synthetic_run(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic")
    with ml_env(root, MODEL) as data, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SCHEMA", str(SCHEMA))
        mp.delenv("MLOPS_RECIPES", raising=False)
        from mlops.config import load_recipes
        from mlops.data import replay
        from mlops.preprocess import build_training_table

        replay(from_week="2013-W13", until_week="2013-W16")
        build_training_table(accepted=data / "landing")
        dag_run = run_dag("model_retraining_dag", conf={})
        yield dag_run, list(load_recipes())


def test_retraining_dag_runs_on_the_synthetic_data_set(synthetic_run) -> None:
    from mlops import tracking
    from mlops.registry import get_champion

    dag_run, recipes = synthetic_run
    assert recipes == ["weekly", "recent_4", "recent_1", "recency_weighted"]
    assert dag_run.state == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert states["deploy_new_model"] == "success" and states["rollback_model"] == "skipped"
    fan = mapped(dag_run, "retrain_model")
    trained = [fan[i][1] for i in sorted(fan)]
    assert [t["recipe"] for t in trained] == recipes
    client = tracking.setup()
    assert {client.get_run(t["run_id"]).data.tags["schema"] for t in trained} == {SCHEMA.name}
    assert {client.get_run(t["run_id"]).data.tags["validation_tail"] for t in trained} == {"0.5"}
    assert all(t["holdout_week"] == "2013-W16" for t in trained)
    evaluation = xcom(dag_run, "evaluate_new_model")
    scores = {c["recipe"]: c["validation"]["metrics"]["roc_auc"] for c in trained}
    assert scores[evaluation["recipe"]] == max(scores.values()), scores
    # The recipe that learns from the newest week alone (the head of W15, after the drift) is the
    # best on W15's tail, clearly above the weekly one, which still holds the old concept of W13.
    assert evaluation["recipe"] == "recent_1" and max(scores.values()) >= 0.95, scores
    assert scores["weekly"] <= scores["recent_1"] - 0.05, scores
    assert evaluation["metrics"]["roc_auc"] >= 0.95
    assert get_champion()["version"] == evaluation["version"]
