"""The distribution check decides without importing Evidently (mlops.validation.driftstats):
proof that its decision is Evidently's. On genuine weeks against the reference the pipeline
would use and on drifted batches, both give the same method, score (to rounding) and verdict for
every monitored column, hence the same drifted share; with a small reference, where Evidently
uses other tests, the light path steps aside and Evidently decides."""

from __future__ import annotations

import pandas as pd
import pytest

GENUINE = ["2013-W02", "2013-W10", "2013-W27", "2013-W40", "2013-W52", "2014-W01"]


def _reference(frame: pd.DataFrame, labels: pd.Series, week: str) -> pd.DataFrame:
    weeks = sorted(labels.unique())
    before = weeks[max(0, weeks.index(week) - 4):weeks.index(week)]
    return frame[labels.isin(before)].sample(n=5000, random_state=0)


def _drifted(frame: pd.DataFrame, labels: pd.Series) -> list[tuple[str, pd.DataFrame]]:
    week = frame[labels == "2013-W20"]
    later = week.copy()
    later["sched_dep_time"] = (pd.to_numeric(later["sched_dep_time"]) + 400).clip(upper=2359)
    later["hour"] = later["sched_dep_time"] // 100
    one_dest = week.copy()
    one_dest["dest"] = "ATL"
    return [("ewr_only", week[week["origin"] == "EWR"]), ("three_hours_later", later),
            ("one_destination", one_dest), ("few_carriers", week[week["carrier"].isin(["UA", "B6"])])]


def _both(current: pd.DataFrame, reference: pd.DataFrame):
    from mlops.config import load_schema
    from mlops.data import make_features
    from mlops.column_drift import drift_columns, evidently_drift
    from mlops.validation.driftstats import dataset_drift

    schema = load_schema()
    cur, ref = make_features(current, schema), make_features(reference, schema)
    cols = drift_columns(schema, list(cur.columns))
    light = dataset_drift(cur, ref, list(schema.categorical), cols)
    _, evidently = evidently_drift(cur, ref, schema, cols, 0.8, report_all=False)
    return light, evidently


def test_same_decision_as_evidently(source_weeks) -> None:
    frame, labels = source_weeks
    pairs = [(w, frame[labels == w], _reference(frame, labels, w)) for w in GENUINE]
    pairs += [(name, cur, _reference(frame, labels, "2013-W20"))
              for name, cur in _drifted(frame, labels)]
    drifted_somewhere = set()
    for name, current, reference in pairs:
        light, evidently = _both(current, reference)
        assert light is not None, name
        assert light["drifted_columns"] == evidently["drifted_columns"], name
        assert light["share"] == evidently["share"], name
        assert set(light["columns"]) == set(evidently["columns"]), name
        for col, mine in light["columns"].items():
            theirs = evidently["columns"][col]
            assert (mine["method"], mine["threshold"], mine["drifted"]) == (
                theirs["method"], theirs["threshold"], theirs["drifted"]), (name, col)
            assert mine["score"] == pytest.approx(theirs["score"], rel=1e-9, abs=1e-12), (name, col)
        drifted_somewhere |= set(light["drifted_columns"])
    # the comparison covers both verdicts and both kinds of test
    assert {"origin", "sched_dep_time", "dest", "carrier"} <= drifted_somewhere
    methods = {m["method"] for m in light["columns"].values()}
    assert methods == {"Jensen-Shannon distance", "Wasserstein distance (normed)"}


def test_small_reference_is_left_to_evidently(source_weeks) -> None:
    from mlops.config import load_schema
    from mlops.data import make_features
    from mlops.column_drift import drift_columns
    from mlops.validation.driftstats import dataset_drift

    frame, labels = source_weeks
    schema = load_schema()
    cur = make_features(frame[labels == "2013-W10"], schema)
    ref = make_features(frame[labels == "2013-W09"].head(800), schema)
    assert dataset_drift(cur, ref, list(schema.categorical),
                         drift_columns(schema, list(cur.columns))) is None
