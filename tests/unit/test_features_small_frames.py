"""The feature code gives a request's few rows exactly what it gives them inside a whole batch
(the prediction service scores one row, or the rows of a few requests, at a time)."""

from __future__ import annotations

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal

from mlops import data
from mlops.config import load_schema
from mlops.data import _source_with_weeks, make_features, week_labels
from mlops.serve_replay import request_bodies
from mlops.modeling import model_input
from mlops_serving.rows import RowSpec, frame


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    """A genuine week's raw rows, a few with a time that is missing or does not parse."""
    schema = load_schema()
    source, weeks = _source_with_weeks(schema)
    rows = source[weeks == "2013-W05"].copy()
    rows[schema.time_column] = rows[schema.time_column].astype(object)
    rows.iloc[3, rows.columns.get_loc(schema.time_column)] = None
    rows.iloc[5, rows.columns.get_loc(schema.time_column)] = "not a time"
    return rows


def test_week_labels_are_the_same_for_few_rows_and_many(week: pd.DataFrame, monkeypatch) -> None:
    schema = load_schema()
    many = week_labels(week, schema)
    assert len(week) > data._FEW_ROWS and many.iloc[3] == many.iloc[5] == "<NA>-W<NA>"
    monkeypatch.setattr(data, "_FEW_ROWS", len(week))
    assert_series_equal(week_labels(week, schema), many, check_exact=True)
    few = pd.concat([week_labels(week.iloc[i:i + 3], schema) for i in range(0, 60, 3)])
    assert_series_equal(few, many.iloc[:60], check_exact=True)


def test_a_request_row_gets_the_features_of_its_batch_row(week: pd.DataFrame) -> None:
    schema = load_schema()
    spec = RowSpec.from_schema(schema)
    rows = week.drop(index=week.index[[3, 5]])
    body = request_bodies(rows.iloc[:40], chunk=40)[0]["rows"]
    whole = model_input(make_features(frame(body, spec), schema), schema)
    for i in range(0, 40, 3):
        alone = model_input(make_features(frame(body[i:i + 1], spec), schema), schema)
        assert_frame_equal(alone.reset_index(drop=True), whole.iloc[[i]].reset_index(drop=True), check_exact=True)
