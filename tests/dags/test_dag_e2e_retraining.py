"""model_retraining_dag end to end (dag.test, real MLflow registry) on the training table of
replayed weeks 1-3: `retrain_model` fans out over the recipes of configs/recipes.yaml, each
candidate is scored on the validation week (W02) before the holdout (W03), `evaluate_new_model`
keeps the best by validation score and compares it with the champion on the holdout.

A useless candidate (300 rows, shuffled labels) becomes champion only while there is none; the
candidates of every recipe on all weeks beat it and the best is deployed; a useless one again is
rolled back with the champion unchanged, and rerunning a run registers no duplicate version."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.dag_harness import clear_and_rerun, mapped, ml_env, model_versions, run_dag, task_states, xcom

MODEL = "retraining_model"
WORSE = {"max_rows": 300, "shuffle_labels": True, "recipes": ["weekly", "recent_6"]}
WORSE_AGAIN = {"train_weeks": ["2013-W01", "2013-W02"], "max_rows": 300, "shuffle_labels": True,
               "recipes": ["recency_weighted"]}
BRANCHES = ("deploy_new_model", "rollback_model")


def _recipes() -> list[str]:
    from mlops.config import load_recipes

    return list(load_recipes())


def _mapped() -> list[str]:
    """What retrain_model maps over: the flights' recipes, then the other data sets' (skipped)."""
    from mlops_airflow import recipe_names

    return recipe_names()


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
    # The conf limits the run to two recipes: the others are skipped, not failed.
    fan = mapped(weak_champion, "retrain_model")
    assert {i: s for i, (s, _) in fan.items()} == {
        i: ("success" if name in WORSE["recipes"] else "skipped") for i, name in enumerate(_mapped())}
    evaluation = xcom(weak_champion, "evaluate_new_model")
    assert [c["recipe"] for c in evaluation["candidates"]] == WORSE["recipes"]
    assert evaluation["metrics"]["roc_auc"] < 0.56  # shuffled labels: close to chance
    assert evaluation["decision"]["deploy"] is True and evaluation["champion_version"] is None
    assert get_champion()["version"] == evaluation["version"]


def test_recipes_fan_out_and_the_best_on_validation_is_deployed(weak_champion, better_run) -> None:
    from mlops.registry import get_champion, get_previous

    assert better_run.state == "success"
    states = task_states(better_run)
    states.pop("retrain_model")  # mapped: checked per recipe below
    assert states == {
        "backup_current_model": "success",
        "evaluate_new_model": "success", "compare_models": "success",
        "approve_new_model": "success",  # the gate is off: approved at once
        "deploy_new_model": "success", "rollback_model": "skipped",
    }
    # One mapped retrain_model per recipe, each a distinct candidate scored on the validation
    # week W02 (trained on W01 only) and on the holdout W03 (trained on W01-W02).
    fan = mapped(better_run, "retrain_model")
    recipes = _recipes()
    assert sorted(fan) == list(range(len(_mapped()))) and len(recipes) >= 5
    # The flights' recipes come first and all train; the other data sets' are skipped.
    assert _mapped()[:len(recipes)] == recipes
    trained = [fan[i][1] for i in range(len(recipes))]
    assert [t["recipe"] for t in trained] == recipes
    assert [fan[i][0] for i in sorted(fan)] == ["success"] * len(recipes) + ["skipped"] * (len(fan) - len(recipes))
    assert len({t["fingerprint"] for t in trained}) == len(recipes)
    assert len({t["run_id"] for t in trained}) == len(recipes)
    for t in trained:
        assert t["holdout_week"] == "2013-W03" and t["version"] is None
        assert t["validation"]["week"] == "2013-W02" and t["validation"]["train_weeks"] == ["2013-W01"]
        assert 0.55 < t["validation"]["metrics"]["roc_auc"] < 0.9
    best = max(trained, key=lambda t: t["validation"]["metrics"]["roc_auc"])

    evaluation = xcom(better_run, "evaluate_new_model")
    weak = xcom(weak_champion, "evaluate_new_model")["version"]
    assert evaluation["recipe"] == best["recipe"]  # chosen on validation, not on the holdout
    assert [c["recipe"] for c in evaluation["candidates"]] == recipes
    assert evaluation["champion_version"] == weak and evaluation["holdout_week"] == "2013-W03"
    decision = evaluation["decision"]
    assert decision["deploy"] is True and decision["gain"] >= decision["margin"]
    assert evaluation["metrics"]["roc_auc"] > evaluation["champion_metrics"]["roc_auc"]
    assert xcom(better_run, "backup_current_model")["champion_version"] == weak
    assert xcom(better_run, "deploy_new_model")["deployed"] is True
    champion = get_champion()
    assert champion["version"] == evaluation["version"] and champion["tags"]["recipe"] == best["recipe"]
    assert champion["tags"]["validation_week"] == "2013-W02"
    assert get_previous()["version"] == weak


def test_worse_candidate_is_rolled_back_and_champion_unchanged(better_run, worse_run) -> None:
    from mlops import config, tracking
    from mlops.registry import get_champion

    champion = xcom(better_run, "evaluate_new_model")["version"]
    assert worse_run.state == "success"
    states = task_states(worse_run)
    assert states["rollback_model"] == "success" and states["deploy_new_model"] == "skipped"
    evaluation = xcom(worse_run, "evaluate_new_model")
    assert evaluation["recipe"] == "recency_weighted"
    decision = evaluation["decision"]
    assert decision["deploy"] is False and evaluation["champion_version"] == champion
    assert "does not beat the margin" in decision["reason"]
    rollback = xcom(worse_run, "rollback_model")
    assert rollback["reason"] == decision["reason"]
    assert rollback["champion_version"] == champion
    assert get_champion()["version"] == champion  # unchanged
    tags = tracking.setup().get_model_version(config.model_name(), evaluation["version"]).tags
    assert tags["rejected_reason"] == decision["reason"]


def test_rerun_of_a_retraining_registers_no_duplicate(better_run, worse_run) -> None:
    """Clearing the fan-out and the evaluation of a finished run: every recipe reuses its logged
    run, the chosen candidate its version; no version is added, no alias moves."""
    from mlops.registry import get_champion

    versions = model_versions(MODEL)
    champion = get_champion()["version"]
    before = xcom(worse_run, "evaluate_new_model")
    states = clear_and_rerun(worse_run, ["retrain_model", "evaluate_new_model"])
    assert states["evaluate_new_model"] == "success"
    assert xcom(worse_run, "evaluate_new_model")["version"] == before["version"]
    assert all(c["reused"] for c in xcom(worse_run, "evaluate_new_model")["candidates"])
    assert model_versions(MODEL) == versions
    assert get_champion()["version"] == champion


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
