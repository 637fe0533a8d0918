"""Training registers versions idempotently; deploy only when better by the margin; backup and
rollback move aliases once and record why."""

from __future__ import annotations

from pathlib import Path

import pytest


# Explicit weeks: other tests may add accepted weeks to the shared training table.
WEEKS = {"train_weeks": ["2013-W01", "2013-W02"], "holdout_week": "2013-W03"}


def _versions() -> list[str]:
    from mlflow.tracking import MlflowClient

    from mlops import config, tracking

    tracking.setup()
    return sorted(mv.version for mv in MlflowClient().search_model_versions(
        f"name = '{config.model_name()}'"))


def _aliases() -> tuple[str | None, str | None]:
    from mlops.registry import get_champion, get_previous

    champ, prev = get_champion(), get_previous()
    return (champ and champ["version"], prev and prev["version"])


def test_lifecycle(model_dir: Path) -> None:
    from mlops.promotion import deploy, evaluate_candidate
    from mlops.registry import backup_champion, rollback
    from mlops.train import train_model

    champion, _ = _aliases()
    assert champion is not None

    # Retraining on the same data and parameters returns the registered version.
    before = _versions()
    again = train_model(**WEEKS, max_rows=4000)
    assert again["reused"] is True and again["version"] == champion
    assert _versions() == before

    # A new parameter (row cap) is a new version; its rerun is not.
    new = train_model(**WEEKS, max_rows=2500)
    assert new["reused"] is False and new["version"] not in before
    assert set(new) >= {"run_id", "version", "recipe", "metrics", "train_weeks", "holdout_week"}
    assert new["train_weeks"] == ["2013-W01", "2013-W02"] and new["holdout_week"] == "2013-W03"
    assert train_model(**WEEKS, max_rows=2500)["version"] == new["version"]
    assert len(_versions()) == len(before) + 1

    # A useless model (shuffled labels) does not beat the champion by the margin.
    bad = train_model(**WEEKS, max_rows=4000, shuffle_labels=True)
    ev = evaluate_candidate(bad["version"])
    assert set(ev["metrics"]) >= {"roc_auc", "pr_auc", "f1", "brier"}
    assert ev["champion_version"] == champion and ev["decision"]["deploy"] is False
    assert ev["metrics"]["roc_auc"] < ev["champion_metrics"]["roc_auc"]
    assert ev["decision"]["gain"] < ev["decision"]["margin"]
    assert f"v{bad['version']}" in ev["decision"]["reason"] and "does not beat" in ev["decision"]["reason"]
    refused = deploy(bad["version"], evaluation=ev)
    assert refused["deployed"] is False and _aliases()[0] == champion
    assert refused["reason"] == ev["decision"]["reason"]  # the decision travelled with the result

    # Forced through with a negative margin: champion moves, the old one is kept as previous.
    forced = deploy(bad["version"], deploy_margin=-1.0)
    assert forced["deployed"] is True
    assert _aliases() == (bad["version"], champion)
    assert deploy(bad["version"], deploy_margin=-1.0)["reason"] == (
        f"v{bad['version']} is already the champion")
    assert backup_champion()["backed_up"] is True  # previous -> the current champion
    assert backup_champion()["backed_up"] is False  # second time: nothing moves
    assert _aliases() == (bad["version"], bad["version"])
    # previous == champion: a rollback has nowhere to go and moves nothing
    assert rollback("no-op")["rolled_back"] is False


def test_rollback_without_champion_or_previous_is_an_error(model_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.errors import RegistryError
    from mlops.registry import backup_champion, get_champion, rollback

    monkeypatch.setenv("MLOPS_MODEL_NAME", "model_never_trained")
    assert get_champion() is None
    assert backup_champion()["backed_up"] is False
    with pytest.raises(RegistryError, match="no champion"):
        rollback("nothing deployed")


def test_rollback_records_reason_and_is_idempotent(model_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    from mlops import config
    from mlops.promotion import deploy
    from mlops.registry import rollback
    from mlops.train import train_model

    good = train_model(**WEEKS, max_rows=3500)
    deploy(good["version"], deploy_margin=-1.0)
    bad = train_model(**WEEKS, max_rows=3500, shuffle_labels=True)
    moved = deploy(bad["version"], deploy_margin=-1.0)
    assert moved["deployed"] and _aliases() == (bad["version"], good["version"])

    out = rollback("shuffled labels shipped by mistake")
    assert out == {"rolled_back": True, "champion_version": good["version"],
                   "demoted_version": bad["version"],
                   "reason": "shuffled labels shipped by mistake"}
    assert _aliases() == (good["version"], good["version"])
    tags = MlflowClient().get_model_version(config.model_name(), bad["version"]).tags
    assert tags["rolled_back"] == "shuffled labels shipped by mistake"
    again = rollback("again")
    assert again["rolled_back"] is False and _aliases()[0] == good["version"]
    # A rolled-back version is never redeployed, even with a forcing margin.
    assert deploy(bad["version"], deploy_margin=-1.0)["deployed"] is False
    assert _aliases()[0] == good["version"]

    # A retrained candidate that lost its comparison: tagged with why, champion untouched.
    loser = train_model(**WEEKS, max_rows=3000, shuffle_labels=True)
    kept = rollback("lost on the holdout week", candidate=loser["version"])
    assert kept["rolled_back"] is False and kept["champion_version"] == good["version"]
    assert _aliases()[0] == good["version"]
    loser_tags = MlflowClient().get_model_version(config.model_name(), loser["version"]).tags
    assert loser_tags["rejected_reason"] == "lost on the holdout week"
    # The candidate is the champion itself (same data, same version): nothing moves or is tagged.
    same = rollback("identical model", candidate=good["version"])
    assert same["rolled_back"] is False and _aliases()[0] == good["version"]
    good_tags = MlflowClient().get_model_version(config.model_name(), good["version"]).tags
    assert "rejected_reason" not in good_tags
