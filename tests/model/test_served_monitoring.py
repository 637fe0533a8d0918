"""The monitoring math of mlops.monitoring on a real week: the shared world's champion (trained on
2013-W01..W02, held out on W03) "serves" every row of the accepted W03 batch, as the prediction
service would log them (row key, version, probability, time). Its realised ROC AUC must equal the
ROC AUC the training measured on the same holdout week; a row scored twice counts once, with its
latest score; rows without a label are served but not labelled; the score-drift check finds no
drift against the champion's own holdout scores and finds it on inverted scores. A prediction log
that cannot be read fails the monitoring and the drift check (no silent fallback)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

WEEK = "2013-W03"


@pytest.fixture()
def served_week(model_dir: Path) -> dict:
    """The champion's scores of every raw W03 row, logged as the service would."""
    from mlops import registry
    from mlops.batches import accepted_path
    from mlops.config import load_schema
    from mlops.data import make_features, read_batch
    from mlops.evaluate import load_version
    from mlops.served import row_keys
    from mlops.modeling import model_input

    schema = load_schema()
    champion = registry.get_champion()
    assert champion is not None and champion["tags"]["holdout_week"] == WEEK
    raw = read_batch(accepted_path(WEEK), schema)
    proba = load_version(champion["version"]).predict_proba(model_input(make_features(raw, schema), schema))[:, 1]
    served = pd.DataFrame({"model_version": str(champion["version"]), "row_key": row_keys(raw, schema),
                           "probability": proba,
                           "served_at": pd.Timestamp("2013-01-14T12:00:00Z")})
    return {"schema": schema, "champion": champion, "raw": raw, "served": served}


def test_realised_auc_of_what_was_served_equals_the_holdout_auc(served_week: dict) -> None:
    from mlops.monitoring import labels_of, served_auc, version_results

    raw, served, champion = served_week["raw"], served_week["served"], served_week["champion"]
    labels = labels_of(raw, served_week["schema"])
    assert len(labels) == int(raw["arr_delay"].notna().sum()) < len(raw)  # cancelled flights
    assert set(labels["label"]) == {0, 1}
    assert labels["label"].sum() == int((raw["arr_delay"] > 15).sum())
    result = version_results(served, labels, min_rows=50)
    mine = result[str(champion["version"])]
    assert mine["rows_served"] == len(raw)
    assert mine["rows_labelled"] == len(labels)
    assert mine["roc_auc"] == pytest.approx(float(champion["tags"]["holdout_roc_auc"]), abs=1e-6)  # tag: 6 digits
    combined = served_auc(served, labels, min_rows=50)
    assert combined["roc_auc"] == pytest.approx(mine["roc_auc"], abs=1e-12)
    assert combined["versions"] == [str(champion["version"])]


def test_each_version_counts_its_rows_once_with_their_latest_score(served_week: dict) -> None:
    from mlops.monitoring import labels_of, roc_auc, served_auc, version_results

    served, version = served_week["served"], str(served_week["champion"]["version"])
    labels = labels_of(served_week["raw"], served_week["schema"])
    # The first 1000 rows were scored earlier with inverted scores, then again as they are; rows
    # 2000-2999 were also served by a later version "99" whose scores are noise.
    earlier = served.iloc[:1000].assign(probability=lambda f: 1 - f["probability"],
                                        served_at=pd.Timestamp("2013-01-14T11:00:00Z"))
    noise = np.random.default_rng(0).random(1000)
    other = served.iloc[2000:3000].assign(model_version="99", probability=noise,
                                          served_at=pd.Timestamp("2013-01-14T13:00:00Z"))
    log = pd.concat([earlier, served, other], ignore_index=True).sample(frac=1, random_state=1)
    result = version_results(log, labels, min_rows=50)
    assert list(result) == [version, "99"]
    assert result[version]["rows_served"] == len(served) + 1000
    assert result[version]["rows_labelled"] == len(labels)
    assert result[version]["roc_auc"] == pytest.approx(
        float(served_week["champion"]["tags"]["holdout_roc_auc"]), abs=1e-6)
    joined = other.merge(labels, on="row_key")
    assert result["99"]["rows_served"] == 1000 and result["99"]["rows_labelled"] == len(joined)
    assert result["99"]["roc_auc"] == pytest.approx(roc_auc(joined["label"], joined["probability"]), abs=1e-12)
    # What was served, row by row, is the latest answer whichever version gave it.
    latest = pd.concat([served.drop(index=range(2000, 3000)), other]).merge(labels, on="row_key")
    assert served_auc(log, labels, min_rows=50)["roc_auc"] == pytest.approx(
        roc_auc(latest["label"], latest["probability"]), abs=1e-12)
    # Below the minimum of labelled rows no ROC AUC is claimed.
    few = version_results(served.iloc[:30], labels, min_rows=50)[version]
    assert few["roc_auc"] is None and "fewer than 50" in few["note"]
    assert served_auc(served.iloc[:30], labels, min_rows=50) is None


def test_served_score_drift_against_the_champions_holdout_scores(served_week: dict) -> None:
    from mlops.monitoring import holdout_scores, score_drift

    reference = holdout_scores(served_week["champion"], served_week["schema"])
    labelled = served_week["raw"]["arr_delay"].notna().to_numpy()
    assert len(reference) == int(labelled.sum())
    same = score_drift(served_week["served"]["probability"], reference)
    assert same["drifted"] is False
    inverted = score_drift(1 - served_week["served"]["probability"], reference)
    assert inverted["drifted"] is True and inverted["method"] == same["method"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreadable_prediction_log_fails_closed(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.drift import detect_drift
    from mlops.errors import MlopsError, PredictionLogError
    from mlops.monitoring import monitor_served

    url = f"postgresql://predictions_reader:secret@127.0.0.1:{_closed_port()}/predictions"
    with pytest.raises(PredictionLogError, match=r"predictions_reader:\*\*\*@127\.0\.0\.1.*cannot read week 2013-W03") as err:
        monitor_served(week=WEEK, db_url=url)
    assert "secret" not in str(err.value)
    assert not isinstance(err.value, MlopsError)  # retried by Airflow, never failed for good
    monkeypatch.setenv("MLOPS_PREDICTIONS_DB_URL", url)
    with pytest.raises(PredictionLogError):
        detect_drift(week=WEEK)


def test_monitor_served_cli_names_the_missing_batch_and_log(model_dir: Path, world) -> None:
    out = world.cli("monitor-served", "--week", "2013-W40", data_dir=model_dir)
    assert out.returncode == 1
    assert "2013-W40" in out.stderr and "accepted" in out.stderr
    out = world.cli("monitor-served", "--week", WEEK, data_dir=model_dir)
    assert out.returncode == 1 and "MLOPS_PREDICTIONS_DB_URL" in out.stderr
