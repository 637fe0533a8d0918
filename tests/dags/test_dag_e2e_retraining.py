"""model_retraining_dag end to end (dag.test, real MLflow registry) on the training table of
replayed weeks 1-3: candidates are built from real data through the run conf. A useless candidate
(300 rows, shuffled labels) becomes champion only while there is none; a candidate trained on all
weeks beats it and is deployed; another useless one is rolled back with the champion unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from dag_harness import clear_and_rerun, ml_env, run_dag, task_states, xcom

MODEL = "retraining_model"
WORSE = {"max_rows": 300, "shuffle_labels": True}
WORSE_AGAIN = {"train_weeks": ["2013-W01"], "max_rows": 300, "shuffle_labels": True}
BRANCHES = ("deploy_new_model", "rollback_model")


@pytest.fixture(scope="module")
def registry(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory):
    """Weeks 1-3 as a training table (the retraining DAG only needs the table), no model yet."""
    root = tmp_path_factory.mktemp("retraining")
    with ml_env(root, MODEL) as data:
        from mlops.data import replay
        from mlops.preprocess import build_training_table

        replay(until_week="2013-W03")
        build_training_table(accepted=data / "landing")
        yield data


@pytest.fixture(scope="module")
def weak_champion(registry):
    """First retraining run, with no champion yet: even a useless candidate is deployed."""
    dag_run = run_dag("model_retraining_dag", conf=WORSE)
    assert dag_run.state == "success", task_states(dag_run)
    return dag_run


@pytest.fixture(scope="module")
def better_run(weak_champion):
    return run_dag("model_retraining_dag", conf={})


@pytest.fixture(scope="module")
def worse_run(better_run):
    return run_dag("model_retraining_dag", conf=WORSE_AGAIN)


def test_without_champion_the_first_candidate_is_deployed(weak_champion) -> None:
    from mlops.registry import get_champion

    states = task_states(weak_champion)
    assert states["deploy_new_model"] == "success" and states["rollback_model"] == "skipped"
    assert xcom(weak_champion, "backup_current_model")["backed_up"] is False
    trained = xcom(weak_champion, "retrain_model")
    assert trained["train_weeks"] == ["2013-W01", "2013-W02"]
    assert trained["metrics"]["roc_auc"] < 0.56  # shuffled labels: close to chance
    assert get_champion()["version"] == trained["model_version"]


def test_better_candidate_is_deployed(weak_champion, better_run) -> None:
    from mlops.registry import get_champion, get_previous

    assert better_run.state == "success"
    states = task_states(better_run)
    assert states == {
        "backup_current_model": "success", "retrain_model": "success",
        "evaluate_new_model": "success", "compare_models": "success",
        "deploy_new_model": "success", "rollback_model": "skipped",
    }
    weak = xcom(weak_champion, "retrain_model")["model_version"]
    backup = xcom(better_run, "backup_current_model")
    assert backup["champion_version"] == weak
    evaluation = xcom(better_run, "evaluate_new_model")
    assert evaluation["beats_champion"] is True and evaluation["champion_version"] == weak
    assert evaluation["metrics"]["roc_auc"] > evaluation["champion_metrics"]["roc_auc"]
    new = xcom(better_run, "retrain_model")["model_version"]
    assert xcom(better_run, "deploy_new_model")["deployed"] is True
    assert get_champion()["version"] == new
    assert get_previous()["version"] == weak


def test_worse_candidate_is_rolled_back_and_champion_unchanged(better_run, worse_run) -> None:
    from mlops import config, tracking
    from mlops.registry import get_champion

    champion = xcom(better_run, "retrain_model")["model_version"]
    assert worse_run.state == "success"
    states = task_states(worse_run)
    assert states["rollback_model"] == "success" and states["deploy_new_model"] == "skipped"
    candidate = xcom(worse_run, "retrain_model")
    assert candidate["train_weeks"] == ["2013-W01"]
    evaluation = xcom(worse_run, "evaluate_new_model")
    assert evaluation["beats_champion"] is False and evaluation["champion_version"] == champion
    rollback = xcom(worse_run, "rollback_model")
    assert f"candidate v{candidate['model_version']}" in rollback["reason"]
    assert rollback["champion_version"] == champion
    assert get_champion()["version"] == champion  # unchanged
    tags = tracking.setup().get_model_version(config.model_name(), candidate["model_version"]).tags
    assert tags["rejected_reason"] == rollback["reason"]


def test_cleared_backup_and_deploy_rerun_to_the_same_end_state(weak_champion, better_run, worse_run) -> None:
    """Clearing backup_current_model and deploy_new_model of the deploying run after the fact:
    the backup is not overwritten with the new champion and no alias moves again."""
    from mlops.registry import get_champion, get_previous

    champion, previous = get_champion()["version"], get_previous()["version"]
    backup = xcom(better_run, "backup_current_model")

    states = clear_and_rerun(better_run, ["backup_current_model", "deploy_new_model"])

    assert states["backup_current_model"] == "success" and states["deploy_new_model"] == "success"
    assert xcom(better_run, "backup_current_model") == backup  # memoised for the run
    assert xcom(better_run, "deploy_new_model")["deployed"] is False  # already champion
    assert get_champion()["version"] == champion
    assert get_previous()["version"] == previous
