"""The feature code gives a request's few rows exactly what it gives them inside a whole batch
(the prediction service scores one row, or the rows of a few requests, at a time)."""

from __future__ import annotations

import io

import numpy as np
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


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal values, dtypes and float bits (NaN included)."""
    assert_frame_equal(a, b, check_exact=True)
    for c in a.columns:
        if a[c].dtype.kind == "f":
            assert (a[c].to_numpy().view("int64") == b[c].to_numpy().view("int64")).all(), c
        else:
            assert [type(v) for v in a[c]] == [type(v) for v in b[c]], c


def test_the_few_row_path_reads_what_the_frame_path_reads(week: pd.DataFrame, monkeypatch) -> None:
    """make_features and model_input read a frame of at most _FEW_ROWS rows from its object values
    (mlops.data.few_row_columns): the same features as reading it column by column, on request
    frames (numbers, nulls, a column all null, a time that does not parse) and on a CSV batch's
    rows (string dtypes), for 1 to _FEW_ROWS rows."""
    schema = load_schema()
    spec = RowSpec.from_schema(schema)
    body = request_bodies(week.drop(index=week.index[[3, 5]]).iloc[:data._FEW_ROWS], chunk=10**6)[0]["rows"]
    body[1]["dest"], body[2]["temp"], body[4]["time_hour"], body[6]["distance"] = None, None, "not a time", 1e300
    for row in body:
        row["wind_gust"] = None  # a column all null: objects, read through pandas' own conversion
    csv = data.read_batch(io.StringIO(week.to_csv(index=False)), schema)
    frames = [frame(body[:n], spec) for n in (1, 8, 64, data._FEW_ROWS)] + [csv.iloc[:n] for n in (1, 30)]
    few = [(make_features(f, schema), model_input(make_features(f, schema), schema)) for f in frames]
    monkeypatch.setattr(data, "_FEW_ROWS", 0)  # every frame column by column
    for f, (features, inputs) in zip(frames, few):
        _same(features, make_features(f, schema))
        _same(inputs, model_input(make_features(f, schema), schema))


def test_time_parts_read_from_the_datetime_array_are_the_accessor_s(week: pd.DataFrame) -> None:
    """make_features reads each derived time part from the DatetimeArray (the .dt accessor's own
    source): the same floats as through the accessor, NaT included, for every part a schema may
    name, on many rows and on a request's few."""
    from mlops.config import _DERIVED_PARTS

    schema = load_schema()
    for rows in (week, week.iloc[:9]):
        column = rows[schema.time_column]
        local = data.local_time(column, schema)
        assert local.isna().sum() == 2  # rows 3 and 5: no time, not a time
        array = data._local_array(column, schema)
        for part in sorted(_DERIVED_PARTS):
            accessor = local.dt.isocalendar()["week"] if part == "weekofyear" else getattr(local.dt, part)
            expected = accessor.astype("float64").to_numpy()
            got = (array.isocalendar()["week"].astype("float64").to_numpy() if part == "weekofyear"
                   else np.asarray(getattr(array, part), dtype="float64"))
            assert (expected.view("int64") == got.view("int64")).all(), part
