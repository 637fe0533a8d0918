"""What the prediction service accepts in a row, from the schema (mlops.served.request_columns,
mlops_serving.rows): every refusal names the row index and the field."""

from __future__ import annotations

import pytest

from mlops.config import load_schema
from mlops.served import request_columns
from mlops_serving.rows import RowError, RowSpec, check_rows

ROW = {"year": 2013, "month": 1, "day": 14, "sched_dep_time": 830, "sched_arr_time": 1100, "carrier": "UA",
       "flight": 1545, "origin": "EWR", "dest": "IAH", "distance": 1400, "hour": 8, "minute": 30,
       "time_hour": "2013-01-14T13:00:00Z", "temp": 39.0, "dewp": 28.0, "humid": 64.4, "wind_dir": 260,
       "wind_speed": 12.7, "wind_gust": None, "precip": 0, "pressure": 1011.9, "visib": 10}
CATEGORIES = {"carrier": frozenset({"UA", "AA"}), "origin": frozenset({"EWR"}), "dest": frozenset({"IAH"})}


@pytest.fixture(scope="module")
def spec() -> RowSpec:
    return RowSpec.from_schema(load_schema())


def test_columns_known_before_departure_only() -> None:
    schema = load_schema()
    required, optional = request_columns(schema)
    assert set(required) == set(ROW) and optional == ["tailnum"]
    assert not {*schema.leaking, schema.target_column} & {*required, *optional}


def test_a_good_row_passes(spec: RowSpec) -> None:
    assert check_rows([ROW, {**ROW, "tailnum": "N14228"}], spec, CATEGORIES, 10) == [ROW, {**ROW, "tailnum": "N14228"}]


@pytest.mark.parametrize("change, field, problem", [
    ({"carrier": ...}, "carrier", "missing"),
    ({"distance": "1400"}, "distance", "wrong type"),
    ({"flight": 15.5}, "flight", "wrong type"),
    ({"hour": True}, "hour", "wrong type"),
    ({"carrier": 9}, "carrier", "wrong type"),
    ({"time_hour": "2013-13-45"}, "time_hour", "wrong type"),
    ({"dest": "XXX"}, "dest", "unknown category"),
    ({"arr_delay": 3.0}, "arr_delay", "outcome column"),
    ({"dep_time": 830.0}, "dep_time", "outcome column"),
    ({"colour": "red"}, "colour", "unknown column"),
    ({"year": None}, "year", "missing"),
])
def test_every_bad_row_is_named(spec: RowSpec, change: dict, field: str, problem: str) -> None:
    bad = {k: v for k, v in {**ROW, **change}.items() if v is not ...}
    with pytest.raises(RowError) as raised:
        check_rows([ROW, bad], spec, CATEGORIES, 10)
    assert (raised.value.index, raised.value.field) == (1, field) and problem in raised.value.problem
    assert f"row 1, field '{field}'" in str(raised.value)


def test_null_features_are_scored_as_missing_and_limits_hold(spec: RowSpec) -> None:
    assert check_rows([{**ROW, "temp": None, "dest": None}], spec, CATEGORIES, 10)
    with pytest.raises(OverflowError, match="SERVING_MAX_ROWS"):
        check_rows([ROW] * 11, spec, CATEGORIES, 10)
    for rows in ([], "rows", [5]):
        with pytest.raises(RowError):
            check_rows(rows, spec, CATEGORIES, 10)
